"""Point-in-time features for session telemetry, as pure ``DataFrame -> DataFrame`` functions.

Input: the validated canonical frame -- ``event_id`` string, ``device_id`` string, ``site_id``
string (nullable), ``event_time`` timestamp, the measure columns (numeric; named by the caller),
optionally ``label`` and any other columns, which are passed through.

Every feature of a row uses only rows at or before its ``event_time`` and, at most,
``lookback_seconds(windows)`` seconds of history, so:

* appending later rows never changes earlier rows' features, and
* computing on ``[D - lookback_seconds(windows), D + 1 day)`` and keeping date ``D`` gives the
  same rows as computing on all history (what an incremental nightly run relies on).

Features (``w`` is a window suffix such as ``1h``, ``6h``, ``1d``; ``m`` a measure):

``hour_sin``, ``hour_cos``, ``dow_sin``, ``dow_cos``
    time of day (24 h cycle) and position in the week (7 day cycle, Monday 00:00 = 0), UTC.
``dev_cnt_{w}``
    the device's events in the ``w`` before this one (the current row and rows at the same
    instant excluded).
``{m}_mean_{w}``, ``{m}_std_{w}``, ``{m}_min_{w}``, ``{m}_max_{w}``
    statistics of the device's history in that window (sample std). Without history the mean,
    min and max are the current value and the std is 0 (neutral: "like itself").
``{m}_z``
    ``(value - mean) / std`` over the ``zscore_window`` history; 0 with fewer than 2 past
    events; with a zero std it is 0 for an equal value and +/- ``zscore_cap`` otherwise; clipped
    to +/- ``zscore_cap``.
``{m}_delta``, ``secs_since_prev``
    change from the device's previous event and the seconds since it; 0 and the largest window
    (in seconds) when there is no previous event within the largest window.
``shingle_lag1`` .. ``shingle_lag{k-1}``
    the shingle measure's previous ``k - 1`` values, newest first, only from the largest window;
    a missing one repeats the next newer value (so a device with no history gives a flat
    shingle). The full shingle, oldest first, is :func:`shingle_columns`.
``site_cnt_{s}``, ``site_volume_{s}``, ``dev_share_{s}``
    events and total shingle measure at the row's site in the ``site_window`` up to and including
    this row's instant, and the device's own volume in that window (all sites) over the site's
    volume, capped at 1; all 0 for a null site.
``date``
    the event's UTC date (a partition column, not a model input).

:func:`telemetry_feature_columns` lists the model-input columns (measures first) in a fixed
order; none of them is ever null.

Cost: all device features come from windows sharing ``partitionBy(device_id)`` and an
ordering on the event time (one shuffle and one sort); the site features need one more, and
use running sums rather than a sliding frame (see :func:`with_site_activity`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

_UNITS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "week": 7 * 86400}
_SUFFIX = {"second": "s", "minute": "m", "hour": "h", "day": "d", "week": "w"}
_WINDOW_RE = re.compile(r"^\s*(\d+)\s*(second|minute|hour|day|week)s?\s*$", re.IGNORECASE)
_US = 1_000_000
TS = "_ts_us"  # internal: event time in epoch microseconds


class TelemetryFeatureError(ValueError):
    """The input frame lacks a required column, has one of the wrong type, or a setting is invalid."""


def _parse_window(spec: str) -> tuple[int, str]:
    match = _WINDOW_RE.match(spec)
    if not match:
        raise TelemetryFeatureError(f"window {spec!r} must look like '30 minutes', '1 hour', '6 hours' or '1 day'")
    amount, unit = int(match.group(1)), match.group(2).lower()
    if amount < 1:
        raise TelemetryFeatureError(f"window {spec!r} must be positive")
    return amount * _UNITS[unit], f"{amount}{_SUFFIX[unit]}"


def window_seconds(spec: str) -> int:
    """``'6 hours'`` -> 21600."""
    return _parse_window(spec)[0]


def window_suffix(spec: str) -> str:
    """``'6 hours'`` -> ``'6h'`` (used in feature names)."""
    return _parse_window(spec)[1]


def lookback_seconds(windows: Sequence[str], site_window: str = "1 hour", zscore_window: str | None = None) -> int:
    """How much history before a date an incremental run must load: the longest window used."""
    specs = list(windows) + [site_window] + ([zscore_window] if zscore_window else [])
    return max(window_seconds(spec) for spec in specs)


def shingle_columns(shingle_size: int, shingle_measure: str) -> list[str]:
    """The shingle as RCF expects it, oldest value first and the current value last."""
    return [f"shingle_lag{i}" for i in range(shingle_size - 1, 0, -1)] + [shingle_measure]


def telemetry_feature_columns(
    measures: Sequence[str], windows: Sequence[str], shingle_size: int, site_window: str = "1 hour"
) -> list[str]:
    """The numeric model-input columns :func:`build_telemetry_features` adds, in a fixed order."""
    columns = list(measures) + ["hour_sin", "hour_cos", "dow_sin", "dow_cos"]
    for spec in windows:
        w = window_suffix(spec)
        columns.append(f"dev_cnt_{w}")
        for m in measures:
            columns += [f"{m}_mean_{w}", f"{m}_std_{w}", f"{m}_min_{w}", f"{m}_max_{w}"]
    columns += [f"{m}_z" for m in measures]
    columns += [f"{m}_delta" for m in measures] + ["secs_since_prev"]
    columns += [f"shingle_lag{i}" for i in range(1, shingle_size)]
    s = window_suffix(site_window)
    columns += [f"site_cnt_{s}", f"site_volume_{s}", f"dev_share_{s}"]
    return columns


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
_NUMERIC = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)


def require_telemetry_columns(df: DataFrame, measures: Sequence[str]) -> None:
    """Raise :class:`TelemetryFeatureError` naming missing or wrongly typed input columns."""
    types = {f.name: f.dataType for f in df.schema.fields}
    wanted = {
        "event_id": (T.StringType,),
        "device_id": (T.StringType,),
        "site_id": (T.StringType,),
        "event_time": (T.TimestampType, T.TimestampNTZType),
    }
    wanted.update({m: _NUMERIC for m in measures})
    missing = [name for name in wanted if name not in types]
    if missing:
        raise TelemetryFeatureError(f"telemetry features need columns {missing}; the frame has {sorted(types)}")
    wrong = [f"{name} ({types[name].simpleString()})" for name, ok in wanted.items() if not isinstance(types[name], ok)]
    if wrong:
        raise TelemetryFeatureError(f"telemetry features got columns of the wrong type: {', '.join(wrong)}")
    if not measures:
        raise TelemetryFeatureError("telemetry features need at least one measure")


# --------------------------------------------------------------------------------------------
# Single-column helpers
# --------------------------------------------------------------------------------------------
def cyclic(value: Column, period: float) -> tuple[Column, Column]:
    """``(sin, cos)`` of a value on a cycle of ``period``."""
    angle = value * F.lit(2 * math.pi / period)
    return F.sin(angle), F.cos(angle)


def zscore(value: Column, mean: Column, std: Column, count: Column, cap: float) -> Column:
    """Clipped z-score with the neutral values documented in the module docstring."""
    diff = value - mean
    raw = F.when(std > 0, diff / std).otherwise(F.signum(diff) * F.lit(cap))
    return F.when(count < 2, F.lit(0.0)).otherwise(F.least(F.lit(cap), F.greatest(F.lit(-cap), raw)))


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------
def with_time_encodings(df: DataFrame) -> DataFrame:
    """Add ``date`` (UTC), ``hour_sin/cos`` and ``dow_sin/cos`` (and the internal ``_ts_us``)."""
    if TS not in df.columns:
        df = df.withColumn(TS, F.unix_micros(F.col("event_time").cast("timestamp")))
    seconds = F.col(TS) / F.lit(float(_US))
    hour = F.pmod(seconds, F.lit(86400.0)) / F.lit(3600.0)
    week = F.pmod(seconds / F.lit(86400.0) + F.lit(3.0), F.lit(7.0))  # 1970-01-01 was a Thursday (3)
    hour_sin, hour_cos = cyclic(hour, 24.0)
    dow_sin, dow_cos = cyclic(week, 7.0)
    return df.select(
        "*",
        F.to_date(F.col("event_time")).alias("date"),
        hour_sin.alias("hour_sin"),
        hour_cos.alias("hour_cos"),
        dow_sin.alias("dow_sin"),
        dow_cos.alias("dow_cos"),
    )


def with_device_history(
    measures: Sequence[str],
    windows: Sequence[str],
    shingle_size: int,
    shingle_measure: str,
    *,
    zscore_window: str | None = None,
    zscore_cap: float = 50.0,
    share_window: str = "1 hour",
) -> Callable[[DataFrame], DataFrame]:
    """Rolling statistics, z-scores, deltas and shingles from each device's own history.

    Range frames order by the event time alone (Spark allows one ordering column there); the
    previous-event features order by (event time, event_id) so ties are broken the same way on
    every run. Both share ``partitionBy(device_id)``, and the second ordering extends the first,
    so Spark sorts once.
    """
    zscore_window = zscore_window or max(windows, key=window_seconds)
    max_us = max(window_seconds(w) for w in list(windows) + [zscore_window]) * _US

    def transform(df: DataFrame) -> DataFrame:
        if TS not in df.columns:
            df = df.withColumn(TS, F.unix_micros(F.col("event_time").cast("timestamp")))
        by_device = Window.partitionBy("device_id")
        ordered = by_device.orderBy(TS)
        in_order = by_device.orderBy(TS, "event_id")

        def history(spec: str) -> Window:
            return ordered.rangeBetween(-window_seconds(spec) * _US, -1)

        stats: list[Column] = []
        specs = list(dict.fromkeys(list(windows) + [zscore_window]))
        for spec in specs:
            w, frame = window_suffix(spec), history(spec)
            stats.append(F.count(F.lit(1)).over(frame).alias(f"_cnt_{w}"))
            for m in measures:
                x = F.col(m)
                stats += [
                    F.avg(x).over(frame).alias(f"_{m}_mean_{w}"),
                    F.stddev_samp(x).over(frame).alias(f"_{m}_std_{w}"),
                ]
                if spec in windows:
                    stats += [F.min(x).over(frame).alias(f"_{m}_min_{w}"), F.max(x).over(frame).alias(f"_{m}_max_{w}")]
        share = ordered.rangeBetween(-window_seconds(share_window) * _US, 0)
        stats.append(F.sum(F.col(shingle_measure)).over(share).alias("_dev_volume"))
        lags = [F.lag(F.col(TS), 1).over(in_order).alias("_prev_ts")]
        lags += [F.lag(F.col(m), 1).over(in_order).alias(f"_{m}_prev") for m in measures]
        for i in range(1, shingle_size):
            lags += [
                F.lag(F.col(TS), i).over(in_order).alias(f"_lag_ts{i}"),
                F.lag(F.col(shingle_measure), i).over(in_order).alias(f"_lag{i}"),
            ]
        wide = df.select("*", *lags, *stats)

        def recent(ts_col: str) -> Column:
            return F.col(ts_col).isNotNull() & (F.col(TS) - F.col(ts_col) <= max_us)

        out: list[Column] = []
        for spec in windows:
            w = window_suffix(spec)
            cnt = F.col(f"_cnt_{w}")
            out.append(cnt.cast("double").alias(f"dev_cnt_{w}"))
            for m in measures:
                x = F.col(m)
                out += [
                    F.when(cnt > 0, F.col(f"_{m}_mean_{w}")).otherwise(x).alias(f"{m}_mean_{w}"),
                    F.coalesce(F.col(f"_{m}_std_{w}"), F.lit(0.0)).alias(f"{m}_std_{w}"),
                    F.when(cnt > 0, F.col(f"_{m}_min_{w}")).otherwise(x).alias(f"{m}_min_{w}"),
                    F.when(cnt > 0, F.col(f"_{m}_max_{w}")).otherwise(x).alias(f"{m}_max_{w}"),
                ]
        zw = window_suffix(zscore_window)
        for m in measures:
            out.append(
                zscore(
                    F.col(m),
                    F.col(f"_{m}_mean_{zw}"),
                    F.coalesce(F.col(f"_{m}_std_{zw}"), F.lit(0.0)),
                    F.col(f"_cnt_{zw}"),
                    zscore_cap,
                ).alias(f"{m}_z")
            )
        has_prev = recent("_prev_ts")
        for m in measures:
            out.append(F.when(has_prev, F.col(m) - F.col(f"_{m}_prev")).otherwise(F.lit(0.0)).alias(f"{m}_delta"))
        out.append(
            F.when(has_prev, (F.col(TS) - F.col("_prev_ts")) / F.lit(float(_US)))
            .otherwise(F.lit(max_us / _US))
            .alias("secs_since_prev")
        )
        newer = F.col(shingle_measure)
        for i in range(1, shingle_size):
            newer = F.when(recent(f"_lag_ts{i}"), F.col(f"_lag{i}")).otherwise(newer)
            out.append(newer.alias(f"shingle_lag{i}"))
        out.append(F.col("_dev_volume"))
        return wide.select(*df.columns, *out)

    return transform


def with_site_activity(site_window: str, volume_measure: str) -> Callable[[DataFrame], DataFrame]:
    """Add ``site_cnt_{s}`` and ``site_volume_{s}``: the site's events and volume in [t - window, t].

    A site sees hundreds of events an hour, and Spark recomputes a sliding frame from its whole
    buffer at every row (O(rows x frame)). So each row also emits an "expiry" row, with the
    opposite sign, one microsecond after it leaves the window, and running sums (an O(rows)
    frame) over the union give the window totals. Peers at the same instant are included, as
    in a range frame. Null sites get 0.
    """
    s = window_suffix(site_window)
    w_us = window_seconds(site_window) * _US

    def transform(df: DataFrame) -> DataFrame:
        if TS not in df.columns:
            df = df.withColumn(TS, F.unix_micros(F.col("event_time").cast("timestamp")))
        events = df.withColumn("_sign", F.lit(1))
        expiries = df.select(
            "site_id",
            (F.col(TS) + F.lit(w_us + 1)).alias(TS),
            F.lit(-1).alias("_sign"),
            F.col(volume_measure).cast("double").alias("_expiring"),
        )
        both = events.unionByName(expiries, allowMissingColumns=True)
        running = Window.partitionBy("site_id").orderBy(TS).rangeBetween(Window.unboundedPreceding, 0)
        signed_volume = F.when(F.col("_sign") > 0, F.col(volume_measure)).otherwise(-F.col("_expiring"))
        totals = both.select(
            "*",
            F.sum("_sign").over(running).alias("_site_cnt"),
            F.sum(signed_volume).over(running).alias("_site_volume"),
        ).where(F.col("_sign") > 0)
        has_site = F.col("site_id").isNotNull()
        return totals.select(
            *df.columns,
            F.when(has_site, F.col("_site_cnt")).otherwise(0).cast("double").alias(f"site_cnt_{s}"),
            F.when(has_site, F.col("_site_volume")).otherwise(0.0).alias(f"site_volume_{s}"),
        )

    return transform


def with_device_share(site_window: str) -> Callable[[DataFrame], DataFrame]:
    """Add ``dev_share_{s}``: the device's own volume in the site window (``_dev_volume``, from
    :func:`with_device_history`, consumed) over its site's, capped at 1; 0 without site volume.
    """
    s = window_suffix(site_window)

    def transform(df: DataFrame) -> DataFrame:
        volume = F.col(f"site_volume_{s}")
        share = F.when(volume > 0, F.least(F.lit(1.0), F.col("_dev_volume") / volume)).otherwise(0.0)
        return df.select(*[c for c in df.columns if c != "_dev_volume"], share.alias(f"dev_share_{s}"))

    return transform


def build_telemetry_features(
    df: DataFrame,
    *,
    measures: Sequence[str],
    windows: Sequence[str],
    shingle_size: int,
    shingle_measure: str,
    zscore_window: str | None = None,
    site_window: str = "1 hour",
    zscore_cap: float = 50.0,
) -> DataFrame:
    """The input's columns (measures as double) plus ``date`` and :func:`telemetry_feature_columns`.

    ``zscore_window`` defaults to the largest of ``windows``. See the module docstring for the
    definitions and neutral values.
    """
    measures = list(measures)
    windows = list(windows)
    if not windows:
        raise TelemetryFeatureError("telemetry features need at least one window")
    if shingle_size < 1:
        raise TelemetryFeatureError(f"shingle_size must be >= 1, got {shingle_size}")
    if shingle_measure not in measures:
        raise TelemetryFeatureError(f"shingle_measure {shingle_measure!r} is not one of the measures {measures}")
    for spec in windows + [site_window] + ([zscore_window] if zscore_window else []):
        _parse_window(spec)
    require_telemetry_columns(df, measures)
    typed = df.select(*[F.col(c).cast("double").alias(c) if c in measures else F.col(c) for c in df.columns])
    passthrough = [c for c in df.columns if c not in measures]
    features = (
        typed.transform(with_time_encodings)
        # the site stage runs first, on the narrow frame: its shuffle carries twice the rows
        .transform(with_site_activity(site_window, shingle_measure))
        .transform(
            with_device_history(
                measures,
                windows,
                shingle_size,
                shingle_measure,
                zscore_window=zscore_window,
                zscore_cap=zscore_cap,
                share_window=site_window,
            )
        )
        .transform(with_device_share(site_window))
    )
    columns = passthrough + ["date"] + telemetry_feature_columns(measures, windows, shingle_size, site_window)
    return features.select(*columns)
