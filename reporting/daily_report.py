"""The daily summary as one self-contained HTML page (PNG charts embedded as base64).

``render_daily_report`` is pure: small pandas frames (the summary tables of one date, already
collected by the job) and plain values in, an HTML string out. Charts are drawn on matplotlib ``Figure``
objects, saved as PNG by the Agg renderer (no pyplot state, no global backend, no display). The page has no external
resources, so it can be mailed or opened from S3 as it is.
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

__all__ = ["check_report", "distinct_colours", "find_chromium", "png_base64", "render_daily_report", "screenshot"]

_BLUE, _RED, _GREY, _ORANGE = "#3b6ea8", "#c8443b", "#9aa5b1", "#e39b2d"
_READING_COLOURS = {"stable": "#d9f2d9", "moderate": "#ffe9b3", "significant": "#f8c9c4"}

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 24px 32px; color: #222;
       max-width: 1200px; }
h1 { font-size: 1.55em; margin-bottom: 0.2em; } h2 { font-size: 1.2em; margin-top: 1.6em;
  border-bottom: 2px solid #e4e7eb; padding-bottom: 4px; }
.sub { color: #555; margin-top: 0; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { background: #f5f7fa; border: 1px solid #e4e7eb; border-radius: 6px; padding: 10px 16px; min-width: 130px; }
.card .v { font-size: 1.5em; font-weight: 600; } .card .k { color: #555; font-size: 0.85em; }
.card.alert { background: #fdecea; border-color: #f5c2bd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #d5d9de; padding: 4px 10px; text-align: right; }
th { background: #eef1f4; } td.l, th.l { text-align: left; }
.bar { display: inline-block; height: 10px; background: #c8443b; vertical-align: middle; margin-right: 6px; }
.grid { display: flex; flex-wrap: wrap; gap: 16px; align-items: flex-start; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #555; font-size: 0.88em; }
code { background: #f3f3f3; padding: 0 3px; }
"""


