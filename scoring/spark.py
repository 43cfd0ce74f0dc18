"""The Spark frame adapter: :func:`score_events` scores a feature frame in one Spark pass.

Where the work happens (nothing buffered):

* in the JVM, while the features are read: the logistic probability as one closed-form column
  expression (models/logistic.py ``probability_column``), and, for the rows the logistic model
  flags on its own (a few per cent at most), its raw input values as one array;
* in one ``mapInArrow`` Python step (:class:`ArrowScorer`) that receives only the kept columns,
  that probability, those arrays and the RCF's own inputs: the scoring core
  (scoring/plan.py ``score_batch``) computes the RCF score, the risk, the flag and the reasons.

Cost per row (not flagged): reading the features, the logistic expression, the RCF score-only
kernel over its own inputs, a few numpy operations. The logistic expression is large: run with
``spark.sql.codegen.hugeMethodLimit=8000`` (runtime/spark.py sets it; see models/logistic.py) or
whole-stage codegen makes a method too big for the JIT, and its stage runs interpreted.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from models.logistic import probability_column
from scoring.champions import Champions
from scoring.plan import SCORE_COLUMNS, Columns, ScoringPlan, check_columns, score_batch, score_detector_arrays

# internal columns of the Python step's input (unlikely to clash with a feature table's)
_P, _INPUTS, _RCF = "__logistic_score", "__logistic_inputs", "__rcf_input_"
OUT_FIELDS = [T.StructField("rcf_score", T.DoubleType()), T.StructField("logistic_score", T.DoubleType()),
              T.StructField("risk", T.DoubleType()), T.StructField("reasons", T.ArrayType(T.StringType())),
              T.StructField("is_anomaly", T.BooleanType())]


def assemble(df: DataFrame, feature_cols: Sequence[str], out: str = "_score_features") -> DataFrame:
    """Add the feature columns as one vector column (nulls kept; the RCF scores them as null)."""
    check_columns(df.columns, feature_cols)
    return VectorAssembler(inputCols=list(feature_cols), outputCol=out, handleInvalid="keep").transform(df)


def score_events(features_df: DataFrame, champions: Champions, *, risk_method: str = "max",
                 anomaly_risk: float = 0.5, reasons: int = 3, rcf_attribution: str = "flagged",
                 keep: Optional[Sequence[str]] = None) -> DataFrame:
    """``features_df`` (its ``keep`` columns, in that order, when given) plus the score columns:
    ``rcf_score``, ``logistic_score`` (null without a logistic champion), ``risk`` in [0, 1],
    ``reasons``, ``is_anomaly`` (risk >= ``anomaly_risk``) and the model versions.

    See the module docstring. ``keep`` names what the caller needs next to the scores (ids,
    time, label); every kept column travels through the Python step, so keeping only what is
    needed is the fast way (the nightly job keeps no features).
    """
    plan = ScoringPlan.of(champions, risk_method=risk_method, anomaly_risk=anomaly_risk, reasons=reasons,
                          rcf_attribution=rcf_attribution)
    kept = checked_keep(plan, features_df.columns, features_df.columns if keep is None else keep)
    inputs = [F.col(c).cast("double").alias(f"{_RCF}{j}") for j, c in enumerate(plan.rcf_features)]
    terms = plan.logistic_terms
    if terms is not None:
        # One projection: Spark evaluates the probability once per row (subexpression
        # elimination) for both columns. The two large expressions go last: the optimizer's
        # constraint propagation rewrites every earlier alias's constraint for each later alias,
        # and with them first that copied the large trees once per RCF input (out of memory on
        # a filtered, joined input with 20 RCF inputs).
        p = probability_column(terms)
        wanted = F.array(*[F.col(c).cast("double") for c in terms.features])
        raw = F.when(p >= F.lit(plan.logistic_cut), wanted) if plan.reasons > 0 else F.lit(None)
        step_input = features_df.select(*kept, *inputs, p.alias(_P), raw.cast("array<double>").alias(_INPUTS))
    else:
        step_input = features_df.select(*kept, *inputs, F.lit(None).cast("double").alias(_P),
                                        F.lit(None).cast("array<double>").alias(_INPUTS))
    rcf = champions.rcf
    forest_bc = rcf.forest_broadcast(features_df.sparkSession.sparkContext) if rcf is not None else None
    schema = T.StructType([features_df.schema[c] for c in kept] + OUT_FIELDS)
    return with_versions(step_input.mapInArrow(ArrowScorer(plan, forest_bc, len(kept)), schema), kept, champions)


def checked_keep(plan: ScoringPlan, columns: Sequence[str], keep: Sequence[str]) -> list[str]:
    """``keep`` without the score columns, after checking that ``columns`` hold them and the
    models' inputs.
    """
    check_columns(columns, plan.inputs)
    kept = [c for c in keep if c not in SCORE_COLUMNS]
    check_columns(columns, kept, "to keep")
    return kept


def with_versions(scored: DataFrame, kept: Sequence[str], champions: Champions) -> DataFrame:
    """The Python step's output in the order of :func:`score_events`, the model versions added."""
    return scored.select(*kept, "rcf_score", "logistic_score", "risk", "reasons", "is_anomaly",
                         F.lit(champions.rcf_version).cast("string").alias("rcf_version"),
                         F.lit(champions.logistic_version).cast("string").alias("logistic_version"))


