"""The daily HTML report renders in a real browser: headless Chromium takes a screenshot of a
report built from hand-written summary frames, and the picture must not be blank."""
import datetime as dt

import pandas as pd
import pytest

from reporting import daily_report

DAY = dt.date(2026, 1, 14)


def summary_frames(labeled=True):
    days = [DAY - dt.timedelta(days=i) for i in range(13, -1, -1)]
    daily = pd.DataFrame({"date": days, "events": [48_000 + 500 * (i % 3) for i in range(14)],
                          "anomalies": [400 + 37 * (i % 5) for i in range(14)]})
    daily["anomaly_rate"] = daily["anomalies"] / daily["events"]
    daily["labeled"] = daily["events"] if labeled else 0
    daily["positives"] = 450 if labeled else 0
    daily["true_positives"] = 380 if labeled else 0
    daily["mean_risk"], daily["max_risk"] = 0.12, 0.99
    hourly = pd.DataFrame({"date": DAY, "hour": range(24), "events": [1500 + 800 * (8 <= h <= 20) for h in range(24)],
                           "anomalies": [10 + 3 * h for h in range(24)]})
    hist = []
    for score, lo, hi in (("risk", 0.0, 1.0), ("rcf_score", 0.5, 4.0), ("logistic_score", 0.0, 1.0)):
        width = (hi - lo) / 20
        for b in range(20):
            for label in ((0, 1) if labeled else (None,)):
                centre = 4 if label in (0, None) else 16
                hist.append({"date": DAY, "score": score, "label": label, "bin": b, "bin_lo": lo + b * width,
                             "bin_hi": lo + (b + 1) * width, "count": int(1000 / (1 + (b - centre) ** 2))})
    top = pd.DataFrame({"date": DAY, "rank": range(1, 11), "device_id": [f"dev-{i:04d}" for i in range(10)],
                        "events": 24, "anomalies": [9 - i for i in range(10)],
                        "max_risk": [0.99 - 0.03 * i for i in range(10)], "mean_risk": 0.4,
                        "top_reasons": [["rcf:bytes_down", "logistic:errors"]] * 10, "top_location": "site-07"})
    locations = pd.DataFrame({"date": DAY, "site_id": [f"site-{i:02d}" for i in range(5)], "events": 9000,
                              "anomalies": [90, 70, 50, 30, 10], "max_risk": [0.99, 0.9, 0.8, 0.7, 0.6],
                              "mean_risk": 0.1, "distinct_device_id": 50})
    drift = pd.DataFrame({"date": DAY, "column": ["bytes_down", "errors", "risk", "duration_s"],
                          "kind": ["feature", "feature", "score", "feature"], "psi": [0.41, 0.17, 0.04, None],
                          "reading": ["significant", "moderate", "stable", None], "bins": [10, 10, 10, None],
                          "reference_rows": 336_000, "current_rows": 48_000})
    return daily, hourly, pd.DataFrame(hist), top, locations, drift


def comparison_frames(previous=DAY - dt.timedelta(days=1)):
    """The compare rows (alerts x4.3 and risk PSI 0.41 are jumps) and the expected-alerts row."""
    nan = float("nan")
    counts = [("events", "count", 48_500.0, 48_000.0, 1.0104, False, "x2 either way"),
              ("alerts", "count", 412.0, 95.0, 4.3368, True, "x2 either way, with >= 20 alerts on one of the days"),
              ("anomaly_rate", "rate", 412 / 48_500, 95 / 48_000, 4.292, True, "same as alerts")]
    rows = [{"date": DAY, "compared_with": previous, "measure": m, "kind": k, "value": v, "previous": p,
             "ratio": r, "psi": nan, "p50": nan, "p90": nan, "p99": nan, "previous_p50": nan, "previous_p90": nan,
             "previous_p99": nan, "jump": j, "rule": rule} for m, k, v, p, r, j, rule in counts]
    rows += [{"date": DAY, "compared_with": previous, "measure": m, "kind": "score", "value": v, "previous": p,
              "ratio": nan, "psi": psi, "p50": v, "p90": v * 2, "p99": v * 3, "previous_p50": p,
              "previous_p90": p * 2, "previous_p99": p * 3, "jump": psi > 0.25, "rule": "PSI > 0.25"}
             for m, v, p, psi in (("risk", 0.31, 0.12, 0.41), ("rcf_score", 1.2, 1.1, 0.03))]
    expected = pd.DataFrame([{"date": DAY, "for_date": DAY + dt.timedelta(days=1), "days": 7,
                              "first_date": DAY - dt.timedelta(days=6), "last_date": DAY, "median_alerts": 437.0,
                              "min_alerts": 400, "max_alerts": 548, "median_events": 48_500.0, "median_rate": 0.009}])
    return pd.DataFrame(rows), expected


