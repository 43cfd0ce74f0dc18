"""Training: fit the detectors on a time window, choose their thresholds on validation, evaluate
them on a later window, register them behind promotion gates.

Windows: training ``train_from..train_to``, then ``gap_days``, then the test window. The last
``train.logistic.validation_days`` days of the training window are the validation window; the
detector whose threshold is chosen there is fitted on the days before it less the gap (the
labels of the gap are not known yet when the validation window starts), then refitted on the
whole training window keeping that threshold.

Thresholds (models/thresholds.py, ``train.threshold``): the logistic model's is always chosen on
the validation window by the configured rule. The RCF's is chosen by the same rule when the
validation window holds labelled positives; without them (unsupervised data) it keeps its own
unsupervised threshold (``train.rcf.threshold_method``: mean + sigmas x std, or a quantile, of
its training scores). A rule that cannot be met falls back to the best F-beta and says so.
The SOM (``--model som``) keeps its unsupervised threshold (``train.som.threshold_quantile`` of its
training distances); the validation window reports its alerts per day and, with labels, its
average precision, AUC, precision and recall, which the gates judge.

Printed per detector: the threshold, the rule (and the fallback if used), validation precision /
recall and the expected alerts per day (validation flags / validation days); with both detectors
also the combined risk's. The combined flag needs scoring's risk formulas, which models/ may not
import: the caller passes ``combine`` (jobs/train.py builds it from scoring/plan.py, so the
numbers are exactly scoring's); without it a row is flagged when any detector reaches its
threshold (``scoring.risk_method: max`` at ``anomaly_risk`` 0.5).

The stacked risk (``scoring.risk_method: stacked``): with more than one detector and labelled
positives in the validation window, the caller's ``stack`` fits a calibrated stacker on the
validation models' scores there (jobs/train.py ``stacker_fitter``, scoring/risk.py), chooses its
threshold by the same rule, and it is registered as kind ``stacker`` (:func:`register_stacker`)
with the detector versions it combines and its test metrics, under the same champion rule.

Promotion gates (``train.gates``, :func:`check_gates`) are judged on the validation window:
average precision, recall at the threshold and enough labelled positives to judge. A version
failing one, or worse than the champion on ``train.registry.metric`` (test window) by more than
the tolerance, is registered as a challenger with the reasons; the champion stays. Too few
labelled positives with no champion yet: the version is promoted with a warning (scoring needs a
first model). No labels at all in the validation window (unsupervised data): the gates are not
judged (a warning says so) and only the champion comparison applies.

A candidate is evaluated on its own score, which each detector computes itself: the RCF through
its Spark ML ``transform`` (the forest's kernels), the logistic model through its closed-form
column (``LogisticDetector.score_column``, the expression scoring/ evaluates too).

The feature table is read at one Delta version, recorded with every registered version
(``snapshots``; models/snapshots.py): the latest, or the snapshot ``as_of`` names, so a version
can be trained again from exactly its data.

Where the data set has a card column (features/datasets.py ``card_col``), test rows of cards
already known to be compromised are left out and card precision@k is reported (the Handbook's
protocol).
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any, Callable, Mapping, NamedTuple, Optional

import numpy as np
from pyspark.ml.feature import VectorAssembler
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from features.datasets import Dataset
from features.datasets import dataset as dataset_named
from models import registry
from models.evaluation import array_table, auc_roc, average_precision, evaluate_scores, exclude_known_compromised, \
    label_int, score_table, table_threshold_metrics
from models.thresholds import ThresholdRule, choose_threshold, flag_metrics, threshold_rule
from runtime.errors import InputError
from runtime.fs import join, write_text
from runtime.progress import RunSummary, log, step
from models.snapshots import open_training_data
from runtime.storage import between_dates as between

STACKER_FILE = "stacker.json"
KINDS = {"rcf": ("rcf",), "logistic": ("logistic",), "all": ("rcf", "logistic"), "som": ("som",)}
# detectors that score an assembled vector of their inputs through their Spark ML transform
_VECTOR_KINDS = ("rcf", "som")
_VECTOR = "_score_features"

# What trains elsewhere (the SageMaker backend): called with the prepared windows instead of
# fitting here; it returns the job's exit code.
RemoteTrainer = Callable[..., int]
# The combined flag of validation rows: (scores per kind, threshold per kind[, stacker]) -> booleans.
Combiner = Callable[..., np.ndarray]
# The stacked risk: (scores per kind, labels, thresholds, choose(table) -> choice) -> (stacker, info,
# risk_of(stacker, scores, thresholds) -> stacked risk).
StackerFitter = Callable[..., tuple[Any, dict]]
STACKER = "stacker"


def resolve_windows(dates, given: Mapping[str, Optional[dt.date]], *, test_days: int, train_days: Optional[int],
                    gap_days: int) -> tuple[dt.date, dt.date, dt.date, dt.date]:
    """(train_from, train_to, test_from, test_to) from the dates present and what the user gave."""
    if not dates:
        raise InputError("the feature table is empty: run the features job first")
    dates = sorted(dates)
    test_to = given["test_to"] or dates[-1]
    test_from = given["test_from"] or test_to - dt.timedelta(days=test_days - 1)
    train_to = given["train_to"] or test_from - dt.timedelta(days=gap_days + 1)
    train_from = given["train_from"] or (train_to - dt.timedelta(days=train_days - 1) if train_days else dates[0])
    if not train_from <= train_to < test_from <= test_to:
        raise InputError(f"windows must be ordered train {train_from}..{train_to} < test {test_from}..{test_to}; "
                         f"the feature table holds {dates[0]}..{dates[-1]}")
    return train_from, train_to, test_from, test_to


def _assemble(df: DataFrame, feature_cols) -> DataFrame:
    """The RCF's inputs as one vector column (nulls kept: the forest scores such a row as null)."""
    return VectorAssembler(inputCols=list(feature_cols), outputCol=_VECTOR, handleInvalid="keep").transform(df)