def forest_of(forest_bc: Any):
    """The RCF forest of a broadcast (built once per Python worker), or None without an RCF."""
    from models.rcf import forest_from_broadcast

    return forest_from_broadcast(forest_bc) if forest_bc is not None else None


def arrow_floats(column) -> np.ndarray:
    """An Arrow column as float64 (null = NaN)."""
    return column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


class ArrowScorer:
    """The Python step of :func:`score_events`: Arrow record batches in, the same rows with scores out.

    A batch holds the kept columns, the RCF's inputs as doubles, the logistic probability and
    the logistic inputs of the rows the logistic model flags (null elsewhere). The kept columns
    are passed through untouched. Runs on the executors (one Python worker per task).
    """

    def __init__(self, plan: ScoringPlan, forest_bc: Any, kept: int):
        self.plan, self.forest_bc, self.kept = plan, forest_bc, kept

    def __call__(self, batches):
        forest = forest_of(self.forest_bc)
        for batch in batches:
            yield self.score_batch(batch, forest)

    def score_batch(self, batch, forest):
        import pyarrow as pa

        plan, k = self.plan, self.kept
        d = len(plan.rcf_features)
        position = {name: k + j for j, name in enumerate(plan.rcf_features)}
        probability_col, inputs_col = batch.column(k + d), batch.column(k + d + 1)
        columns = Columns(lambda name: batch.column(position[name]), batch.num_rows, arrow_floats)

        def logistic_inputs_of(rows):
            lists = inputs_col.take(pa.array(rows))
            out = np.full((len(rows), len(plan.logistic_terms.features)), np.nan)
            for i, values in enumerate(lists):   # a few rows per batch; a null list stays NaN
                if values.is_valid:
                    out[i] = values.values.to_numpy(zero_copy_only=False)
            return out

        scored = score_batch(plan, forest, columns, logistic_inputs_of=logistic_inputs_of,
                             logistic_score=arrow_floats(probability_col) if plan.logistic_terms is not None
                             else None)
        return output_batch([batch.column(i) for i in range(k)], batch.schema.names[:k], scored,
                            logistic_score=probability_col)


def output_batch(kept: list, names: Sequence[str], scored, logistic_score=None):
    """The Python step's output (Arrow): the kept columns, then the ``OUT_FIELDS``
    (``logistic_score``: an Arrow column to pass through instead of ``scored``'s).
    """
    import pyarrow as pa

    codes, n = scored.reasons, len(scored.risk)
    lengths = np.fromiter((len(c) for c in codes), np.int32, count=n)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    reasons = pa.ListArray.from_arrays(pa.array(offsets), pa.array([x for c in codes if c for x in c], pa.string()))
    rcf = scored.rcf_score
    rcf = pa.array(rcf, mask=np.isnan(rcf)) if rcf is not None else pa.nulls(n, pa.float64())
    if logistic_score is None:
        p = scored.logistic_score
        logistic_score = pa.array(p, mask=np.isnan(p)) if p is not None else pa.nulls(n, pa.float64())
    return pa.RecordBatch.from_arrays(
        [*kept, rcf, logistic_score, pa.array(scored.risk), reasons, pa.array(scored.is_anomaly)],
        names=[*names, *[f.name for f in OUT_FIELDS]])


def with_detector_risk(df: DataFrame, plan: ScoringPlan) -> DataFrame:
    """``df`` plus ``risk``, ``reasons`` and ``is_anomaly`` from its ``rcf_score`` / ``logistic_score``
    alone (scoring/plan.py ``score_detector_arrays``; the thresholds are the plan's, a detector
    without one is left out), in one ``mapInArrow`` step.
    """
    fields = [f for f in OUT_FIELDS if f.name in ("risk", "reasons", "is_anomaly")]
    return df.mapInArrow(_DetectorRisk(plan), T.StructType(df.schema.fields + fields))


class _DetectorRisk:
    """The Python step of :func:`with_detector_risk`: the batch's columns, then risk, reasons, flag."""

    def __init__(self, plan: ScoringPlan):
        self.plan = plan

    def __call__(self, batches):
        import pyarrow as pa

        plan = self.plan
        for batch in batches:
            rcf = arrow_floats(batch.column("rcf_score")) if plan.rcf_threshold is not None else None
            logistic = arrow_floats(batch.column("logistic_score")) if plan.logistic_threshold is not None else None
            risk, is_anomaly, reasons = score_detector_arrays(plan, rcf, logistic)
            yield pa.RecordBatch.from_arrays(
                [*batch.columns, pa.array(risk), pa.array(reasons, pa.list_(pa.string())), pa.array(is_anomaly)],
                names=[*batch.schema.names, "risk", "reasons", "is_anomaly"])
