"""A self-contained HTML evaluation report: metrics tables plus PNG plots embedded as base64.

``render_report`` is pure (strings in, string out); ``write_report`` writes it to a local path or
an ``s3a://`` URI; ``evaluation_report`` evaluates score columns and renders everything at once.
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from pyspark.sql import DataFrame

from models import evaluation
from reporting.plots import evaluation_plots
from runtime.fs import write_text

__all__ = ["evaluation_report", "render_report", "write_report"]

_CSS = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
.figures { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; } figcaption { font-size: 0.85em; color: #555; text-align: center; }
.note { color: #555; font-size: 0.9em; }
"""


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4f}" if abs(value) < 1e6 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return html.escape(str(value))


def _metrics_table(metrics: Mapping[str, Mapping[str, Any]]) -> str:
    """One column per model/score, one row per metric (union of keys, first-seen order)."""
    names = list(metrics)
    keys: list = []
    for values in metrics.values():
        keys.extend(k for k in values if k not in keys)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    rows = "".join(
        f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{_fmt(metrics[n].get(k))}</td>" for n in names) + "</tr>"
        for k in keys)
    return f"<table><thead><tr><th>metric</th>{head}</tr></thead><tbody>{rows}</tbody></table>"


def render_report(title: str, metrics: Mapping[str, Mapping[str, Any]],
                  images: Mapping[str, Mapping[str, bytes]] | None = None,
                  notes: Sequence[str] = (), generated: str | None = None) -> str:
    """HTML page: ``metrics`` is ``{section: {metric: value}}`` (shown side by side), ``images``
    is ``{section: {caption: png_bytes}}`` (embedded as data URIs, so the file stands alone).
    """
    generated = generated or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    parts = [(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
              f"<style>{_CSS}</style></head><body>"),
             f"<h1>{html.escape(title)}</h1><p class='note'>generated {html.escape(generated)}</p>"]
    parts.extend(f"<p class='note'>{html.escape(n)}</p>" for n in notes)
    if metrics:
        parts.append("<h2>Metrics</h2>" + _metrics_table(metrics))
    for section, pngs in (images or {}).items():
        parts.append(f"<h2>{html.escape(section)}</h2><div class='figures'>")
        for caption, png in pngs.items():
            data = base64.b64encode(png).decode("ascii")
            parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(path: str, page: str) -> str:
    """Write the HTML to ``path`` (local or ``s3a://``); returns ``path``."""
    write_text(path, page)
    return path


def evaluation_report(df: DataFrame, scores: Mapping[str, float | None], *, label_col: str = "label",
                      k: int = 100, card_col: str | None = None, date_col: str | None = None,
                      title: str = "Detector evaluation", notes: Sequence[str] = ()) -> tuple:
    """Evaluate each ``{score_col: threshold}`` on ``df``; ``(html, {score_col: metrics})``."""
    metrics: dict[str, dict[str, Any]] = {}
    images: dict[str, dict[str, bytes]] = {}
    for score_col, threshold in scores.items():
        table = evaluation.score_table(df, score_col, label_col)
        m = evaluation.evaluate_scores(df, score_col, label_col, threshold=0.5 if threshold is None else threshold,
                                       k=k, card_col=card_col, date_col=date_col, table=table)
        metrics[score_col] = {key: v for key, v in m.items() if key != "card_precision_per_day"}
        plots = evaluation_plots(df, score_col, label_col, threshold=threshold, table=table)
        images[score_col] = {"ROC curve": plots["roc"], "Precision-recall curve": plots["pr"],
                             "Score histogram by label": plots["histogram"]}
    return render_report(title, metrics, images, notes), metrics