def fit_rcf(train_df: DataFrame, feature_cols, conf: Mapping) -> tuple[Any, dict]:
    from models.rcf import RandomCutForest

    estimator = RandomCutForest(featuresCol=_VECTOR, numTrees=conf["num_trees"],
                                numSamplesPerTree=conf["num_samples_per_tree"],
                                thresholdMethod=conf["threshold_method"], thresholdSigmas=conf["threshold_sigmas"],
                                thresholdQuantile=conf["threshold_quantile"], featureScaling=conf["scaling"],
                                seed=conf["seed"])
    model = estimator.fit(_assemble(train_df, feature_cols))
    return model, {k: conf[k] for k in conf} | {"threshold": model.threshold}


def fit_som(train_df: DataFrame, feature_cols, conf: Mapping) -> tuple[Any, dict]:
    """The self-organising map (models/som.py) with its unsupervised threshold (``train.som``)."""
    from models.som import SelfOrganizingMap

    estimator = SelfOrganizingMap(featuresCol=_VECTOR, gridRows=conf["grid_rows"], gridCols=conf["grid_cols"],
                                  numEpochs=conf["epochs"], maxSamples=conf["max_samples"],
                                  thresholdQuantile=conf["threshold_quantile"], seed=conf["seed"])
    model = estimator.fit(_assemble(train_df, feature_cols))
    return model, {k: conf[k] for k in conf} | {"threshold": model.threshold}


def som_validation(model, validation_df: Optional[DataFrame], feature_cols, conf: Mapping, days: int) -> dict:
    """The SOM's unsupervised threshold judged on the validation window: its flags per day and, where
    the window has labelled positives, its average precision, AUC and precision/recall there.
    """
    choice = {"threshold": model.threshold, "met": True, "fallback": None, "precision": None, "recall": None,
              "flagged": None, "alerts_per_day": None,
              "rule": f"unsupervised (quantile {conf['threshold_quantile']:g} of training distances)"}
    validation = {"threshold_choice": choice, "n_positive": 0}
    if validation_df is None:
        return validation
    scored = model.transform(_assemble(validation_df, feature_cols))
    score_col = model.getScoreCol()
    pdf = scored.select(F.col(score_col).alias("s"), label_int("label").cast("double").alias("y")).toPandas()
    scores, labels = pdf["s"].to_numpy(np.float64), pdf["y"].to_numpy(np.float64)
    choice.update(flag_metrics(np.nan_to_num(scores, nan=-np.inf) > model.threshold, labels, days))
    choice["threshold"] = model.threshold
    table = score_table(scored.where(F.col("label").isNotNull()), score_col, "label")
    if table.n_pos:
        validation.update(average_precision=average_precision(table), auc_roc=auc_roc(table),
                          n=table.n_pos + table.n_neg, n_positive=table.n_pos)
    return validation


