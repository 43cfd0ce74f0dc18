"""One scoring path for the nightly job, the evaluation and the stream.

``score_events(features_df, champions)`` adds, to a feature table's rows (or to the ``keep``
columns of them):
``rcf_score``, ``logistic_score`` (null without a logistic champion), ``risk`` in [0, 1]
(scoring/risk.py: each detector squashed to 0.5 at its own threshold, then the max, or noisy-OR),
``is_anomaly`` (risk >= the configured cut; with max and 0.5: some detector over its threshold),
``reasons`` and the model versions.

Where the work happens (one Spark pass, nothing buffered):

* in the JVM, while the features are read: the logistic probability as one closed-form column
  expression (models/logistic.py), and, for the rows the logistic model flags on its own (a few
  per cent at most), its raw input values as one array;
* in one ``mapInArrow`` Python step that receives only the kept columns, that probability, those
  arrays and the RCF's own inputs: the RCF score (models/rcf.py kernels), the risk, the flag and
  the reason codes, with numpy (:func:`score_arrays`). ``score_pandas``, the stream's
  driver-local twin, runs the same function on a pandas frame.

:func:`score_parquet_files` is the nightly job's faster way for a local Parquet feature table:
Spark hands the table's files to the Python workers, which read them with pyarrow and score them
with the same numpy functions as ``score_pandas``; the JVM only writes what they return.

``reasons`` (array<string>, strongest first, e.g. ``rcf:bytes_down``) explains flagged rows only:
it is the empty array wherever ``is_anomaly`` is false. A flagged row's reasons are the
``reasons`` largest positive shares (scoring/risk.py ``reason_codes_array``) of the detectors that
flag it on their own (whose own risk component reaches the cut): the RCF's per-feature
attribution and the logistic model's coefficient x standardized value, each weighted by that
detector's risk component. A row flagged only by the two detectors together (noisy_or, each under
its threshold) is explained by the RCF. ``rcf_attribution="all"`` adds the RCF's shares to every
flagged row (the rows the logistic model flags alone included); the RCF computes attribution only
for the rows it explains.

Cost per row (not flagged): reading the features, the logistic expression, the RCF score-only
kernel over its own inputs, a few numpy operations. The logistic expression is large: run with
``spark.sql.codegen.hugeMethodLimit=8000`` (runtime/spark.py sets it; see models/logistic.py) or
whole-stage codegen makes a method too big for the JIT, and its stage runs interpreted.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from models import registry
from models.logistic import LinearTerms, LogisticDetector, probability, probability_array, standardized_values
from models.rcf import RandomCutForestModel
from runtime import fs
from scoring.risk import (
    combine_risk_array,
    logistic_probability_at_risk,
    logistic_risk_array,
    rcf_risk_array,
    reason_codes_array,
)

SCORE_COLUMNS = ("rcf_score", "logistic_score", "risk", "is_anomaly", "reasons", "rcf_version",
                 "logistic_version")
# internal columns of the Python step's input (unlikely to clash with a feature table's)
_P, _INPUTS, _RCF = "__logistic_score", "__logistic_inputs", "__rcf_input_"
_OUT_FIELDS = [T.StructField("rcf_score", T.DoubleType()), T.StructField("logistic_score", T.DoubleType()),
               T.StructField("risk", T.DoubleType()), T.StructField("reasons", T.ArrayType(T.StringType())),
               T.StructField("is_anomaly", T.BooleanType())]


class ScoringError(RuntimeError):
    """No model to score with, or a feature table that does not fit the models."""


@dataclass
class Champions:
    """The models a scoring run uses, with the versions written next to every score.

    ``feature_cols``: the feature table's model inputs (written next to the scores);
    ``rcf_feature_cols``: the columns the RCF was trained on, in its order, when they differ
    (None: ``feature_cols``). The logistic model carries its own list.
    """

    feature_cols: list[str]
    rcf: Any = None
    rcf_version: Optional[str] = None
    logistic: Any = None
    logistic_version: Optional[str] = None
    info: dict = field(default_factory=dict)
    rcf_feature_cols: Optional[list[str]] = None

    @property
    def versions(self) -> tuple[Optional[str], Optional[str]]:
        return self.rcf_version, self.logistic_version


_LOADERS = {"rcf": RandomCutForestModel.load, "logistic": LogisticDetector.load}


def registry_root(models_path: str, dataset: str) -> str:
    return fs.join(models_path, dataset)


def load_champions(models_path: str, dataset: str, kinds: Sequence[str] = ("rcf", "logistic")) -> Champions:
    """The current champion of each kind for ``dataset`` (a kind without one is left out)."""
    root = registry_root(models_path, dataset)
    loaded: dict[str, tuple[Any, dict]] = {}
    for kind in kinds:
        if registry.champion(root, kind) is not None:
            loaded[kind] = registry.load_version(root, kind, loader=_LOADERS[kind])
    if not loaded:
        raise ScoringError(f"no champion model under {root}: run the train job first "
                           f"(python -m jobs train --conf ... --dataset {dataset})")
    rcf, rcf_info = loaded.get("rcf", (None, None))
    logistic, log_info = loaded.get("logistic", (None, None))
    rcf_cols = list((rcf_info or {}).get("params", {}).get("feature_cols") or [])
    log_cols = list((log_info or {}).get("params", {}).get("feature_cols") or getattr(logistic, "feature_cols", []))
    feature_cols = list(dict.fromkeys([*log_cols, *rcf_cols]))  # each model's columns, in order, once
    return Champions(
        feature_cols=feature_cols,
        rcf=rcf, rcf_version=rcf_info["version"] if rcf_info else None,
        logistic=logistic, logistic_version=log_info["version"] if log_info else None,
        info={k: v[1] for k, v in loaded.items()},
        rcf_feature_cols=rcf_cols if rcf_cols and rcf_cols != feature_cols else None,
    )


def assemble(df: DataFrame, feature_cols: Sequence[str], out: str = "_score_features") -> DataFrame:
    """Add the feature columns as one vector column (nulls kept; the RCF scores them as null)."""
    _check_columns(df, feature_cols)
    return VectorAssembler(inputCols=list(feature_cols), outputCol=out, handleInvalid="keep").transform(df)


def _check_columns(df_columns: Sequence[str], feature_cols: Sequence[str], what: str = "the models need") -> None:
    columns = df_columns.columns if isinstance(df_columns, DataFrame) else df_columns
    missing = [c for c in feature_cols if c not in columns]
    if missing:
        raise ScoringError(f"the feature table lacks column(s) {what}: {', '.join(missing)}")


@dataclass(frozen=True)
class ScoringPlan:
    """What the Python side needs to score, as plain values (it travels to the executors).

    ``logistic_cut``: the probability at which the logistic model alone reaches ``anomaly_risk``
    (scoring/risk.py ``logistic_probability_at_risk``); the JVM sends a row's logistic inputs
    exactly where ``logistic_score >= logistic_cut``, and the reasons use them there.
    """

    rcf_threshold: Optional[float]
    rcf_features: tuple[str, ...]
    logistic_threshold: Optional[float]
    logistic_terms: Optional[LinearTerms]
    logistic_cut: float
    risk_method: str = "max"
    anomaly_risk: float = 0.5
    reasons: int = 3
    rcf_attribution: str = "flagged"

    @classmethod
    def of(cls, champions: Champions, *, risk_method: str = "max", anomaly_risk: float = 0.5, reasons: int = 3,
           rcf_attribution: str = "flagged") -> ScoringPlan:
        if rcf_attribution not in ("flagged", "all"):
            raise ValueError(f"rcf_attribution must be 'flagged' or 'all', got {rcf_attribution!r}")
        if risk_method not in ("max", "noisy_or"):
            raise ValueError(f"risk_method must be 'max' or 'noisy_or', got {risk_method!r}")
        rcf, logistic = champions.rcf, champions.logistic
        if rcf is None and logistic is None:
            raise ScoringError("no model to score with: the champions hold neither an RCF nor a logistic model")
        return cls(
            rcf_threshold=rcf.threshold if rcf is not None else None,
            rcf_features=tuple(champions.rcf_feature_cols or champions.feature_cols) if rcf is not None else (),
            logistic_threshold=logistic.threshold if logistic is not None else None,
            logistic_terms=logistic.terms if logistic is not None else None,
            logistic_cut=(logistic_probability_at_risk(logistic.threshold, float(anomaly_risk))
                          if logistic is not None else float("inf")),
            risk_method=risk_method, anomaly_risk=float(anomaly_risk), reasons=int(reasons),
            rcf_attribution=rcf_attribution)


def score_arrays(plan: ScoringPlan, rcf_score: Optional[np.ndarray], logistic_score: Optional[np.ndarray], *,
                 rcf_attribution_of: Callable[[np.ndarray], np.ndarray],
                 logistic_inputs_of: Callable[[np.ndarray], np.ndarray]) -> tuple:
    """``(risk, is_anomaly, reasons)`` from the detectors' scores: the one definition both paths run.

    ``rcf_score``/``logistic_score``: float arrays (NaN where missing) or None without that
    detector. ``rcf_attribution_of(rows)`` returns the RCF attribution (rows x RCF features) of the
    given row positions; ``logistic_inputs_of(rows)`` the logistic model's raw inputs (rows x its
    features, NaN = null) of rows with ``logistic_score >= plan.logistic_cut``. Both are called
    for flagged rows only. ``reasons`` is a list with one list of names per row (rows that are
    not flagged share one empty list).
    """
    risk_rcf = rcf_risk_array(rcf_score, plan.rcf_threshold) if rcf_score is not None else None
    risk_log = logistic_risk_array(logistic_score, plan.logistic_threshold) if logistic_score is not None else None
    risk = combine_risk_array(risk_rcf, risk_log, method=plan.risk_method)
    is_anomaly = risk >= plan.anomaly_risk
    n = len(risk)
    none: list[str] = []
    codes = [none] * n
    flagged = np.flatnonzero(is_anomaly)
    if plan.reasons <= 0 or not len(flagged):
        return risk, is_anomaly, codes
    with np.errstate(invalid="ignore"):  # a missing score (NaN) flags nothing
        rcf_own = risk_rcf[flagged] >= plan.anomaly_risk if risk_rcf is not None else np.zeros(len(flagged), bool)
        log_own = (logistic_score[flagged] >= plan.logistic_cut if risk_log is not None
                   else np.zeros(len(flagged), bool))
    attribution = contributions = None
    if risk_rcf is not None:
        explain = rcf_own | ~log_own if plan.rcf_attribution == "flagged" else np.ones(len(flagged), bool)
        attribution = np.full((len(flagged), len(plan.rcf_features)), np.nan)
        if explain.any():
            attribution[explain] = rcf_attribution_of(flagged[explain])
    if risk_log is not None:
        terms = plan.logistic_terms
        contributions = np.full((len(flagged), len(terms.features)), np.nan)
        if log_own.any():
            contributions[log_own] = np.asarray(terms.weights) * standardized_values(
                terms, logistic_inputs_of(flagged[log_own]))
    ranked = reason_codes_array(
        n=plan.reasons,
        rcf_attribution=attribution, rcf_features=plan.rcf_features,
        rcf_weight=risk_rcf[flagged] if risk_rcf is not None else None,
        logistic_contributions=contributions,
        logistic_features=plan.logistic_terms.features if risk_log is not None else (),
        logistic_weight=risk_log[flagged] if risk_log is not None else None)
    for i, names in zip(flagged, ranked, strict=True):
        codes[i] = names
    return risk, is_anomaly, codes


def score_events(features_df: DataFrame, champions: Champions, *, risk_method: str = "max",
                 anomaly_risk: float = 0.5, reasons: int = 3, rcf_attribution: str = "flagged",
                 keep: Optional[Sequence[str]] = None) -> DataFrame:
    """``features_df`` (its ``keep`` columns, in that order, when given) plus the score columns.

    See the module docstring. ``keep`` names what the caller needs next to the scores (ids,
    time, label); every kept column travels through the Python step, so keeping only what is
    needed is the fast way (the nightly job keeps no features).
    """
    plan = ScoringPlan.of(champions, risk_method=risk_method, anomaly_risk=anomaly_risk, reasons=reasons,
                          rcf_attribution=rcf_attribution)
    rcf, logistic = champions.rcf, champions.logistic
    _check_columns(features_df, [*plan.rcf_features, *(logistic.feature_cols if logistic is not None else [])])
    kept = [c for c in (features_df.columns if keep is None else keep) if c not in SCORE_COLUMNS]
    _check_columns(features_df, kept, "to keep")
    inputs = [F.col(c).cast("double").alias(f"{_RCF}{j}") for j, c in enumerate(plan.rcf_features)]
    if logistic is not None:
        # One projection: Spark evaluates the probability once per row (subexpression
        # elimination) for both columns. The two large expressions go last: the optimizer's
        # constraint propagation rewrites every earlier alias's constraint for each later alias,
        # and with them first that copied the large trees once per RCF input (out of memory on
        # a filtered, joined input with 20 RCF inputs).
        p = probability_of(logistic)
        wanted = F.array(*[F.col(c).cast("double") for c in logistic.feature_cols])
        raw = F.when(p >= F.lit(plan.logistic_cut), wanted) if plan.reasons > 0 else F.lit(None)
        step_input = features_df.select(*kept, *inputs, p.alias(_P), raw.cast("array<double>").alias(_INPUTS))
    else:
        step_input = features_df.select(*kept, *inputs, F.lit(None).cast("double").alias(_P),
                                        F.lit(None).cast("array<double>").alias(_INPUTS))
    forest_bc = rcf.forest_broadcast(features_df.sparkSession.sparkContext) if rcf is not None else None
    schema = T.StructType([features_df.schema[c] for c in kept] + _OUT_FIELDS)
    out = step_input.mapInArrow(ArrowScorer(plan, forest_bc, len(kept)), schema)
    return out.select(*kept, "rcf_score", "logistic_score", "risk", "reasons", "is_anomaly",
                      F.lit(champions.rcf_version).cast("string").alias("rcf_version"),
                      F.lit(champions.logistic_version).cast("string").alias("logistic_version"))


def probability_of(logistic) -> Any:
    """The logistic model's probability as a Spark column (the closed form of models/logistic.py)."""
    from models.logistic import margin

    return probability(margin(logistic.terms))


