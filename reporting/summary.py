"""Daily summary of the scores table: pure ``DataFrame -> DataFrame`` transforms.

Every function takes the scores frame (one row per event, see ``SCORE_COLUMNS``) plus plain
parameters and returns a small frame; nothing is read, written or collected here, so the same
functions run in the ``summary`` job and on hand-written frames in tests.

Population Stability Index (``psi``)
------------------------------------
For one column, cut the *reference* values (the previous days) into ``bins`` bins at the
reference's own quantiles (deciles by default; repeated quantiles, e.g. a feature that is mostly
0, are merged, so a column can end up with fewer bins). With ``r_i`` and ``c_i`` the shares of the
reference and current rows in bin ``i``::

    PSI = sum_i (c_i - r_i) * ln(c_i / r_i)

A share of 0 is replaced by ``PSI_EPSILON`` (1e-4) so an empty bin gives a large but finite term.
Identical distributions give 0; each term is >= 0. The usual reading: PSI < 0.1 no significant
change ("stable"), 0.1 <= PSI < 0.25 a moderate shift worth a look ("moderate"), PSI >= 0.25 a
significant shift: the model sees a different population, investigate or retrain ("significant").

Day-over-day comparison (``day_comparison``)
--------------------------------------------
The date ``D`` against one earlier date ``P`` (the caller picks it: ``D - 1``, or the latest
earlier date with scores). Counts (events, alerts = anomalies, anomaly rate) are flagged as a
*jump* when they moved by more than a factor either way (``today / previous`` or its inverse above
the limit), alerts and the rate only when the larger of the two alert counts reaches a minimum so
that 1 -> 3 alerts is noise, not a jump; a count that went from 0 to something (or back) is a
jump under the same minimum. Each score (risk, rcf_score, logistic_score) is compared by its mean
and quantiles and flagged when its PSI of ``D`` against ``P`` (``P``'s deciles as bins) is above
a limit.

Expected alerts (``expected_alerts``)
-------------------------------------
The alerts the next date will bring, as a plain expectation: the median of the daily alert counts
over the dates with scores among the last N days up to ``D`` (the mean of the two middle values
for an even count), with their minimum and maximum as the range.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from features.datasets import DATASETS
from runtime.storage import between_dates

__all__ = [
    "COMPARED_QUANTILES",
    "JumpLimits",
    "PSI_EPSILON",
    "PSI_MODERATE",
    "PSI_SIGNIFICANT",
    "SCORE_COLUMNS",
    "SummaryInputError",
    "anomalies_per_hour",
    "between_dates",
    "counts_by",
    "daily_counts",
    "day_comparison",
    "expected_alerts",
    "feature_columns",
    "for_date",
    "psi",
    "psi_reading",
    "require_columns",
    "score_columns",
    "score_histogram",
    "summary_tables",
    "top_entities",
]

# Columns of the scores table that are not features (the id columns of every data set included).
SCORE_COLUMNS = ("risk", "rcf_score", "logistic_score")
_NOT_FEATURES = {
    *(column for ds in DATASETS.values() for column in ds.id_columns),
    "event_time", "date", "label", "is_anomaly", "rcf_version", "logistic_version", "reasons",
    *SCORE_COLUMNS,
}

PSI_EPSILON = 1e-4
PSI_MODERATE = 0.1
PSI_SIGNIFICANT = 0.25


class SummaryInputError(ValueError):
    """The scores frame lacks a column a summary needs; the message names it."""


def require_columns(df: DataFrame, columns: Iterable[str], what: str = "the summary") -> None:
    """Raise ``SummaryInputError`` naming every column of ``columns`` missing from ``df``."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise SummaryInputError(f"{what} needs column(s) {', '.join(missing)}; the scores table has "
                                f"{', '.join(df.columns)}")


def feature_columns(df: DataFrame) -> list[str]:
    """Every numeric column that is neither an id, a label nor a score: the features, for drift."""
    return [f.name for f in df.schema.fields
            if isinstance(f.dataType, T.NumericType) and f.name not in _NOT_FEATURES]