def class_weight_grid(conf: Mapping) -> list:
    """The class weights searched with the regularisation: ``class_weights`` ("balanced", "none" or
    a positive-class weight as a number), or ``class_weight`` alone when that list is empty.
    """
    grid = []
    for value in conf.get("class_weights") or [conf["class_weight"]]:
        if value in (None, "none"):
            grid.append(None)
        elif value == "balanced":
            grid.append("balanced")
        else:
            grid.append(float(value))
    return grid


def fit_logistic(train_df: DataFrame, feature_cols, conf: Mapping, gap_days: int,
                 rule: Optional[ThresholdRule] = None, *, fit_df: Optional[DataFrame] = None,
                 validation_df: Optional[DataFrame] = None) -> tuple[Any, dict]:
    """The logistic detector: chosen on ``validation_df`` fitted on ``fit_df`` (both or neither;
    neither: the last ``validation_days`` of ``train_df``), refitted on ``train_df``.
    """
    from models.logistic import LogisticError, train_logistic

    def labelled(df):
        df = df.where(F.col("label").isNotNull())
        # Spark ML adds the partitions' partial sums in the order their tasks finish: on one
        # partition the sums, hence the coefficients, are the same on every run of the same rows.
        return df.coalesce(1) if conf["reproducible"] else df

    labeled = labelled(train_df)
    if labeled.limit(1).count() == 0:
        raise InputError("the training window has no labels: the logistic model needs them "
                         "(use --model rcf for unlabeled data)")
    try:
        detector = train_logistic(
            labeled, feature_cols=feature_cols,
            reg_params=conf["reg_params"], elastic_net_params=conf["elastic_net_params"],
            validation_days=conf["validation_days"], delay_days=gap_days,
            target={conf["target_metric"]: conf["target_value"]}, class_weight=class_weight_grid(conf),
            max_iter=conf["max_iter"], log=lambda msg: log("train", f"  logistic: {msg}"),
            fit_df=None if fit_df is None else labelled(fit_df),
            binned_features=conf["binned_features"], bins=conf["bins"],
            validation_df=None if validation_df is None else labelled(validation_df),
            choose=None if rule is None else lambda table, days: choose_threshold(table, rule, days).as_dict())
    except LogisticError as exc:
        raise InputError(f"logistic model: {exc}") from None
    return detector, {**detector.params, "threshold": detector.threshold, "validation": detector.validation}


def candidate_scores(test_df: DataFrame, kind: str, model, feature_cols) -> tuple[DataFrame, str]:
    """``test_df`` plus the candidate's own score, and that column's name."""
    if kind in _VECTOR_KINDS:
        return model.transform(_assemble(test_df, feature_cols)), model.getScoreCol()
    return model.score_column(test_df, "logistic_score"), "logistic_score"


def evaluate_candidate(test_df: DataFrame, dataset: Dataset, kind: str, model, feature_cols, k: int) -> dict:
    """Metrics of one detector on the test window (None where the window has no labels)."""
    scored, score_col = candidate_scores(test_df, kind, model, feature_cols)
    card = {"card_col": dataset.card_col, "date_col": "date"} if dataset.card_col else {}
    return evaluate_scores(scored.where(F.col("label").isNotNull()), score_col, "label",
                           threshold=model.threshold, k=k, **card)