class ArrowScorer:
    """The Python step of :func:`score_events`: Arrow record batches in, the same rows with scores out.

    A batch holds the kept columns, the RCF's inputs as doubles, the logistic probability and
    the logistic inputs of the rows the logistic model flags (null elsewhere). The kept columns
    are passed through untouched. Runs on the executors (one Python worker per task); the forest
    is built once per worker from its broadcast.
    """

    def __init__(self, plan: ScoringPlan, forest_bc: Any, kept: int):
        self.plan, self.forest_bc, self.kept = plan, forest_bc, kept

    def __call__(self, batches):
        from models.rcf import forest_from_broadcast

        forest = forest_from_broadcast(self.forest_bc) if self.forest_bc is not None else None
        for batch in batches:
            yield self.score_batch(batch, forest)

    def score_batch(self, batch, forest):
        import pyarrow as pa

        plan, k = self.plan, self.kept
        n = batch.num_rows
        d = len(plan.rcf_features)
        probability_col, inputs_col = batch.column(k + d), batch.column(k + d + 1)
        rcf_score = X = None
        if forest is not None:
            X = np.empty((n, d))
            for j in range(d):
                X[:, j] = batch.column(k + j).to_numpy(zero_copy_only=False)
            rcf_score = forest.score(X)
        p = probability_col.to_numpy(zero_copy_only=False).astype(np.float64) \
            if plan.logistic_terms is not None else None

        def logistic_inputs_of(rows):
            lists = inputs_col.take(pa.array(rows))
            out = np.full((len(rows), len(plan.logistic_terms.features)), np.nan)
            for i, values in enumerate(lists):   # a few rows per batch; a null list stays NaN
                if values.is_valid:
                    out[i] = values.values.to_numpy(zero_copy_only=False)
            return out

        risk, is_anomaly, codes = score_arrays(
            plan, rcf_score, p, rcf_attribution_of=lambda rows: forest.score_and_attribution(X[rows])[1],
            logistic_inputs_of=logistic_inputs_of)
        return _output_batch([batch.column(i) for i in range(k)], batch.schema.names[:k], rcf_score,
                             probability_col, risk, codes, is_anomaly)