def score_columns(df: DataFrame) -> list[str]:
    """The score columns present in ``df`` (``risk`` first)."""
    return [c for c in SCORE_COLUMNS if c in df.columns]


def _date_lit(day) -> Column:
    return F.lit(str(day)).cast("date")


def for_date(df: DataFrame, day: dt.date | str) -> DataFrame:
    """The rows of ``day`` (partition pruning on ``date``)."""
    return df.where(F.col("date") == _date_lit(day))


def _anomaly_count() -> Column:
    return F.sum(F.col("is_anomaly").cast("int")).cast("long")


def anomalies_per_hour(df: DataFrame, day: dt.date | str) -> DataFrame:
    """Events and anomalies in each hour (0..23, UTC) of ``day``; hours without events are 0.

    Columns: date, hour, hour_start (timestamp), events, anomalies, mean_risk (null if no events).
    """
    require_columns(df, ["event_time", "date", "is_anomaly", "risk"], "anomalies per hour")
    counted = (for_date(df, day)
               .groupBy(F.hour("event_time").alias("hour"))
               .agg(F.count(F.lit(1)).alias("events"), _anomaly_count().alias("anomalies"),
                    F.avg("risk").alias("mean_risk")))
    hours = df.sparkSession.range(24).select(F.col("id").cast("int").alias("hour"))
    return (hours.join(F.broadcast(counted), "hour", "left")
            .select(_date_lit(day).alias("date"), "hour",
                    (_date_lit(day).cast("timestamp") + F.make_interval(hours=F.col("hour"))).alias("hour_start"),
                    F.coalesce("events", F.lit(0)).cast("long").alias("events"),
                    F.coalesce("anomalies", F.lit(0)).cast("long").alias("anomalies"),
                    "mean_risk"))


def daily_counts(df: DataFrame) -> DataFrame:
    """Per date: events, anomalies, anomaly_rate, labeled rows and labeled positives (fraud or
    injected anomaly), anomalies that are labeled positive, mean and max risk.
    """
    require_columns(df, ["date", "is_anomaly", "risk", "label"], "daily counts")
    label = F.col("label")
    return (df.groupBy("date")
            .agg(F.count(F.lit(1)).alias("events"), _anomaly_count().alias("anomalies"),
                 F.count(label).alias("labeled"),
                 F.sum((label == 1).cast("int")).cast("long").alias("positives"),
                 F.sum(((label == 1) & F.col("is_anomaly")).cast("int")).cast("long").alias("true_positives"),
                 F.avg("risk").alias("mean_risk"), F.max("risk").alias("max_risk"))
            .withColumn("anomaly_rate", F.col("anomalies") / F.col("events"))
            .withColumn("positives", F.coalesce("positives", F.lit(0)).cast("long"))
            .withColumn("true_positives", F.coalesce("true_positives", F.lit(0)).cast("long"))
            .select("date", "events", "anomalies", "anomaly_rate", "labeled", "positives", "true_positives",
                    "mean_risk", "max_risk"))


def counts_by(df: DataFrame, key_col: str, *, distinct_col: str | None = None) -> DataFrame:
    """Per ``date`` and ``key_col`` (an entity or a location): events, anomalies, max and mean risk,
    the last event time and, with ``distinct_col``, how many distinct values of it were seen
    (``distinct_<distinct_col>``, e.g. devices per site).
    """
    require_columns(df, ["date", key_col, "is_anomaly", "risk", "event_time"], f"counts by {key_col}")
    aggs = [F.count(F.lit(1)).alias("events"), _anomaly_count().alias("anomalies"),
            F.max("risk").alias("max_risk"), F.avg("risk").alias("mean_risk"),
            F.max("event_time").alias("last_event_time")]
    if distinct_col:
        require_columns(df, [distinct_col], f"counts by {key_col}")
        aggs.append(F.countDistinct(distinct_col).alias(f"distinct_{distinct_col}"))
    return df.groupBy("date", key_col).agg(*aggs)