class Split(NamedTuple):
    """The selection windows (dates, inclusive): the model judged on validation is fitted on
    ``fit_from..fit_to``, then refitted on the training window keeping what validation chose.
    """

    fit_from: dt.date
    fit_to: dt.date
    validation_from: dt.date
    validation_to: dt.date

    @property
    def days(self) -> int:
        return (self.validation_to - self.validation_from).days + 1

    def as_dict(self) -> dict[str, str]:
        return {name: str(value) for name, value in self._asdict().items()}


def validation_window(train_from: dt.date, train_to: dt.date, validation_days: int, gap_days: int, *,
                      validation_from: Optional[dt.date] = None,
                      validation_to: Optional[dt.date] = None) -> Optional[Split]:
    """The selection windows, or None when nothing is left to fit on.

    Default: validation is the last ``validation_days`` of the training window, fitted on the
    days of the training window up to ``gap_days`` before it. Given ``validation_from`` (and
    ``validation_to``, default ``train_to``): that window, fitted on as many days as the training
    window has, ending ``gap_days`` before it: the training protocol shifted back (the Fraud
    Detection Handbook's model selection: fit 7 days, 7-day delay, validate 7 days, earlier than
    the final training window).
    """
    if validation_from is None and validation_to is None:
        validation_from = train_to - dt.timedelta(days=validation_days - 1)
        fit_to = validation_from - dt.timedelta(days=gap_days + 1)
        return None if fit_to < train_from else Split(train_from, fit_to, validation_from, train_to)
    validation_to = validation_to or train_to
    if validation_from is None:
        raise InputError("--validation-to needs --validation-from")
    if validation_to < validation_from:
        raise InputError(f"--validation-to {validation_to} is before --validation-from {validation_from}")
    if validation_to > train_to:
        raise InputError(f"the validation window {validation_from}..{validation_to} must end by the training "
                         f"window's last date {train_to} (its labels must be known when the model is trained)")
    fit_to = validation_from - dt.timedelta(days=gap_days + 1)
    return Split(fit_to - (train_to - train_from), fit_to, validation_from, validation_to)


def label_counts(df: DataFrame) -> tuple[int, int]:
    """(labelled rows, positive rows) of ``df``."""
    labelled, positive = df.agg(F.count(F.col("label")), F.sum(label_int("label"))).first()
    return int(labelled or 0), int(positive or 0)


def fit_rcf_on_validation(train_df: DataFrame, fit_df: DataFrame, validation_df: DataFrame, feature_cols,
                          conf: Mapping, rule: ThresholdRule, days: int) -> tuple[Any, dict, Any]:
    """The RCF with its threshold chosen by ``rule`` on the labelled ``validation_df`` (scored by a
    forest fitted on ``fit_df``), refitted on ``train_df``; (model, params, validation forest).
    """
    validation_model, _ = fit_rcf(fit_df, feature_cols, conf)
    scored = validation_model.transform(_assemble(validation_df.where(F.col("label").isNotNull()), feature_cols))
    table = score_table(scored, validation_model.getScoreCol(), "label")
    choice = choose_threshold(table, rule, days).as_dict()
    validation_model.setThreshold(choice["threshold"])
    model, params = fit_rcf(train_df, feature_cols, conf)
    unsupervised = model.threshold
    model.setThreshold(choice["threshold"])
    validation = {"average_precision": average_precision(table), "auc_roc": auc_roc(table),
                  "n": table.n_pos + table.n_neg, "n_positive": table.n_pos, "threshold_choice": choice}
    return model, {**params, "threshold": model.threshold, "unsupervised_threshold": unsupervised,
                   "validation": validation}, validation_model


def unsupervised_choice(model, validation_df: Optional[DataFrame], feature_cols, conf: Mapping, days: int) -> dict:
    """The RCF's own threshold (no labelled positives to choose on) and its alerts per validation day."""
    method = (f"mean + {conf['threshold_sigmas']:g} sigma" if conf["threshold_method"] == "sigma"
              else f"quantile {conf['threshold_quantile']:g}")
    choice = {"threshold": model.threshold, "rule": f"unsupervised ({method} of training scores)", "met": True,
              "fallback": None, "precision": None, "recall": None, "flagged": None, "alerts_per_day": None,
              "message": "no labelled positives in the validation window: the RCF keeps its unsupervised threshold"}
    if validation_df is not None:
        scored = model.transform(_assemble(validation_df, feature_cols))
        flagged = scored.where(F.col(model.getScoreCol()) >= F.lit(model.threshold)).count()
        choice.update(flagged=flagged, alerts_per_day=flagged / days)
    return choice