def _output_batch(kept: list, names: Sequence[str], rcf_score, logistic_score, risk, codes, is_anomaly):
    """The Python step's output: the kept columns, then the ``_OUT_FIELDS`` (Arrow)."""
    import pyarrow as pa

    n = len(risk)
    lengths = np.fromiter((len(c) for c in codes), np.int32, count=n)
    offsets = np.zeros(n + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    reasons = pa.ListArray.from_arrays(pa.array(offsets), pa.array([x for c in codes if c for x in c], pa.string()))
    rcf = pa.array(rcf_score, mask=np.isnan(rcf_score)) if rcf_score is not None else pa.nulls(n, pa.float64())
    if logistic_score is None:
        logistic_score = pa.nulls(n, pa.float64())
    elif isinstance(logistic_score, np.ndarray):
        logistic_score = pa.array(logistic_score, mask=np.isnan(logistic_score))
    return pa.RecordBatch.from_arrays([*kept, rcf, logistic_score, pa.array(risk), reasons, pa.array(is_anomaly)],
                                      names=[*names, *[f.name for f in _OUT_FIELDS]])


def score_parquet_files(spark, files: Sequence[tuple[str, str]], champions: Champions, *, table_schema: T.StructType,
                        keep: Sequence[str], partition_col: str = "date", risk_method: str = "max",
                        anomaly_risk: float = 0.5, reasons: int = 3, rcf_attribution: str = "flagged",
                        batch_rows: int = 65_536) -> DataFrame:
    """:func:`score_events` of a Parquet table given as its files: the Python workers read them.

    ``files``: ``(path, partition value)`` per file (the value of ``partition_col``, which the
    files do not hold; runtime/storage.py ``partition_files``), local paths or ``file:`` URIs;
    ``table_schema`` the table's Spark schema. Spark tasks of about
    ``spark.sql.files.maxPartitionBytes`` of whole files each: a task's Python worker reads
    the columns the models and ``keep`` need with pyarrow, in batches of ``batch_rows``, scores
    them with the same functions as :func:`score_pandas` (the logistic closed form in numpy, the
    RCF kernels, :func:`score_arrays`) and hands the kept columns and the scores to Spark, which
    writes them. The JVM never builds a row of the ~90 feature columns: on 2 cores this scores
    10M rows in about half the time of :func:`score_events` (see README "Performance"). The
    result has :func:`score_events`'s columns in its order, and the same values (a test holds
    the two paths to each other). :func:`write_scored_files` also leaves the writing to them.
    """
    scorer = _parquet_scorer(spark, champions, table_schema, keep, partition_col, batch_rows,
                             dict(risk_method=risk_method, anomaly_risk=anomaly_risk, reasons=reasons,
                                  rcf_attribution=rcf_attribution))
    kept = scorer.kept
    schema = T.StructType([table_schema[c] for c in kept] + _OUT_FIELDS)
    return _listing(spark, files).mapInArrow(scorer, schema).select(
        *kept, "rcf_score", "logistic_score", "risk", "reasons", "is_anomaly",
        F.lit(champions.rcf_version).cast("string").alias("rcf_version"),
        F.lit(champions.logistic_version).cast("string").alias("logistic_version"))


def write_scored_files(spark, files: Sequence[tuple[str, str]], champions: Champions, table: str, *,
                       table_schema: T.StructType, keep: Sequence[str], columns: Sequence[str],
                       plain_columns: Sequence[str] = (), partition_col: str = "date", risk_method: str = "max",
                       anomaly_risk: float = 0.5, reasons: int = 3, rcf_attribution: str = "flagged",
                       batch_rows: int = 65_536, notify=None) -> dict[str, tuple[int, int]]:
    """:func:`score_parquet_files`, and the Python workers write the scores too: into the local
    Parquet table ``table``, partitioned by ``partition_col``; returns ``{value: (rows, anomalies)}``.
    First it cleans up after runs that died mid-write (runtime/storage.py ``sweep_staging``),
    telling ``notify`` (a function of one line) what it did.

    Each task writes its rows of a partition value to one Parquet file (pyarrow; the codec of
    ``spark.sql.parquet.compression.codec``, dictionary encoding but for ``plain_columns``)
    under a staging folder in ``table``; when every task has succeeded, the driver swaps the
    written partitions in (runtime/storage.py ``replace_partitions``): the dynamic partition
    overwrite of Spark's writer, and a failed run leaves the table as it was. ``columns``: the
    table's columns in order (``keep`` and the score columns). Spark reads the files as it reads
    its own (the same column types; timestamps as INT64 microseconds in UTC). The JVM then only
    hands out file names: it no longer turns 10M Arrow rows into its own rows and encodes
    them again, which was most of its work in the score job (README "Performance").
    """
    import shutil
    import uuid

    from runtime.storage import STAGING_PREFIX, local_table_path, replace_partitions, sweep_staging

    root = local_table_path(spark, table)
    if root is None:
        raise ScoringError(f"the Python workers write local Parquet tables only, not {table}; "
                           "write the scores through Spark (scoring.writer: spark)")
    codec = arrow_codec(spark)
    if codec is None:
        raise ScoringError("spark.sql.parquet.compression.codec "
                           f"{spark.conf.get('spark.sql.parquet.compression.codec')!r} has no pyarrow twin; "
                           "write the scores through Spark (scoring.writer: spark)")
    scorer = _parquet_scorer(spark, champions, table_schema, keep, partition_col, batch_rows,
                             dict(risk_method=risk_method, anomaly_risk=anomaly_risk, reasons=reasons,
                                  rcf_attribution=rcf_attribution))
    missing = [c for c in columns if c not in (*scorer.kept, *SCORE_COLUMNS)]
    if missing:
        raise ScoringError(f"cannot write column(s) {', '.join(missing)}: neither kept nor a score")
    for line in sweep_staging(root, partition_col):
        if notify is not None:
            notify(line)
    job = uuid.uuid4().hex
    staging = os.path.join(root, f"{STAGING_PREFIX}{job}")
    os.makedirs(staging)
    writer = ScoresWriter(scorer, staging, job, [c for c in columns if c != partition_col],
                          champions.versions, plain_columns, codec)
    try:
        written = _listing(spark, files).mapInArrow(
            writer, "value string, path string, rows long, anomalies long").collect()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    staged: dict[str, list[str]] = {}
    counts: dict[str, tuple[int, int]] = {}
    for row in written:
        staged.setdefault(row["value"], []).append(row["path"])
        rows, anomalies = counts.get(row["value"], (0, 0))
        counts[row["value"]] = (rows + row["rows"], anomalies + row["anomalies"])
    replace_partitions(root, partition_col, staged, staging)
    return counts


# spark.sql.parquet.compression.codec -> (pyarrow's name, Spark's file name extension)
# (not brotli: Spark reads it only with a codec library EMR and pyspark do not ship)
_CODECS = {"none": ("none", ""), "uncompressed": ("none", ""), "snappy": ("snappy", ".snappy"),
           "gzip": ("gzip", ".gz"), "zstd": ("zstd", ".zstd")}


def arrow_codec(spark) -> Optional[tuple[str, str]]:
    """The codec's name in pyarrow and Spark's file name extension for it, or None (lzo, lz4,
    brotli: Spark's writer only).
    """
    return _CODECS.get(str(spark.conf.get("spark.sql.parquet.compression.codec", "snappy")).lower())


def _parquet_scorer(spark, champions: Champions, table_schema: T.StructType, keep: Sequence[str], partition_col: str,
                    batch_rows: int, options: dict) -> "ParquetScorer":
    plan = ScoringPlan.of(champions, **options)
    rcf, logistic = champions.rcf, champions.logistic
    columns = table_schema.fieldNames()
    needed = [*plan.rcf_features, *(logistic.feature_cols if logistic is not None else [])]
    _check_columns(columns, needed)
    kept = [c for c in keep if c not in SCORE_COLUMNS]
    _check_columns(columns, kept, "to keep")
    from pyspark.sql.pandas.types import to_arrow_type

    kept_types = [to_arrow_type(table_schema[c].dataType) for c in kept]
    read = list(dict.fromkeys([*(c for c in kept if c != partition_col), *needed]))
    forest_bc = rcf.forest_broadcast(spark.sparkContext) if rcf is not None else None
    return ParquetScorer(plan, forest_bc, kept, kept_types, read, partition_col, batch_rows)


def _listing(spark, files: Sequence[tuple[str, str]]) -> DataFrame:
    return spark.createDataFrame(
        spark.sparkContext.parallelize([(str(path), str(value)) for path, value in files], _tasks(spark, files)),
        "path string, value string")


def _tasks(spark, files: Sequence[tuple[str, str]]) -> int:
    """Tasks for ``files``: about spark.sql.files.maxPartitionBytes of them each (as Spark's own
    reader splits), at least one per core while there are files. A task costs its Python worker
    ~0.1 s before it starts (PySpark re-reads the directories of the zips and jars on its path),
    so one task per small file would waste a tenth of the work on it.
    """
    if not files:
        return 1
    per_task = _size(spark.conf.get("spark.sql.files.maxPartitionBytes", "128m"))
    total = sum(os.path.getsize(path[len("file:"):] if path.startswith("file:") else path) for path, _ in files)
    cores = spark.sparkContext.defaultParallelism
    return max(1, min(len(files), max(cores, -(-total // per_task))))


def _size(text: str) -> int:
    """Bytes of a Spark size setting ("128m", "134217728b", "134217728")."""
    text = str(text).strip().lower()
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    text = text[:-1] if text.endswith("b") and len(text) > 1 and not text[-2].isdigit() else text.rstrip("b")
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


class ParquetScorer:
    """The Python step of :func:`score_parquet_files`: ``(path, partition value)`` rows in, scored rows out."""

    def __init__(self, plan: ScoringPlan, forest_bc: Any, kept: Sequence[str], kept_types: Sequence[Any],
                 read: Sequence[str], partition_col: str, batch_rows: int):
        self.plan, self.forest_bc, self.kept, self.kept_types = plan, forest_bc, list(kept), list(kept_types)
        self.read, self.partition_col, self.batch_rows = list(read), partition_col, int(batch_rows)

    def __call__(self, listings):
        forest = self.forest()
        for path, value in self.files(listings):
            yield from self.score_file(path, value, forest)

    def forest(self):
        from models.rcf import forest_from_broadcast

        return forest_from_broadcast(self.forest_bc) if self.forest_bc is not None else None

    @staticmethod
    def files(listings):
        for listing in listings:
            yield from zip(listing.column(0).to_pylist(), listing.column(1).to_pylist(), strict=True)

    def score_file(self, path: str, value: str, forest):
        import pyarrow as pa
        import pyarrow.parquet as pq

        local = path[len("file:"):] if path.startswith("file:") else path
        # Spark writes timestamps as INT96 by default: read them as microseconds, Spark's unit
        parquet = pq.ParquetFile(local, coerce_int96_timestamp_unit="us")
        missing = [c for c in self.read if c not in parquet.schema_arrow.names]
        if missing:
            raise ScoringError(f"{path} lacks column(s) {', '.join(missing)}")
        constant = pa.array([value], pa.string()).cast(self.kept_types[self.kept.index(self.partition_col)])[0] \
            if self.partition_col in self.kept else None
        for batch in parquet.iter_batches(batch_size=self.batch_rows, columns=self.read, use_threads=False):
            yield self.score_batch(batch, constant, forest)

    def score_batch(self, batch, constant, forest):
        import pyarrow as pa

        plan, n = self.plan, batch.num_rows
        cache: dict[str, np.ndarray] = {}

        def values(name):
            if name not in cache:
                cache[name] = batch.column(name).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
            return cache[name]

        terms = plan.logistic_terms
        p = probability_array(terms, lambda j: values(terms.features[j]), n) if terms is not None else None
        rcf_score = X = None
        if forest is not None:
            X = np.empty((n, len(plan.rcf_features)))
            for j, name in enumerate(plan.rcf_features):
                X[:, j] = values(name)
            rcf_score = forest.score(X)
        risk, is_anomaly, codes = score_arrays(
            plan, rcf_score, p, rcf_attribution_of=lambda rows: forest.score_and_attribution(X[rows])[1],
            logistic_inputs_of=lambda rows: np.column_stack([values(c)[rows] for c in terms.features]))
        kept = [pa.repeat(constant, n) if name == self.partition_col else batch.column(name).cast(kind)
                for name, kind in zip(self.kept, self.kept_types, strict=True)]
        return _output_batch(kept, self.kept, rcf_score, p, risk, codes, is_anomaly)


class ScoresWriter:
    """The Python step of :func:`write_scored_files`: ``(path, partition value)`` rows in, the
    scores written to Parquet files under ``staging/task-<attempt>/``, one row per file out:
    ``(value, path, rows, anomalies)``. Only the files of the attempts that succeed reach the
    driver, so a retried or killed attempt's files are never swapped in. Rows are written in
    row groups of ``row_group_rows`` (Spark's are as large: one or two per file here).
    """

    def __init__(self, scorer: ParquetScorer, staging: str, job: str, columns: Sequence[str],
                 versions: tuple[Optional[str], Optional[str]], plain_columns: Sequence[str], codec: tuple[str, str],
                 row_group_rows: int = 1 << 20):
        self.scorer, self.staging, self.job, self.columns = scorer, staging, job, list(columns)
        self.versions, self.plain, self.codec = versions, set(plain_columns), codec
        self.row_group_rows = int(row_group_rows)

    def __call__(self, listings):
        import contextlib

        import pyarrow as pa
        import pyarrow.compute as pc
        from pyspark import TaskContext

        context = TaskContext.get()
        attempt = context.taskAttemptId() if context is not None else os.getpid()
        part = context.partitionId() if context is not None else 0
        forest, scorer = self.scorer.forest(), self.scorer
        files: dict[str, _PartFile] = {}
        with contextlib.ExitStack() as stack:
            for path, value in scorer.files(listings):
                for batch in scorer.score_file(path, value, forest):
                    batch = self.finish(batch)
                    if value not in files:
                        files[value] = stack.enter_context(self.open(attempt, part, len(files), value, batch.schema))
                    files[value].add(batch, pc.sum(batch.column("is_anomaly")).as_py() or 0)
        yield pa.RecordBatch.from_arrays(
            [pa.array(list(files), pa.string()), pa.array([f.path for f in files.values()], pa.string()),
             pa.array([f.rows for f in files.values()], pa.int64()),
             pa.array([f.anomalies for f in files.values()], pa.int64())],
            names=["value", "path", "rows", "anomalies"])

    def open(self, attempt: int, part: int, n: int, value: str, schema) -> "_PartFile":
        """The file of this task's rows of partition ``value``. Its folders are made one at a
        time under the staging folder, so a task still running after its run failed (and the
        driver removed the staging folder) fails instead of making it again.
        """
        import pyarrow as pa

        from runtime.storage import partition_folder

        task = os.path.join(self.staging, f"task-{attempt}")
        if not os.path.isdir(task):
            os.mkdir(task)
        folder = os.path.join(task, partition_folder(self.scorer.partition_col, value))
        os.mkdir(folder)
        compression, extension = self.codec
        name = os.path.join(folder, f"part-{part:05d}-{self.job}.c{n:03d}{extension}.parquet")
        # Parquet names a list's values <column>.list.element; dictionary encoding is chosen per leaf
        dictionary = [f"{f.name}.list.element" if pa.types.is_list(f.type) else f.name
                      for f in schema if f.name not in self.plain]
        return _PartFile(name, schema, compression, dictionary, self.row_group_rows)

    def finish(self, batch):
        """A scored batch as the table's columns, in order, the model versions added."""
        import pyarrow as pa

        rcf_version, logistic_version = self.versions
        extra = {"rcf_version": rcf_version, "logistic_version": logistic_version}
        n = batch.num_rows
        arrays = [(pa.nulls(n, pa.string()) if extra[c] is None else pa.repeat(pa.scalar(extra[c], pa.string()), n))
                  if c in extra else batch.column(c) for c in self.columns]
        return pa.RecordBatch.from_arrays(arrays, names=self.columns)


class _PartFile:
    """One Parquet file a :class:`ScoresWriter` task writes, buffering batches into row groups."""

    def __init__(self, path: str, schema, compression: str, dictionary: list[str], row_group_rows: int):
        import pyarrow.parquet as pq

        self.path, self.rows, self.anomalies = path, 0, 0
        self.row_group_rows, self.pending, self.pending_rows = row_group_rows, [], 0
        self.writer = pq.ParquetWriter(path, schema, compression=compression, use_dictionary=dictionary)

    def add(self, batch, anomalies: int) -> None:
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        self.rows += batch.num_rows
        self.anomalies += anomalies
        if self.pending_rows >= self.row_group_rows:
            self.flush()

    def flush(self) -> None:
        import pyarrow as pa

        if self.pending:
            self.writer.write_table(pa.Table.from_batches(self.pending), row_group_size=self.row_group_rows)
            self.pending, self.pending_rows = [], 0

    def __enter__(self) -> "_PartFile":
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is None:
                self.flush()
        finally:
            self.writer.close()


def score_pandas(frame, champions: Champions, *, risk_method: str = "max", anomaly_risk: float = 0.5,
                 reasons: int = 3, rcf_attribution: str = "flagged"):
    """:func:`score_events` on a pandas frame, computed on the driver with numpy (no Spark job).

    The same definition: the RCF kernels of the model, the logistic closed form
    (models/logistic.py ``probability_array``) and :func:`score_arrays`;
    ``tests/unit/test_scoring.py`` checks it against :func:`score_events`. For micro-batches that
    are on the driver already (the stream's incremental engine): a few hundred thousand rows
    score in about a second on one core, where a Spark pass would ship them to a Python worker
    and back. Returns a new frame: ``frame``'s columns plus ``rcf_score``, ``logistic_score``,
    ``risk``, ``reasons``, ``is_anomaly`` and the versions (a missing score is NaN).
    """
    plan = ScoringPlan.of(champions, risk_method=risk_method, anomaly_risk=anomaly_risk, reasons=reasons,
                          rcf_attribution=rcf_attribution)
    rcf, logistic = champions.rcf, champions.logistic
    _check_columns(frame.columns, [*plan.rcf_features, *(logistic.feature_cols if logistic is not None else [])])
    n = len(frame)
    out = frame.drop(columns=[c for c in SCORE_COLUMNS if c in frame.columns]).copy()
    rcf_score = logistic_score = X = None
    if logistic is not None:
        names = logistic.terms.features
        logistic_score = probability_array(
            logistic.terms, lambda j: frame[names[j]].to_numpy(dtype=np.float64, na_value=np.nan), n)
    if rcf is not None:
        X = np.empty((n, len(plan.rcf_features)))
        for j, c in enumerate(plan.rcf_features):
            X[:, j] = frame[c].to_numpy(dtype=np.float64, na_value=np.nan)
        rcf_score = _rcf_in_threads(rcf.forest, X)

    def logistic_inputs_of(rows):
        return np.column_stack([frame[c].iloc[rows].to_numpy(dtype=np.float64, na_value=np.nan)
                                for c in logistic.feature_cols])

    risk, is_anomaly, codes = score_arrays(
        plan, rcf_score, logistic_score,
        rcf_attribution_of=lambda rows: rcf.forest.score_and_attribution(X[rows])[1],
        logistic_inputs_of=logistic_inputs_of)
    out["rcf_score"] = rcf_score if rcf_score is not None else np.full(n, np.nan)
    out["logistic_score"] = logistic_score if logistic_score is not None else np.full(n, np.nan)
    out["risk"] = risk
    out["reasons"] = codes
    out["is_anomaly"] = is_anomaly
    out["rcf_version"] = champions.rcf_version
    out["logistic_version"] = champions.logistic_version
    return out


def _rcf_in_threads(forest, X, min_rows: int = 20_000):
    """RCF scores of ``X``, in row chunks on all cores for large ``X``.

    The compiled kernels release the GIL, so threads score chunks side by side; every row's
    number is the same as in one call (rows are scored independently).
    """
    workers = min(os.cpu_count() or 1, 8)
    if workers < 2 or len(X) < min_rows:
        return forest.score(X)
    with ThreadPoolExecutor(workers) as pool:
        return np.concatenate(list(pool.map(forest.score, np.array_split(X, workers))))


def champion_scorer(config) -> Callable[[DataFrame], DataFrame]:
    """For the stream: a ``score(features_df)`` that uses the champions current when it is made."""
    dataset = config["dataset"]
    champions = load_champions(config.path("models"), dataset)
    scoring = config["scoring"]

    def score(features_df: DataFrame) -> DataFrame:
        return score_events(features_df, champions, risk_method=scoring["risk_method"],
                            anomaly_risk=scoring["anomaly_risk"], reasons=scoring["reasons"],
                            rcf_attribution=scoring["rcf_attribution"])

    def score_frame(frame):
        return score_pandas(frame, champions, risk_method=scoring["risk_method"],
                            anomaly_risk=scoring["anomaly_risk"], reasons=scoring["reasons"],
                            rcf_attribution=scoring["rcf_attribution"])

    score.versions = champions.versions  # type: ignore[attr-defined]
    score.pandas = score_frame  # type: ignore[attr-defined]  # the driver-local twin (score_pandas)
    return score