def render(labeled=True, with_drift=True, comparison=None, expected=None):
    daily, hourly, hist, top, locations, drift = summary_frames(labeled)
    return daily_report.render_daily_report(
        dataset="telemetry", day=DAY, entity_col="device_id", location_col="site_id", daily=daily, hourly=hourly,
        histogram=hist, top=top, locations=locations, drift=drift if with_drift else None,
        reference="the 7 days 2026-01-07 .. 2026-01-13", sources={"scores table": "lake/scores/telemetry"},
        generated=dt.datetime(2026, 1, 15, 6, 0), comparison=comparison, expected=expected)


def test_report_is_one_self_contained_page():
    page = render()
    assert page.count("data:image/png;base64,") == 3  # daily, hourly, histograms
    assert "src=\"http" not in page and "<script" not in page and "<link" not in page
    assert "dev-0000" in page and "rcf:bytes_down, logistic:errors" in page
    psi_section = page.split("Population Stability Index")[1]
    assert psi_section.index(">bytes_down<") < psi_section.index(">errors<") < psi_section.index(">risk<")
    assert "significant" in page and "#f8c9c4" in page  # coloured PSI rows


def test_report_without_labels_or_reference_says_so():
    page = render(labeled=False, with_drift=False)
    assert "No labels on this date" in page
    assert "No PSI" in page
    assert "labeled positives" not in page


def test_report_compares_with_the_previous_date_and_highlights_the_jumps():
    comparison, expected = comparison_frames()
    page = render(comparison=comparison, expected=expected)
    block = page.split("<h2>Compared with 2026-01-13</h2>")[1].split("<h2>")[0]
    assert "the day before" in block and "<b>2 jump(s)</b>" not in block  # alerts, anomaly_rate, risk: 3
    assert "<b>3 jump(s)</b>" in block and block.count("<b>JUMP</b>") == 3 and block.count('class="jump"') == 3
    assert "<td>412</td><td>95</td><td>x4.34</td>" in block and "<td>0.85 %</td><td>0.20 %</td>" in block
    assert "0.310 <span" in block  # risk's p50 today, the previous in brackets
    assert "jumps vs 2026-01-13" in page
    assert page.count("data:image/png;base64,") == 3  # the expectation is drawn into the daily chart


def test_report_says_how_the_expected_alerts_are_computed_and_when_the_previous_date_is_older():
    comparison, expected = comparison_frames(previous=DAY - dt.timedelta(days=3))
    page = render(comparison=comparison, expected=expected)
    assert "<h2>Compared with 2026-01-11</h2>" in page and "the latest earlier date with scores" in page
    assert "Expected alerts on 2026-01-15: 437.0</b> (range 400 – 548)" in page
    assert "median of the daily alert counts on the 7 date(s) with scores from 2026-01-08 to 2026-01-14" in page
    assert "<td>548</td>" in page  # the alerts per day as numbers (400 + 37 * 4)
    first = render(comparison=comparison.iloc[0:0], expected=expected)
    assert "No scores before 2026-01-14: nothing to compare with" in first


@pytest.mark.skipif(daily_report.find_chromium() is None,
                    reason="chromium is not installed (Debian: apt-get install -y chromium); cannot screenshot")
def test_report_renders_in_headless_chromium_to_a_non_blank_screenshot(tmp_path):
    report = tmp_path / "summary_telemetry_2026-01-14.html"
    report.write_text(render(), encoding="utf-8")
    png, colours = daily_report.check_report(report, tmp_path / "report.png")
    assert png.is_file() and png.stat().st_size > 10_000
    assert colours >= daily_report.MIN_COLOURS
    from PIL import Image

    with Image.open(png) as image:
        assert image.size == (1280, 2400)


@pytest.mark.skipif(daily_report.find_chromium() is None,
                    reason="chromium is not installed (Debian: apt-get install -y chromium); cannot screenshot")
def test_report_with_the_comparison_and_expectation_renders_in_headless_chromium(tmp_path):
    report = tmp_path / "summary_telemetry_2026-01-14.html"
    report.write_text(render(*(True, True), *comparison_frames()), encoding="utf-8")
    png, colours = daily_report.check_report(report, tmp_path / "report.png")
    assert colours >= daily_report.MIN_COLOURS


def test_a_blank_page_fails_the_check(tmp_path):
    if daily_report.find_chromium() is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y chromium)")
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    with pytest.raises(ValueError, match="looks blank"):
        daily_report.check_report(blank, tmp_path / "blank.png")