def check_gates(validation: Mapping[str, Any], gates: Mapping[str, Any], *, labelled: int, min_recall: float,
                has_champion: bool) -> tuple[list[str], list[str], dict]:
    """(failures, warnings, gate metrics) of one candidate's ``validation`` numbers.

    ``validation``: ``n_positive``, ``average_precision`` and ``threshold_choice`` (``recall``).
    No labelled row (``labelled`` 0): nothing is judged, a warning says so. Fewer positives than
    ``gates.min_positives``: a failure when a champion exists, else a warning (the version is
    promoted: scoring needs a first model). Otherwise average precision and recall at the
    threshold must reach ``gates.min_average_precision`` and ``min_recall``.
    """
    positives = int(validation.get("n_positive") or 0)
    ap = validation.get("average_precision")
    recall = (validation.get("threshold_choice") or {}).get("recall")
    metrics = {"labelled": labelled, "positives": positives, "average_precision": ap, "recall": recall,
               "min_positives": gates["min_positives"], "min_average_precision": gates["min_average_precision"],
               "min_recall": min_recall}
    if labelled == 0:
        return [], ["no labels in the validation window (unsupervised data): the gates were not judged"], metrics
    if positives < gates["min_positives"] or positives == 0:
        what = f"too few labelled positives in the validation window to judge ({positives} < {gates['min_positives']})"
        if has_champion:
            return [what], [], metrics
        return [], [what + "; promoted anyway because there is no champion yet"], metrics
    failures = []
    if ap is None or not ap >= gates["min_average_precision"]:
        failures.append(f"validation average precision {_num(ap)} < {gates['min_average_precision']:g}")
    if recall is None or not recall >= min_recall:
        failures.append(f"validation recall {_num(recall)} at threshold < {min_recall:g}")
    return failures, [], metrics


def any_over_threshold(scores: Mapping[str, np.ndarray], thresholds: Mapping[str, float]) -> np.ndarray:
    """The default combined flag: a row is flagged when any detector's score reaches its threshold."""
    flags = [np.nan_to_num(np.asarray(v, np.float64), nan=-np.inf) >= thresholds[k] for k, v in scores.items()]
    return np.logical_or.reduce(flags)


def validation_scores(validation_df: DataFrame, models: Mapping[str, tuple[Any, list]]) -> dict[str, np.ndarray]:
    """Each validation model's scores of the same ``validation_df`` rows, plus ``label`` (NaN: none)."""
    frame = validation_df
    columns = [label_int("label").cast("double").alias("label")]
    for kind, (model, cols) in models.items():
        if kind in _VECTOR_KINDS:
            frame = model.transform(_assemble(frame, cols)).drop(_VECTOR)
            columns.append(F.col(model.getScoreCol()).alias(kind))
        else:
            frame = model.score_column(frame, "_validation_logistic")
            columns.append(F.col("_validation_logistic").alias(kind))
    pdf = frame.select(*columns).toPandas()
    return {name: pdf[name].to_numpy(dtype=np.float64) for name in pdf.columns}