def png_base64(fig: Figure, dpi: int = 96) -> str:
    """The figure as a base64 PNG (for ``<img src="data:image/png;base64,...">``)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(fig: Figure, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{png_base64(fig)}">'


_INT_COLUMNS = {"rank", "events", "anomalies", "bins", "reference_rows", "current_rows", "labeled", "positives"}


def _fmt(value: Any, digits: int = 3, integer: bool = False) -> str:
    if value is None or value is pd.NA or value is pd.NaT:
        return "–"
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # numpy arrays and scalars to Python values
    if isinstance(value, (list, tuple)):
        return html.escape(", ".join(str(v) for v in value)) if value else "–"
    if isinstance(value, float) and math.isnan(value):
        return "–"
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)  # an integer column with nulls arrives as float
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _daily_chart(daily: pd.DataFrame, day: dt.date, expected: Mapping[str, Any] | None = None) -> str | None:
    if daily.empty:
        return None
    daily = daily.sort_values("date")
    labels = [str(d)[5:] for d in daily["date"]]
    colours = [_RED if str(d) == str(day) else _BLUE for d in daily["date"]]
    fig = Figure(figsize=(5.7, 3.2))
    ax = fig.add_subplot()
    ax.bar(labels, daily["anomalies"], color=colours)
    top = int(daily["anomalies"].max())
    title = "Anomalies per day (report date in red)"
    if expected is not None:
        median, low, high = (float(expected[k]) for k in ("median_alerts", "min_alerts", "max_alerts"))
        ax.errorbar([f"{str(expected['for_date'])[5:]}?"], [median], yerr=[[median - low], [high - median]],
                    fmt="D", color=_GREY, capsize=4)
        top = max(top, int(high))
        title = "Anomalies per day (report date in red; grey: expected next day)"
    ax.set_ylim(0, max(1, top) * 1.15)
    ax.set_ylabel("anomalies")
    ax.set_title(title)
    rate = ax.twinx()
    rate.plot(labels, 100 * daily["anomaly_rate"].astype(float), color=_ORANGE, marker="o", linewidth=1.5)
    rate.set_ylabel("anomaly rate (%)", color=_ORANGE)
    rate.set_ylim(0, max(1e-9, 100 * float(daily["anomaly_rate"].max())) * 1.6)
    ax.tick_params(axis="x", labelrotation=45)
    ax.grid(axis="y", alpha=0.3)
    return _img(fig, "anomalies per day")


def _hourly_chart(hourly: pd.DataFrame) -> str | None:
    if hourly.empty:
        return None
    hourly = hourly.sort_values("hour")
    fig = Figure(figsize=(5.7, 3.2))
    ax = fig.add_subplot()
    ax.bar(hourly["hour"], hourly["anomalies"], color=_RED, label="anomalies")
    ax.set_ylim(0, max(1, int(hourly["anomalies"].max())) * 1.15)
    ax.set_xlabel("hour of day (UTC)")
    ax.set_ylabel("anomalies")
    ax.set_xticks(range(0, 24, 2))
    ax.set_title("Anomalies per hour")
    events = ax.twinx()
    events.plot(hourly["hour"], hourly["events"], color=_GREY, linewidth=1.5, label="events")
    events.set_ylabel("events", color="#666")
    events.set_ylim(0, max(1, int(hourly["events"].max())) * 1.15)
    handles = ax.get_legend_handles_labels()[0] + events.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], fontsize=8, loc="upper center", ncol=2,
              frameon=False, bbox_to_anchor=(0.5, -0.16))  # below the axes: never over a bar
    ax.grid(axis="y", alpha=0.3)
    return _img(fig, "anomalies per hour")


def _histogram_chart(histogram: pd.DataFrame) -> str | None:
    if histogram.empty:
        return None
    scores = list(dict.fromkeys(histogram["score"]))
    labeled = histogram["label"].notna().any()
    fig = Figure(figsize=(3.9 * len(scores), 3.0), layout="constrained")
    axes = fig.subplots(1, len(scores), squeeze=False)[0]
    for ax, score in zip(axes, scores, strict=True):
        part = histogram[histogram["score"] == score]
        groups = [("label 0 (normal)", part[part["label"] == 0], _BLUE),
                  ("label 1 (anomaly/fraud)", part[part["label"] == 1], _RED)] if labeled \
            else [("all events", part, _BLUE)]
        for name, rows, colour in groups:
            if rows.empty:
                continue
            by_bin = rows.groupby(["bin_lo", "bin_hi"], as_index=False)["count"].sum().sort_values("bin_lo")
            share = by_bin["count"] / by_bin["count"].sum()
            ax.bar(by_bin["bin_lo"], share, width=(by_bin["bin_hi"] - by_bin["bin_lo"]), align="edge",
                   color=colour, alpha=0.55, label=f"{name} ({int(rows['count'].sum()):,})")
        ax.set_title(score)
        ax.set_xlabel("score")
        ax.set_ylabel("share of group")
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    return _img(fig, "score histograms")


def _table(frame: pd.DataFrame, columns: Sequence[str], left: Sequence[str] = (), bar: str | None = None,
           row_colour: Mapping[int, str] | None = None) -> str:
    head = "".join(f'<th class="{"l" if c in left else ""}">{html.escape(c)}</th>' for c in columns)
    rows = []
    for i, (_, row) in enumerate(frame.iterrows()):
        cells = []
        for c in columns:
            text = _fmt(row[c], integer=c in _INT_COLUMNS or c.startswith("distinct_"))
            if c == bar and row[c] is not None and not pd.isna(row[c]):
                text = f'<span class="bar" style="width:{max(1, int(60 * float(row[c])))}px"></span>{text}'
            cells.append(f'<td class="{"l" if c in left else ""}">{text}</td>')
        style = f' style="background:{row_colour[i]}"' if row_colour and i in row_colour else ""
        rows.append(f"<tr{style}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _card(key: str, value: str, alert: bool = False) -> str:
    return f'<div class="card{" alert" if alert else ""}"><div class="v">{value}</div><div class="k">{key}</div></div>'


def _measure(kind: str, value: Any) -> str:
    if value is None or pd.isna(value):
        return "–"
    if kind == "rate":
        return f"{100 * float(value):.2f} %"
    if kind == "count":
        return f"{float(value):,.0f}"
    return f"{float(value):.3f}"


def _comparison_block(comparison: pd.DataFrame, day: dt.date) -> str:
    """The "compared with <previous date>" section: one row per measure, jumps highlighted."""
    previous = comparison["compared_with"].iloc[0]
    gap = "the day before" if str(previous) == str(day - dt.timedelta(days=1)) else \
        "the latest earlier date with scores"
    head = "".join(f'<th class="{"l" if i in (0, 8) else ""}">{html.escape(c)}</th>' for i, c in enumerate(
        ["measure", str(day), str(previous), "change", "PSI", "p50", "p90", "p99", "jump when"]))
    rows = []
    for _, row in comparison.iterrows():
        kind = row["kind"]
        ratio = row["ratio"]
        change = "–" if ratio is None or pd.isna(ratio) else f"x{float(ratio):.2f}"
        quantiles = ["–" if pd.isna(row.get(q)) else
                     f"{float(row[q]):.3f} <span class=\"note\">({float(row[f'previous_{q}']):.3f})</span>"
                     for q in ("p50", "p90", "p99")]
        flag = '<b>JUMP</b> · ' if row["jump"] else ""
        cells = [f'<td class="l">{flag}{html.escape(str(row["measure"]))}</td>',
                 f"<td>{_measure(kind, row['value'])}</td>", f"<td>{_measure(kind, row['previous'])}</td>",
                 f"<td>{change}</td>", f"<td>{_fmt(row['psi'])}</td>", *[f"<td>{q}</td>" for q in quantiles],
                 f'<td class="l">{html.escape(str(row["rule"]))}</td>']
        style = f' class="jump" style="background:{_READING_COLOURS["significant"]}"' if row["jump"] else ""
        rows.append(f"<tr{style}>{''.join(cells)}</tr>")
    jumps = int(comparison["jump"].sum())
    return (f"<h2>Compared with {previous}</h2>"
            f'<p class="note">{day} against {previous} ({gap}): '
            + (f'<b>{jumps} jump(s)</b>, highlighted. ' if jumps else "no jump. ")
            + "Counts: the two days' numbers and today / previous; scores: the means, PSI of today against "
            f"the previous date (its deciles as bins) and quantiles (previous in brackets).</p>"
            f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _expected_block(daily: pd.DataFrame, expected: Mapping[str, Any]) -> str:
    """Alerts per day as numbers and how the next day's expectation is computed."""
    daily = daily.sort_values("date")
    head = "".join(f"<th>{str(d)[5:]}</th>" for d in daily["date"])
    alerts = "".join(f"<td>{_fmt(int(v))}</td>" for v in daily["anomalies"])
    events = "".join(f"<td>{_fmt(int(v))}</td>" for v in daily["events"])
    return (f'<table><thead><tr><th class="l">date</th>{head}</tr></thead><tbody>'
            f'<tr><td class="l">alerts</td>{alerts}</tr><tr><td class="l">events</td>{events}</tr></tbody></table>'
            f'<p class="note"><b>Expected alerts on {expected["for_date"]}: {float(expected["median_alerts"]):,.1f}'
            f'</b> (range {_fmt(int(expected["min_alerts"]))} – {_fmt(int(expected["max_alerts"]))}). How: the '
            f'median of the daily alert counts on the {int(expected["days"])} date(s) with scores from '
            f'{expected["first_date"]} to {expected["last_date"]} (the mean of the two middle counts for an '
            "even number of dates), the range their minimum and maximum; no trend, weekday or season is "
            "modelled, and it assumes tomorrow's events and threshold are like these days'.</p>")