def score_histogram(df: DataFrame, score_cols: Sequence[str], bins: int = 20) -> DataFrame:
    """Histogram of each score per date and label: equal-width ``bins`` between the score's min and
    max over ``df`` (``risk`` always over [0, 1]).

    Long format, one row per non-empty bin: date, score, label (null: unlabeled rows), bin
    (0..bins-1), bin_lo, bin_hi, count. Null and NaN scores are left out.
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    require_columns(df, ["date", *score_cols], "the score histogram")
    label = F.col("label").cast("int") if "label" in df.columns else F.lit(None).cast("int")
    values = (df.select("date", label.alias("label"),
                        F.explode(F.array(*[F.struct(F.lit(c).alias("score"), F.col(c).cast("double").alias("value"))
                                            for c in score_cols])).alias("p"))
              .select("date", "label", "p.score", "p.value")
              .where(F.col("value").isNotNull() & ~F.isnan("value")))
    is_risk = F.col("score") == "risk"
    bounds = (values.groupBy("score").agg(F.min("value").alias("lo"), F.max("value").alias("hi"))
              .select("score", F.when(is_risk, 0.0).otherwise(F.col("lo")).alias("lo"),
                      F.when(is_risk, 1.0).otherwise(F.col("hi")).alias("hi")))
    width = F.when(F.col("hi") > F.col("lo"), (F.col("hi") - F.col("lo")) / bins).otherwise(F.lit(1.0))
    binned = (values.join(F.broadcast(bounds), "score")
              .withColumn("width", width)
              .withColumn("bin", F.least(F.greatest(F.floor((F.col("value") - F.col("lo")) / F.col("width")),
                                                    F.lit(0)), F.lit(bins - 1)).cast("int")))
    return (binned.groupBy("date", "score", "label", "bin", "lo", "width").agg(F.count(F.lit(1)).alias("count"))
            .select("date", "score", "label", "bin",
                    (F.col("lo") + F.col("bin") * F.col("width")).alias("bin_lo"),
                    (F.col("lo") + (F.col("bin") + 1) * F.col("width")).alias("bin_hi"), "count"))


def top_entities(df: DataFrame, entity_col: str, n: int = 20, reasons: int = 3,
                 location_col: str | None = None) -> DataFrame:
    """The ``n`` riskiest entities per date (by max risk, then anomalies), with their most
    frequent reason codes.

    Reasons are counted over the entity's anomalous events; an entity without anomalies gets the
    reasons of all its events. Columns: date, rank, <entity_col>, events, anomalies, max_risk,
    mean_risk, top_reasons (array<string>, most frequent first) and, with ``location_col``,
    distinct_<location_col> and top_location (the location of its riskiest event).
    """
    require_columns(df, ["date", entity_col, "risk", "is_anomaly"], "top entities")
    keys = ["date", entity_col]
    aggs = [F.count(F.lit(1)).alias("events"), _anomaly_count().alias("anomalies"),
            F.max("risk").alias("max_risk"), F.avg("risk").alias("mean_risk")]
    if location_col:
        aggs += [F.countDistinct(location_col).alias(f"distinct_{location_col}"),
                 F.max_by(location_col, "risk").alias("top_location")]
    ranked = (df.groupBy(*keys).agg(*aggs)
              .withColumn("rank", F.row_number().over(
                  Window.partitionBy("date").orderBy(F.desc("max_risk"), F.desc("anomalies"), F.asc(entity_col))))
              .where(F.col("rank") <= n))
    if "reasons" in df.columns:
        top_keys = F.broadcast(ranked.select(*keys))
        exploded = (df.join(top_keys, keys)
                    .select(*keys, F.col("is_anomaly").cast("int").alias("anomalous"),
                            F.explode_outer("reasons").alias("reason"))
                    .where(F.col("reason").isNotNull()))
        reason_counts = (exploded.groupBy(*keys, "reason")
                         .agg(F.sum("anomalous").alias("in_anomalies"), F.count(F.lit(1)).alias("in_all")))
        reason_rank = Window.partitionBy(*keys).orderBy(F.desc("in_anomalies"), F.desc("in_all"), "reason")
        top_reasons = (reason_counts.withColumn("r", F.row_number().over(reason_rank))
                       .where(F.col("r") <= reasons)
                       .groupBy(*keys)
                       .agg(F.sort_array(F.collect_list(F.struct("r", "reason"))).alias("pairs"))
                       .select(*keys, F.col("pairs.reason").alias("top_reasons")))
        ranked = ranked.join(top_reasons, keys, "left")
    else:
        ranked = ranked.withColumn("top_reasons", F.lit(None).cast("array<string>"))
    columns = ["date", "rank", entity_col, "events", "anomalies", "max_risk", "mean_risk", "top_reasons"]
    if location_col:
        columns += [f"distinct_{location_col}", "top_location"]
    return ranked.select(*columns)


def _long(df: DataFrame, columns: Sequence[str]) -> DataFrame:
    """(column, value) pairs of ``columns`` as doubles, nulls and NaNs left out."""
    pairs = F.explode(F.array(*[F.struct(F.lit(c).alias("column"), F.col(c).cast("double").alias("value"))
                                for c in columns]))
    return (df.select(pairs.alias("p")).select("p.column", "p.value")
            .where(F.col("value").isNotNull() & ~F.isnan("value")))


def psi_reading(psi_col: Column | str) -> Column:
    """'stable' (< 0.1), 'moderate' (< 0.25) or 'significant' for a PSI column; null stays null."""
    value = F.col(psi_col) if isinstance(psi_col, str) else psi_col
    return (F.when(value.isNull(), F.lit(None).cast("string"))
            .when(value < PSI_MODERATE, "stable")
            .when(value < PSI_SIGNIFICANT, "moderate")
            .otherwise("significant"))


def psi(reference_df: DataFrame, current_df: DataFrame, columns: Sequence[str], bins: int = 10,
        accuracy: int = 10000) -> DataFrame:
    """Population Stability Index of each of ``columns``, current vs reference (see the module
    docstring for the formula and its reading).

    Bin edges are the reference's ``1/bins .. (bins-1)/bins`` quantiles (``percentile_approx``
    with ``accuracy``), bins are ``(-inf, e1], (e1, e2], ..., (e_k, inf)``. Columns: column, psi,
    reading, bins (bins actually used), reference_rows, current_rows. A column without reference
    or current values gets a null psi. Three shuffles whatever the number of columns: the
    quantiles, the counts per bin, the sum per column.
    """
    if bins < 2:
        raise ValueError(f"PSI needs at least 2 bins, got {bins}")
    columns = list(columns)
    if not columns:
        raise ValueError("PSI needs at least one column")
    require_columns(reference_df, columns, "PSI (reference)")
    require_columns(current_df, columns, "PSI (current)")
    probs = [i / bins for i in range(1, bins)]
    ref_long = _long(reference_df, columns)
    edges = (ref_long.groupBy("column")
             .agg(F.array_distinct(F.percentile_approx("value", probs, accuracy)).alias("edges")))
    both = (ref_long.withColumn("is_ref", F.lit(1)).withColumn("is_cur", F.lit(0))
            .unionByName(_long(current_df, columns).withColumn("is_ref", F.lit(0)).withColumn("is_cur", F.lit(1))))
    # Bins empty on both sides add 0, so only bins with rows on some side need a row here.
    # A column without reference values has no edges: its current rows are still counted (bin 0).
    cells = (both.join(F.broadcast(edges), "column", "left")
             .withColumn("bin", F.when(F.col("edges").isNull(), F.lit(0))
                         .otherwise(F.size(F.filter("edges", lambda e: F.col("value") > e))))
             .groupBy("column", "bin")
             .agg(F.sum("is_ref").alias("r"), F.sum("is_cur").alias("c"),
                  F.first(F.when(F.col("edges").isNotNull(), F.size("edges"))).alias("k")))
    per_column = (cells.groupBy("column")
                  .agg(F.sum("r").cast("long").alias("reference_rows"), F.sum("c").cast("long").alias("current_rows"),
                       (F.first("k") + 1).cast("int").alias("bins"),
                       F.collect_list(F.struct("r", "c")).alias("cells")))

    def term(acc, x):
        r = F.greatest(x["r"] / F.col("reference_rows"), F.lit(PSI_EPSILON))
        c = F.greatest(x["c"] / F.col("current_rows"), F.lit(PSI_EPSILON))
        return acc + (c - r) * F.log(c / r)

    value = F.when((F.col("reference_rows") > 0) & (F.col("current_rows") > 0),
                   F.aggregate("cells", F.lit(0.0), term))
    names = F.broadcast(reference_df.sparkSession.createDataFrame([(c,) for c in columns], "column string"))
    return (names.join(per_column, "column", "left")
            .select("column", value.alias("psi"), psi_reading(value).alias("reading"), "bins",
                    F.coalesce("reference_rows", F.lit(0)).cast("long").alias("reference_rows"),
                    F.coalesce("current_rows", F.lit(0)).cast("long").alias("current_rows")))


COMPARED_QUANTILES = (0.5, 0.9, 0.99)


@dataclass(frozen=True)
class JumpLimits:
    """When a day-over-day change is a jump (see the module docstring): ``alert_ratio`` and
    ``events_ratio`` are factors (> 1) either way, ``min_alerts`` the alert count the larger day
    must reach, ``psi`` the PSI a score must exceed.
    """

    alert_ratio: float = 2.0
    min_alerts: int = 20
    events_ratio: float = 2.0
    psi: float = 0.25


def _ratio_jump(value: Column, previous: Column, limit: float, enough: Column) -> Column:
    """True when ``value`` and ``previous`` differ by more than ``limit`` times either way (one of
    them 0 and the other not counts), and ``enough`` holds.
    """
    high, low = F.greatest(value, previous), F.least(value, previous)
    return F.coalesce(enough & (high > 0) & ((low <= 0) | (high / low > F.lit(limit))), F.lit(False))


def day_comparison(scores_df: DataFrame, day: dt.date, previous: dt.date, limits: JumpLimits,
                   psi_bins: int = 10, day_fraction: float = 1.0, previous_fraction: float = 1.0,
                   seed: int = 7) -> DataFrame:
    """``day`` against ``previous``: one row per measure, with a ``jump`` flag.

    Measures: ``events``, ``alerts`` and ``anomaly_rate`` (kind count/rate: ``value`` and
    ``previous`` are the two days' numbers, ``ratio`` = value / previous, null when previous is
    0) and each score column present (kind score: ``value``/``previous`` are the means, quantiles
    ``p50``/``p90``/``p99`` and ``previous_p50``..., ``psi`` of ``day`` against ``previous`` on
    samples of ``day_fraction`` / ``previous_fraction`` of the rows). ``rule`` says in words when
    the measure is a jump. Columns: date, compared_with, measure, kind, value, previous, ratio,
    psi, p50, p90, p99, previous_p50, previous_p90, previous_p99, jump, rule.
    """
    require_columns(scores_df, ["date", "is_anomaly", "risk", "label"], "the day-over-day comparison")
    if not previous < day:
        raise ValueError(f"the date compared with ({previous}) must be before {day}")
    counts = daily_counts(scores_df.where(F.col("date").isin(_date_lit(day), _date_lit(previous))))
    is_day = F.col("date") == _date_lit(day)

    def on(day_side: bool, column: str) -> Column:
        return F.max(F.when(is_day if day_side else ~is_day, F.col(column)))

    two = counts.agg(*[on(side, c).alias(f"{'d' if side else 'p'}_{c}") for side in (True, False)
                       for c in ("events", "anomalies", "anomaly_rate")])
    enough = F.greatest(F.coalesce("d_anomalies", F.lit(0)), F.coalesce("p_anomalies", F.lit(0))) \
        >= F.lit(limits.min_alerts)
    alert_rule = f"x{limits.alert_ratio:g} either way, with >= {limits.min_alerts} alerts on one of the days"
    measures = []
    for measure, column, kind, limit, gate, text in (
            ("events", "events", "count", limits.events_ratio, F.lit(True), f"x{limits.events_ratio:g} either way"),
            ("alerts", "anomalies", "count", limits.alert_ratio, enough, alert_rule),
            ("anomaly_rate", "anomaly_rate", "rate", limits.alert_ratio, enough, alert_rule)):
        value = F.coalesce(F.col(f"d_{column}").cast("double"), F.lit(0.0))
        before = F.coalesce(F.col(f"p_{column}").cast("double"), F.lit(0.0))
        measures.append(F.struct(F.lit(measure).alias("measure"), F.lit(kind).alias("kind"),
                                 value.alias("value"), before.alias("previous"),
                                 F.when(before > 0, value / before).alias("ratio"),
                                 _ratio_jump(value, before, limit, gate).alias("jump"), F.lit(text).alias("rule")))
    count_rows = two.select(F.explode(F.array(*measures)).alias("m")).select("m.*")

    scores = score_columns(scores_df)  # never empty: risk is required
    nothing = F.lit(None).cast("double")
    names = [f"p{round(100 * q)}" for q in COMPARED_QUANTILES]
    day_df, previous_df = for_date(scores_df, day), for_date(scores_df, previous)
    if day_fraction < 1.0:
        day_df = day_df.sample(fraction=day_fraction, seed=seed)
    if previous_fraction < 1.0:
        previous_df = previous_df.sample(fraction=previous_fraction, seed=seed)
    today = F.col("today")
    both = (_long(day_df, scores).withColumn("today", F.lit(True))
            .unionByName(_long(previous_df, scores).withColumn("today", F.lit(False))))
    stats = both.groupBy("column").agg(
        F.avg(F.when(today, F.col("value"))).alias("value"),
        F.avg(F.when(~today, F.col("value"))).alias("previous"),
        F.percentile_approx(F.when(today, F.col("value")), list(COMPARED_QUANTILES)).alias("q"),
        F.percentile_approx(F.when(~today, F.col("value")), list(COMPARED_QUANTILES)).alias("pq"))
    drift = psi(previous_df, day_df, scores, psi_bins).select("column", "psi")
    score_rows = (drift.join(stats, "column", "left")
                  .select(F.col("column").alias("measure"), F.lit("score").alias("kind"), "value", "previous",
                          nothing.alias("ratio"), "psi",
                          *[F.col("q")[i].alias(name) for i, name in enumerate(names)],
                          *[F.col("pq")[i].alias(f"previous_{name}") for i, name in enumerate(names)],
                          F.coalesce(F.col("psi") > F.lit(limits.psi), F.lit(False)).alias("jump"),
                          F.lit(f"PSI > {limits.psi:g}").alias("rule")))
    count_rows = count_rows.select(
        "measure", "kind", "value", "previous", "ratio", nothing.alias("psi"),
        *[nothing.alias(name) for name in names], *[nothing.alias(f"previous_{name}") for name in names],
        "jump", "rule")
    return count_rows.unionByName(score_rows).select(
        _date_lit(day).alias("date"), _date_lit(previous).alias("compared_with"), "*")


def expected_alerts(scores_df: DataFrame, day: dt.date, days: int = 7) -> DataFrame:
    """The expectation of the alerts on the date after ``day``: median, minimum and maximum of the
    daily alerts (and the median events and rate) over the dates with scores among the ``days``
    days up to ``day``. One row: date, for_date, days (dates with scores used), first_date,
    last_date, median_alerts, min_alerts, max_alerts, median_events, median_rate.
    """
    if days < 1:
        raise ValueError(f"the expectation needs at least 1 day, got {days}")
    counts = daily_counts(between_dates(scores_df, day - dt.timedelta(days=days - 1), day))
    return counts.agg(
        F.count(F.lit(1)).cast("int").alias("days"), F.min("date").alias("first_date"),
        F.max("date").alias("last_date"), F.median("anomalies").alias("median_alerts"),
        F.min("anomalies").alias("min_alerts"), F.max("anomalies").alias("max_alerts"),
        F.median("events").alias("median_events"), F.median("anomaly_rate").alias("median_rate"),
    ).select(_date_lit(day).alias("date"), _date_lit(day + dt.timedelta(days=1)).alias("for_date"), "*")


def summary_tables(scores_df: DataFrame, day: dt.date, *, entity_col: str, location_col: str | None,
                   history_days: int = 14, reference_days: int = 7, top: int = 20, top_reasons: int = 3,
                   histogram_bins: int = 20, psi_bins: int = 10, reference_fraction: float = 1.0,
                   current_fraction: float = 1.0, seed: int = 7,
                   features_df: DataFrame | None = None, previous: dt.date | None = None,
                   limits: JumpLimits = JumpLimits(), previous_fraction: float = 1.0,
                   expected_days: int = 7) -> dict[str, DataFrame]:
    """Every summary table of ``day`` from the scores table, by name (lazy frames).

    ``daily`` covers the ``history_days`` days up to ``day``; ``expected`` is the expectation of
    the next day's alerts from the ``expected_days`` days up to ``day``; ``compare`` (only with a
    ``previous`` date) compares ``day`` with ``previous`` and flags jumps beyond ``limits``, the
    PSI on samples of ``current_fraction`` and ``previous_fraction``; ``drift`` compares ``day`` with the
    ``reference_days`` days before it, on samples of ``reference_fraction`` and ``current_fraction``
    of their rows (absent when ``reference_days`` is 0): the scores' drift from the scores table,
    the features' from ``features_df`` (the feature table, which holds one row per scored row)
    when given, else from the feature columns the scores table carries. Every table has a
    ``date`` column (``day``, or each day for daily).
    """
    require_columns(scores_df, ["date", "event_time", entity_col, "risk", "is_anomaly"], "the summary")
    day_df = for_date(scores_df, day)
    day_lit = _date_lit(day)
    tables = {
        "daily": daily_counts(between_dates(scores_df, day - dt.timedelta(days=history_days - 1), day)),
        "hourly": anomalies_per_hour(day_df, day),
        "entities": counts_by(day_df, entity_col, distinct_col=location_col),
        "histogram": score_histogram(day_df, score_columns(scores_df), histogram_bins),
        "top_entities": top_entities(day_df, entity_col, top, top_reasons, location_col),
    }
    if location_col:
        tables["locations"] = counts_by(day_df, location_col, distinct_col=entity_col)
    tables["expected"] = expected_alerts(scores_df, day, expected_days)
    if previous is not None:
        tables["compare"] = day_comparison(scores_df, day, previous, limits, psi_bins, current_fraction,
                                           previous_fraction, seed)
    if reference_days > 0:
        first = day - dt.timedelta(days=reference_days)

        def windows(df):
            reference_df = between_dates(df, first, day - dt.timedelta(days=1))
            current_df = for_date(df, day)
            if reference_fraction < 1.0:
                reference_df = reference_df.sample(fraction=reference_fraction, seed=seed)
            if current_fraction < 1.0:
                current_df = current_df.sample(fraction=current_fraction, seed=seed)
            return reference_df, current_df

        scores = score_columns(scores_df)
        if features_df is None:
            drift = psi(*windows(scores_df), feature_columns(scores_df) + scores, psi_bins)
        else:
            drift = psi(*windows(scores_df), scores, psi_bins)
            features = feature_columns(features_df)
            if features:
                drift = drift.unionByName(psi(*windows(features_df), features, psi_bins))
        tables["drift"] = drift.select(
            day_lit.alias("date"), "column",
            F.when(F.col("column").isin(scores), "score").otherwise("feature").alias("kind"),
            "psi", "reading", "bins", "reference_rows", "current_rows",
            _date_lit(first).alias("reference_from"), _date_lit(day - dt.timedelta(days=1)).alias("reference_to"))
    return tables