def register_stacker(registry_root: str, stacker, stacked: Mapping[str, Any], risk_of, *, test_df: DataFrame, dataset: Dataset,
                     models: Mapping[str, tuple[Any, list]], versions: Mapping[str, str], window: Mapping[str, Any],
                     conf: Mapping, snapshots: Mapping[str, Any], promoted: list, challengers: list) -> str:
    """Register the stacked risk (kind ``stacker``: its weights, threshold and the detector versions
    it combines), judged on the test window like a detector; its version. ``risk_of(stacker, scores,
    thresholds)``: the stacked risk of detector scores, as scoring computes it.
    """
    import dataclasses

    stacker = dataclasses.replace(stacker, versions=tuple(sorted((k, versions[k]) for k in models)))
    scores = validation_scores(test_df.where(F.col("label").isNotNull()), models)
    labels = scores.pop("label")
    risk = risk_of(stacker, scores, {k: models[k][0].threshold for k in scores})
    table = array_table(risk, labels)
    metrics = {"auc_roc": auc_roc(table), "average_precision": average_precision(table),
               **table_threshold_metrics(table, stacker.threshold)}
    choice = stacked["threshold_choice"]
    info = registry.register(
        registry_root, STACKER, stacker, metrics=metrics, params={**stacker.as_dict(), "validation": stacked},
        data_window=window, metric=conf["registry"]["metric"], tolerance=conf["registry"]["tolerance"],
        extra={"dataset": dataset.name, "event_id": dataset.event_id}, snapshots=snapshots,
        save=lambda model, path: write_text(join(path, STACKER_FILE), json.dumps(model.as_dict(), indent=2)))
    weights = ", ".join(f"{k} {w:+.3f}" for k, w in zip(stacker.detectors, stacker.weights, strict=True))
    log("train", f"stacker {info['version']}: weights {weights}, intercept {stacker.intercept:+.3f}; "
                 f"{describe_choice(choice)}; validation AP {stacked['average_precision']:.3f} (detectors: "
                 + ", ".join(f"{k} {v:.3f}" for k, v in stacked["detectors_average_precision"].items())
                 + f"); test AUC {metrics['auc_roc']:.3f}, AP {metrics['average_precision']:.3f}, precision at "
                   f"its threshold {_num(metrics['precision'])}")
    if info["promoted"]:
        promoted.append(f"{STACKER}={info['version']}")
    else:
        challengers.append(f"{STACKER}={info['version']} ({' / '.join(info['reasons'])})")
    return info["version"]


def _validation_detector(detector):
    """The logistic model whose validation scores chose the threshold (before the refit)."""
    if detector.validation_pipeline is None:
        return detector
    return type(detector)(detector.validation_pipeline, detector.feature_cols, detector.threshold,
                          detector.label_col, detector.time_col, steps=list(detector.validation_steps))


def _num(value, fmt: str = ".3f") -> str:
    return "n/a" if value is None or value != value else format(value, fmt)


def describe_choice(choice: Mapping[str, Any]) -> str:
    """One line: threshold, rule (and fallback), validation precision/recall, alerts per day."""
    num = _num
    rule = choice.get("rule", "")
    if choice.get("fallback"):
        rule += f", not met: fell back to best {choice['fallback'].replace('fbeta', 'F-beta')}"
    return (f"threshold {num(choice.get('threshold'), '.4f')} ({rule}); validation precision "
            f"{num(choice.get('precision'), '.3f')} recall {num(choice.get('recall'), '.3f')}, "
            f"{num(choice.get('alerts_per_day'), ',.1f')} alerts/day")