def render_daily_report(*, dataset: str, day: dt.date, entity_col: str, location_col: str | None,
                        daily: pd.DataFrame, hourly: pd.DataFrame, histogram: pd.DataFrame,
                        top: pd.DataFrame, locations: pd.DataFrame, drift: pd.DataFrame | None,
                        reference: str, sources: Mapping[str, str],
                        generated: dt.datetime | None = None, comparison: pd.DataFrame | None = None,
                        expected: pd.DataFrame | None = None) -> str:
    """The HTML page of one date's summary.

    ``daily``: daily counts of the last days; ``hourly``: anomalies per hour of ``day``;
    ``histogram``: score histogram rows of ``day``; ``top``: top entities; ``locations``: the
    riskiest locations; ``drift``: PSI rows (None or empty: no reference days); ``reference``: a
    phrase naming the PSI reference period; ``sources``: name -> location, listed at the end;
    ``comparison``: the day-over-day rows (None or empty: no earlier date, the page says so);
    ``expected``: the one-row expectation of the next day's alerts (None: not shown).
    """
    generated = generated or dt.datetime.now(dt.UTC).replace(microsecond=0)
    today = daily[daily["date"].astype(str) == str(day)]
    events = int(today["events"].iloc[0]) if not today.empty else 0
    anomalies = int(today["anomalies"].iloc[0]) if not today.empty else 0
    cards = [_card("events", f"{events:,}"), _card("anomalies", f"{anomalies:,}", anomalies > 0),
             _card("anomaly rate", f"{100 * anomalies / events:.2f} %" if events else "–")]
    if not today.empty and int(today["labeled"].iloc[0]) > 0:
        positives = int(today["positives"].iloc[0])
        caught = int(today["true_positives"].iloc[0])
        cards.append(_card("labeled positives", f"{positives:,}"))
        cards.append(_card("positives flagged (recall)", f"{caught:,}" + (f" ({caught / positives:.0%})"
                                                                              if positives else "")))
        cards.append(_card("precision of flags", f"{caught / anomalies:.0%}" if anomalies else "–"))
    if not today.empty:
        cards.append(_card("max risk", _fmt(float(today["max_risk"].iloc[0]))))
    drifting = 0 if drift is None or drift.empty else int((drift["reading"] == "significant").sum())
    if drift is not None and not drift.empty:
        cards.append(_card("columns drifting (PSI ≥ 0.25)", str(drifting), drifting > 0))
    has_comparison = comparison is not None and not comparison.empty
    if has_comparison:
        jumps = int(comparison["jump"].sum())
        cards.append(_card(f"jumps vs {comparison['compared_with'].iloc[0]}", str(jumps), jumps > 0))
    outlook = None if expected is None or expected.empty else expected.iloc[0]
    if outlook is not None:
        cards.append(_card(f"expected alerts {outlook['for_date']}",
                           f"{float(outlook['median_alerts']):,.0f} ({_fmt(int(outlook['min_alerts']))}–"
                           f"{_fmt(int(outlook['max_alerts']))})"))

    parts = [f"<h1>Daily anomaly summary — {html.escape(dataset)} — {day}</h1>",
             f'<p class="sub">Generated {generated:%Y-%m-%d %H:%M} UTC from the scores table. '
             f"Entity: <code>{html.escape(entity_col)}</code>"
             + (f", location: <code>{html.escape(location_col)}</code>" if location_col else "") + ".</p>",
             f'<div class="cards">{"".join(cards)}</div>']

    if has_comparison:
        parts.append(_comparison_block(comparison, day))
    elif comparison is not None:
        parts.append(f'<h2>Compared with the previous date</h2><p class="note">No scores before {day}: '
                     "nothing to compare with.</p>")

    charts = [c for c in (_daily_chart(daily, day, outlook), _hourly_chart(hourly)) if c]
    parts.append("<h2>Anomalies over time</h2>")
    parts.append(f'<div class="grid">{"".join(charts)}</div>' if charts else '<p class="note">No events.</p>')
    if outlook is not None and not daily.empty:
        parts.append(_expected_block(daily, outlook))

    parts.append("<h2>Score distributions</h2>")
    chart = _histogram_chart(histogram)
    parts.append(chart or '<p class="note">No scores on this date.</p>')
    if chart and not histogram["label"].notna().any():
        parts.append('<p class="note">No labels on this date: histograms of all events.</p>')

    parts.append(f"<h2>Top {len(top)} riskiest entities ({html.escape(entity_col)})</h2>")
    if top.empty:
        parts.append('<p class="note">No entities on this date.</p>')
    else:
        top = top.sort_values("rank")
        columns = ["rank", entity_col, "events", "anomalies", "max_risk", "mean_risk", "top_reasons"]
        columns += [c for c in ("top_location",) if c in top.columns]
        parts.append(_table(top, columns, left=[entity_col, "top_reasons", "top_location"], bar="max_risk"))

    if location_col:
        parts.append(f"<h2>Locations with the most anomalies ({html.escape(location_col)})</h2>")
        if locations.empty:
            parts.append('<p class="note">No locations on this date.</p>')
        else:
            locations = locations.sort_values(["anomalies", "max_risk"], ascending=False)
            columns = [location_col, "events", "anomalies", "max_risk", "mean_risk"]
            columns += [c for c in locations.columns if c == f"distinct_{entity_col}"]
            parts.append(_table(locations, columns, left=[location_col], bar="max_risk"))

    parts.append("<h2>Drift: Population Stability Index</h2>")
    if drift is None or drift.empty:
        parts.append(f'<p class="note">No PSI: {html.escape(reference)}.</p>')
    else:
        drift = drift.sort_values(["psi", "column"], ascending=[False, True], na_position="last").reset_index(drop=True)
        colours = {i: _READING_COLOURS.get(r, "") for i, r in enumerate(drift["reading"]) if r in _READING_COLOURS}
        parts.append(f'<p class="note">Current date vs {html.escape(reference)}; bins at the reference deciles. '
                     "PSI = Σ (c<sub>i</sub> − r<sub>i</sub>) · ln(c<sub>i</sub> / r<sub>i</sub>). "
                     f'<span style="background:{_READING_COLOURS["stable"]}">&lt; 0.1 stable</span>, '
                     f'<span style="background:{_READING_COLOURS["moderate"]}">0.1–0.25 moderate shift</span>, '
                     f'<span style="background:{_READING_COLOURS["significant"]}">≥ 0.25 significant '
                     "shift: investigate / retrain</span>.</p>")
        parts.append(_table(drift.reset_index(drop=True), ["column", "kind", "psi", "reading", "bins",
                                                           "reference_rows", "current_rows"],
                            left=["column", "kind", "reading"], row_colour=colours))

    parts.append("<h2>Sources and outputs</h2><table>" + "".join(
        f'<tr><td class="l">{html.escape(k)}</td><td class="l"><code>{html.escape(v)}</code></td></tr>'
        for k, v in sources.items()) + "</table>")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>Daily anomaly summary — {html.escape(dataset)} — {day}</title>"
            f"<style>{_CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