def train_detectors(spark: SparkSession, config: Mapping, *, source: str, registry_root: str,
                    model: Optional[str] = None, given: Mapping[str, Optional[dt.date]],
                    remote: Optional[RemoteTrainer] = None,
                    combine: Optional[Combiner] = None, as_of: Optional[str] = None,
                    labels: Optional[str] = None, stack: Optional[StackerFitter] = None) -> RunSummary | int:
    """Train, evaluate and register the detectors of ``config["dataset"]``; what the run did.

    ``config`` is the whole config because the data set's feature columns depend on its
    ``features`` and ``schema`` sections. ``given``: the window dates asked for (None: the
    default). ``remote(train_df=, test_df=, feature_cols=, kinds=, window=, registry_root=)``
    trains elsewhere instead (models.backend: sagemaker) and its exit code is returned.
    ``combine``: the combined flag of the validation rows (module docstring; default
    :func:`any_over_threshold`). ``as_of``: which snapshot of the feature table ``source`` to
    read (models/snapshots.py; None: its latest version); ``labels``: the labels table's path,
    whose version is recorded when it is a Delta table. ``stack``: fits the stacked risk on the
    validation window (jobs/train.py ``stacker_fitter``; None: no stacker), registered as kind
    ``stacker`` with the detector versions it combines. Returns a RunSummary with status ``challenger`` when a version
    was not promoted (``extra``: promoted and challenger versions, with the reasons).
    """
    dataset = dataset_named(config["dataset"])
    conf = config["train"]
    kinds = list(KINDS[model or conf["model"]])
    gap_days = conf["gap_days"] if conf["gap_days"] is not None else dataset.label_delay_days(config)
    data = open_training_data(spark, features=source, fmt=config["storage"]["format"], labels=labels, as_of=as_of,
                              registry_root=registry_root, kinds=kinds)
    table = data.table
    try:
        feature_cols = dataset.feature_columns(config)
        rcf_cols = dataset.rcf_feature_columns(config)
        som_cols = dataset.som_feature_columns(config) if "som" in kinds else []
    except ValueError as exc:
        raise InputError(str(exc)) from None
    inputs = {"rcf": rcf_cols, "som": som_cols}  # each detector's columns (default: feature_cols)
    dates = [r["date"] for r in table.select("date").distinct().collect()]
    train_from, train_to, test_from, test_to = resolve_windows(
        dates, given, test_days=conf["test_days"], train_days=conf["train_days"], gap_days=gap_days)
    window = {"train_from": str(train_from), "train_to": str(train_to),
              "test_from": str(test_from), "test_to": str(test_to), "gap_days": gap_days}
    log("train", f"{dataset.name}: train {train_from}..{train_to}, test {test_from}..{test_to} "
                 f"({len(feature_cols)} features) -> registry {registry_root}")
    log("train", f"reading {data.describe()}" + (f" (--as-of {as_of})" if as_of else ""))
    train_df = between(table, train_from, train_to).persist()
    test_df = between(table, test_from, test_to).persist()
    if dataset.card_col:
        # Cards already known to be compromised are not a detection (the Handbook's protocol).
        test_df = exclude_known_compromised(test_df, between(table, train_from, test_to), card_col=dataset.card_col,
                                            date_col="date", delay_days=gap_days, since=str(train_from))
    if remote is not None:
        if "som" in kinds:
            raise InputError("the SOM trains on Spark only: use models.backend: spark for --model som")
        return remote(train_df=train_df, test_df=test_df, feature_cols=feature_cols, kinds=kinds, window=window,
                      registry_root=registry_root)
    rule = threshold_rule(conf["threshold"], conf["logistic"])
    split = validation_window(train_from, train_to, conf["logistic"]["validation_days"], gap_days,
                              validation_from=given.get("validation_from"), validation_to=given.get("validation_to"))
    days = split.days if split else conf["logistic"]["validation_days"]
    validation_df = between(table, split.validation_from, split.validation_to) if split else None
    fit_df = between(table, split.fit_from, split.fit_to) if split else None
    if split:
        window.update(split.as_dict())
        log("train", f"selection: fit {split.fit_from}..{split.fit_to}, validation {split.validation_from}.."
                     f"{split.validation_to}; refit on {train_from}..{train_to}")
    labelled, positives = label_counts(validation_df) if validation_df is not None else (0, 0)
    min_recall = conf["gates"]["min_recall"] if conf["gates"]["min_recall"] is not None else rule.min_recall
    summary = RunSummary(job="train", dataset=dataset.name, dates=[str(train_from), str(test_to)])
    promoted, challengers, validators, thresholds, fitted_models = [], [], {}, {}, {}
    expected = None
    for kind in kinds:
        cols = inputs.get(kind, feature_cols)
        with step("train", f"training {kind}"):
            if kind == "som":
                fitted, params = fit_som(train_df, cols, conf["som"])
                params["validation"] = som_validation(fitted, validation_df, cols, conf["som"], days)
                validators[kind] = fitted
            elif kind == "rcf" and positives:
                fitted, params, validators[kind] = fit_rcf_on_validation(
                    train_df, fit_df, validation_df, cols, conf["rcf"], rule, days)
            elif kind == "rcf":
                fitted, params = fit_rcf(train_df, cols, conf["rcf"])
                params["validation"] = {"threshold_choice": unsupervised_choice(
                    fitted, validation_df, cols, conf["rcf"], days), "n_positive": positives}
                validators[kind] = fitted
            else:
                fitted, params = fit_logistic(train_df, cols, conf["logistic"], gap_days, rule,
                                              fit_df=fit_df, validation_df=validation_df)
                validators[kind] = _validation_detector(fitted)
        thresholds[kind] = fitted.threshold
        fitted_models[kind] = fitted
        with step("train", f"evaluating {kind} on {test_from}..{test_to}"):
            metrics = evaluate_candidate(test_df, dataset, kind, fitted, cols, conf["k"])
        choice = params["validation"]["threshold_choice"]
        if choice.get("message") and not choice.get("met", True):
            log("train", f"WARNING {kind}: {choice['message']}")
        failures, warnings, gate_metrics = check_gates(
            params["validation"], conf["gates"], labelled=labelled, min_recall=min_recall,
            has_champion=registry.champion(registry_root, kind) is not None)
        info = registry.register(
            registry_root, kind, fitted, metrics=metrics, params={**params, "feature_cols": cols},
            data_window=window, metric=conf["registry"]["metric"], tolerance=conf["registry"]["tolerance"],
            extra={"dataset": dataset.name, "event_id": dataset.event_id},
            gate_failures=failures, warnings=warnings, gate_metrics=gate_metrics, snapshots=data.snapshots)
        summary.versions[kind] = info["version"]
        headline = ", ".join(f"{m} {metrics[m]:.3f}" for m in ("auc_roc", "average_precision", "precision_at_k")
                             if isinstance(metrics.get(m), (int, float)))
        log("train", f"{kind} {info['version']}: {describe_choice(choice)}; test {headline}")
        for warning in info["warnings"]:
            log("train", f"WARNING {kind} {info['version']}: {warning}")
        if info["promoted"]:
            promoted.append(f"{kind}={info['version']}")
            log("train", f"{kind} {info['version']}: promoted to champion")
        else:
            challengers.append(f"{kind}={info['version']} ({' / '.join(info['reasons'])})")
            log("train", f"{kind} {info['version']}: CHALLENGER, champion stays {info['previous_champion']}: "
                         f"{'; '.join(info['reasons'])} (python -m jobs models --promote {info['version']} "
                         f"--model {kind} makes it champion)")
    if len(validators) > 1 and validation_df is not None:
        columns_of = {k: inputs.get(k, feature_cols) for k in validators}
        with step("train", "combined risk on the validation window"):
            scores = validation_scores(validation_df, {k: (validators[k], columns_of[k]) for k in validators})
            labels = scores.pop("label")
            stacker = stacked = None
            if stack is not None and positives:
                stacker, stacked, risk_of = stack(scores, labels, thresholds,
                                         lambda table: choose_threshold(table, rule, days).as_dict())
            flags = (combine(scores, thresholds, stacker) if combine and stacker is not None
                     else (combine or any_over_threshold)(scores, thresholds))
            combined = flag_metrics(flags, labels if positives else np.full(len(labels), np.nan), days)
        combined.update(threshold=None, rule="this run's detectors at their thresholds")
        log("train", f"combined: {describe_choice(combined).split('; ', 1)[1]}")
        expected = f"{combined['alerts_per_day']:.1f}"
        if stacker is not None:
            summary.versions[STACKER] = register_stacker(
                registry_root, stacker, stacked, risk_of, test_df=test_df, dataset=dataset,
                models={k: (fitted_models[k], columns_of[k]) for k in validators}, versions=dict(summary.versions),
                window=window, conf=conf, snapshots=data.snapshots, promoted=promoted, challengers=challengers)
    train_df.unpersist()
    test_df.unpersist()
    summary.status = "challenger" if challengers else "done"
    summary.extra = {"promoted": ",".join(promoted) or "none", "challenger": ", ".join(challengers) or "none"}
    if data.snapshots["features"].get("version") is not None:
        summary.extra["features_version"] = data.snapshots["features"]["version"]
    if expected is not None:
        summary.extra["expected_alerts_per_day"] = expected
    return summary