# Rendering check: headless Chromium takes a screenshot of the page, which must not be blank.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
MIN_COLOURS = 200  # a rendered report (text anti-aliasing, charts) has thousands; a blank page 1


def find_chromium() -> str | None:
    """The path of a Chromium/Chrome binary on PATH, or None."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def screenshot(report: str | Path, png: str | Path, *, width: int = 1280, height: int = 2400,
               timeout: float = 120.0, chromium: str | None = None) -> Path:
    """Render the local HTML file ``report`` with headless Chromium into ``png``."""
    binary = chromium or find_chromium()
    if not binary:
        raise FileNotFoundError("no chromium binary on PATH (Debian: apt-get install -y chromium)")
    report, png = Path(report).resolve(), Path(png).resolve()
    png.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        command = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={png}",
                   f"--window-size={width},{height}", report.as_uri()]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot (exit {done.returncode}): {done.stderr[-2000:]}")
    return png


def distinct_colours(png: str | Path) -> int:
    """How many distinct RGB colours the image has (1 for a blank page)."""
    from PIL import Image

    with Image.open(png) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    return len(colours or ())


def check_report(report: str | Path, png: str | Path | None = None) -> tuple[Path, int]:
    """Screenshot ``report`` and fail (ValueError) if the picture is blank; (png, colours)."""
    png = Path(png) if png else Path(report).with_suffix(".png")
    shot = screenshot(report, png)
    colours = distinct_colours(shot)
    if colours < MIN_COLOURS:
        raise ValueError(f"{shot} looks blank: {colours} distinct colours (expected >= {MIN_COLOURS})")
    return shot, colours


def _main(argv: Sequence[str]) -> int:
    """``python -m reporting.daily_report check [REPORT.html | FOLDER]``: screenshot the report (the
    newest summary_*.html in FOLDER, default lake/reports) and check it is not blank.
    """
    if not argv or argv[0] != "check":
        print(_main.__doc__, file=sys.stderr)
        return 2
    target = Path(argv[1]) if len(argv) > 1 else Path("lake/reports")
    if target.is_dir():
        reports = sorted(target.glob("summary_*.html"), key=os.path.getmtime)
        if not reports:
            print(f"no summary_*.html report in {target}: run 'python -m jobs summary' first", file=sys.stderr)
            return 1
        target = reports[-1]
    if not find_chromium():
        print("no chromium on PATH: apt-get install -y chromium", file=sys.stderr)
        return 1
    try:
        png, colours = check_report(target)
    except (ValueError, RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"report check failed: {exc}", file=sys.stderr)
        return 1
    print(f"report {target.resolve()} renders: {colours} distinct colours")
    print(f"screenshot: {png.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
