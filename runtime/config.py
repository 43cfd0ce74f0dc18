"""Configuration: defaults (runtime/defaults.yaml) < a conf/ file < --set overrides.

The defaults file is the schema: unknown keys and wrongly typed values are rejected with a
message naming the dotted key, so a typo never silently falls back to a default.

On top of that, each section has a frozen dataclass below (field names = the YAML keys) that
declares the field types and the rules the values must meet (enums, ranges, dates, path
templates). ``load_config`` builds every section once, so a bad value fails at load with a
ConfigError naming the dotted key, what is allowed and what was given. Default *values* live
only in defaults.yaml. ``Config`` stays a dict (``config["scoring"]["reader"]``) and offers the
typed sections as properties (``config.scoring.reader``), so a stage can be handed one section.
"""
from __future__ import annotations

import collections.abc
import copy
import dataclasses
import datetime as dt
import functools
import re
import string
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Union

import yaml


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


# Sections whose keys are the user's own (free-form mappings of strings).
_FREE_FORM = {"spark.conf"}


class _StrictLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice in one mapping (YAML would keep the last)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(f"key '{key}' appears twice (line {key_node.start_mark.line + 1})")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _yaml(text: str):
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - a SafeLoader subclass


def _load_defaults() -> dict:
    return _yaml(resources.files("runtime").joinpath("defaults.yaml").read_text())


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_value(key: str, default: Any, value: Any) -> Any:
    if type(value) is dt.date and (default is None or isinstance(default, str)):
        value = value.isoformat()   # YAML reads an unquoted 2026-01-31 as a date
    if default is None:
        if value is None or isinstance(value, (str, int, float)):
            return value
        raise ConfigError(f"config key '{key}' must be a string or null, got {_type_name(value)} {value!r}")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, str):
        if isinstance(value, str):
            return value
    elif isinstance(default, list):
        if isinstance(value, list):
            return value
    elif isinstance(default, dict):
        if isinstance(value, dict):
            return value
    raise ConfigError(
        f"config key '{key}' must be {_type_name(default)} (like the default {default!r}), "
        f"got {_type_name(value)} {value!r}"
    )


def _merge(defaults: dict, overrides: Mapping, prefix: str = "") -> dict:
    merged = copy.deepcopy(defaults)
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "(none)"
            raise ConfigError(f"unknown config key '{dotted}' (known keys here: {known})")
        default = defaults[key]
        if dotted in _FREE_FORM:
            merged[key] = dict(_check_value(dotted, default, value))
        elif isinstance(default, dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"config key '{dotted}' must be a mapping, got {_type_name(value)} {value!r}")
            merged[key] = _merge(default, value, dotted + ".")
        else:
            merged[key] = _check_value(dotted, default, value)
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``dotted.key=value``; the value is read as YAML (so 5 is an int, [1,2] a list)."""
    if "=" not in text:
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, ValueError):   # ValueError: a date-like value that is no date (2026-02-30)
        value = raw
    return key.split("."), value


def _nest(parts: list[str], value: Any) -> dict:
    out: Any = value
    for part in reversed(parts):
        out = {part: out}
    return out


# --------------------------------------------------------------------------- rules
#
# A rule checks one value (never None: a null value of an Optional field is not checked) and
# raises ConfigError naming the dotted key, the allowed values and the value given.


def _fail(key: str, allowed: str, value: Any) -> None:
    raise ConfigError(f"config key '{key}' must be {allowed}, got {value!r}")


def _either(choices: Iterable[Any]) -> str:
    names = [str(c) if c != "" else "''" for c in choices]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


@dataclass(frozen=True)
class OneOf:
    """The value is one of ``choices`` (compared in upper case with ``upper=True``)."""

    choices: tuple[str, ...]
    upper: bool = False

    def __call__(self, key: str, value: Any) -> None:
        if (value.upper() if self.upper and isinstance(value, str) else value) not in self.choices:
            _fail(key, _either(self.choices), value)


@dataclass(frozen=True)
class Range:
    """``lo <= value <= hi`` (either end may be None; ``*_open`` excludes the end)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def describe(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo}"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {self.hi}"
        return f"in {'(' if self.lo_open else '['}{self.lo}, {self.hi}{')' if self.hi_open else ']'}"

    def __call__(self, key: str, value: Any) -> None:
        ok = value == value  # NaN is never in range
        if self.lo is not None:
            ok = ok and (value > self.lo if self.lo_open else value >= self.lo)
        if self.hi is not None:
            ok = ok and (value < self.hi if self.hi_open else value <= self.hi)
        if not ok:
            _fail(key, self.describe(), value)


@dataclass(frozen=True)
class Matches:
    """The value (a string) matches ``pattern``; ``describe`` says what that means."""

    pattern: str
    describe: str

    def __call__(self, key: str, value: Any) -> None:
        if not re.fullmatch(self.pattern, value):
            _fail(key, self.describe, value)


@dataclass(frozen=True)
class IsoDate:
    """A calendar date written yyyy-MM-dd."""

    def __call__(self, key: str, value: Any) -> None:
        try:
            ok = bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)) and bool(dt.date.fromisoformat(value))
        except ValueError:
            ok = False
        if not ok:
            _fail(key, "a date like 2026-01-31 (yyyy-MM-dd)", value)


@dataclass(frozen=True)
class Template:
    """A storage location whose only placeholders are {lake} and {dataset}."""

    def __call__(self, key: str, value: Any) -> None:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError:
            names = {"?"}
        if not value or not names <= {"lake", "dataset"}:
            _fail(key, "a non-empty path whose only placeholders are {lake} and {dataset}", value)


@dataclass(frozen=True)
class Each:
    """Every item of a list meets ``rule``; ``min_items`` and ``distinct`` constrain the list."""

    rule: Optional[Callable[[str, Any], None]] = None
    min_items: int = 0
    distinct: bool = False

    def __call__(self, key: str, value: Any) -> None:
        if len(value) < self.min_items:
            _fail(key, f"a list of at least {self.min_items} item(s)", list(value))
        if self.distinct and len(set(value)) != len(value):
            _fail(key, "a list without repeated items", list(value))
        for i, item in enumerate(value):
            if self.rule is not None:
                self.rule(f"{key}[{i}]", item)


NON_EMPTY = Matches(r"(?s).+", "a non-empty string")
POSITIVE = Range(0, lo_open=True)
AT_LEAST_0 = Range(0)
AT_LEAST_1 = Range(1)
FRACTION = Range(0, 1, lo_open=True, hi_open=True)
DATE = IsoDate()
TEMPLATE = Template()
# The same grammar as features/telemetry.py (_WINDOW_RE) and runtime/sources.py (_INTERVAL).
WINDOW = Matches(r"(?i)\s*0*[1-9]\d*\s*(second|minute|hour|day|week)s?\s*",
                 "a window like '30 minutes', '1 hour', '6 hours' or '1 day'")
TRIGGER = Matches(r"available-now|\s*\d+(\.\d+)?\s*(ms|millisecond|milliseconds|s|second|seconds|min|minute|"
                  r"minutes)\s*", "an interval like '5 seconds' or 'available-now'")
CALLABLE = Matches(r"[^:]+:.+", "'module:function'")
CLASS_WEIGHT = Matches(r"balanced|none|0*[1-9]\d*(\.\d+)?|0*\.\d*[1-9]\d*",
                       "'balanced', 'none' or a positive-class weight like '10' (quoted)")


def rule(*checks: Callable[[str, Any], None]) -> Any:
    """A dataclass field (no default: defaults live in defaults.yaml) checked by ``checks``."""
    return field(metadata={"checks": checks})


# --------------------------------------------------------------------------- typed sections


@dataclass(frozen=True)
class SparkConfig:
    master: Optional[str]
    app_name: str = rule(NON_EMPTY)
    shuffle_partitions: int = rule(AT_LEAST_1)
    driver_memory: str = rule(Matches(r"(?i)(\d+([kmgtp]b?|b)?)?", "'' or a JVM size like 4g or 512m"))
    log_level: str = rule(OneOf(("ALL", "DEBUG", "ERROR", "FATAL", "INFO", "OFF", "TRACE", "WARN"), upper=True))
    extra_jars: str             # auto | "" | comma-separated jar paths
    delta_package: str = rule(Matches(r"([\w.-]+:[\w.-]+:[\w.-]+)?", "'' or Maven coordinates group:artifact:version"))
    kinesis_package: str = rule(Matches(r"([\w.-]+:[\w.-]+:[\w.-]+)?", "'' or Maven coordinates group:artifact:version"))
    conf: Mapping[str, Any]


@dataclass(frozen=True)
class AwsEndpoints:
    s3: Optional[str]
    sagemaker: Optional[str]
    sagemaker_runtime: Optional[str]
    sts: Optional[str]
    kinesis: Optional[str]
    sns: Optional[str]


@dataclass(frozen=True)
class AwsConfig:
    region: str = rule(NON_EMPTY)
    endpoint_url: Optional[str]
    endpoints: AwsEndpoints


@dataclass(frozen=True)
class StorageConfig:
    lake: str = rule(NON_EMPTY)
    format: str = rule(OneOf(("parquet", "delta")))


@dataclass(frozen=True)
class PathsConfig:
    """The raw templates; ``Config.path(name)`` fills them in."""

    raw: str = rule(TEMPLATE)
    features: str = rule(TEMPLATE)
    quarantine: str = rule(TEMPLATE)
    labels: str = rule(TEMPLATE)
    models: str = rule(TEMPLATE)
    scores: str = rule(TEMPLATE)
    summary: str = rule(TEMPLATE)
    reports: str = rule(TEMPLATE)


@dataclass(frozen=True)
class TelemetryGenerate:
    devices: int = rule(AT_LEAST_1)
    sites: int = rule(AT_LEAST_1)
    days: int = rule(AT_LEAST_1)
    start_date: str = rule(DATE)
    sessions_per_hour: float = rule(POSITIVE)
    anomaly_fraction: float = rule(Range(0, 0.5, hi_open=True))


@dataclass(frozen=True)
class TransactionsGenerate:
    customers: int = rule(AT_LEAST_1)
    terminals: int = rule(AT_LEAST_1)
    days: int = rule(AT_LEAST_1)
    start_date: str = rule(DATE)
    radius: float = rule(POSITIVE)
    simulator: str = rule(OneOf(("spark", "handbook")))


@dataclass(frozen=True)
class GenerateConfig:
    seed: int
    partitions: int = rule(AT_LEAST_1)
    telemetry: TelemetryGenerate
    transactions: TransactionsGenerate


# read_raw (runtime/storage.py RAW_FORMATS) also reads a Delta table as input.
_INPUT_FORMAT = OneOf(("auto", "parquet", "csv", "json", "delta"))


@dataclass(frozen=True)
class Charset:
    """A character encoding Python knows too (Java's names: UTF-8, ISO-8859-1, windows-1252, ...)."""

    def __call__(self, key: str, value: Any) -> None:
        import codecs

        try:
            codecs.lookup(value)
        except (LookupError, TypeError):
            _fail(key, "a character encoding such as UTF-8, ISO-8859-1 or windows-1252", value)


CHARSET = Charset()


@dataclass(frozen=True)
class TelemetryColumns:
    event_id: str
    device_id: str = rule(NON_EMPTY)
    site_id: str
    event_time: str = rule(NON_EMPTY)
    label: str


@dataclass(frozen=True)
class TransactionsColumns:
    transaction_id: str
    event_time: str = rule(NON_EMPTY)
    customer_id: str = rule(NON_EMPTY)
    terminal_id: str = rule(NON_EMPTY)
    amount: str = rule(NON_EMPTY)
    label: str


@dataclass(frozen=True)
class TelemetrySchema:
    format: str = rule(_INPUT_FORMAT)
    encoding: str = rule(CHARSET)
    timestamp_format: Optional[str]
    columns: TelemetryColumns
    measures: tuple[str, ...] = rule(Each(NON_EMPTY, min_items=1, distinct=True))


@dataclass(frozen=True)
class TransactionsSchema:
    format: str = rule(_INPUT_FORMAT)
    encoding: str = rule(CHARSET)
    timestamp_format: Optional[str]
    columns: TransactionsColumns


@dataclass(frozen=True)
class SchemaConfig:
    telemetry: TelemetrySchema
    transactions: TransactionsSchema


@dataclass(frozen=True)
class TelemetryFeatures:
    windows: tuple[str, ...] = rule(Each(WINDOW, min_items=1))
    shingle_size: int = rule(AT_LEAST_1)
    shingle_measure: str = rule(NON_EMPTY)
    zscore_window: str = rule(WINDOW)
    site_window: str = rule(WINDOW)
    zscore_cap: float = rule(POSITIVE)


@dataclass(frozen=True)
class TransactionsFeatures:
    windows_days: tuple[int, ...] = rule(Each(AT_LEAST_1, min_items=1, distinct=True))
    delay_days: int = rule(AT_LEAST_1)  # 0 would put the current row's own label in the window


@dataclass(frozen=True)
class FeaturesConfig:
    from_date: Optional[str] = rule(DATE)
    to_date: Optional[str] = rule(DATE)
    telemetry: TelemetryFeatures
    transactions: TransactionsFeatures


@dataclass(frozen=True)
class AthenaConfig:
    database: str = rule(Matches(r"[A-Za-z0-9_]+", "letters, digits and underscores"))
    partition_projection: bool
    projection_start: str = rule(DATE)


@dataclass(frozen=True)
class SummaryConfig:
    date: Optional[str] = rule(DATE)
    reference_days: int = rule(AT_LEAST_0)
    history_days: int = rule(AT_LEAST_1)
    top: int = rule(AT_LEAST_1)
    top_reasons: int = rule(AT_LEAST_0)
    histogram_bins: int = rule(AT_LEAST_1)
    psi_bins: int = rule(AT_LEAST_1)
    psi_max_rows: int = rule(AT_LEAST_1)
    export_format: str = rule(OneOf(("csv", "json")))
    jump_alert_ratio: float = rule(Range(1, lo_open=True))
    jump_min_alerts: int = rule(AT_LEAST_0)
    jump_events_ratio: float = rule(Range(1, lo_open=True))
    jump_psi: float = rule(POSITIVE)
    expected_days: int = rule(AT_LEAST_1)
    athena: AthenaConfig


@dataclass(frozen=True)
class KinesisConfig:
    stream_name: Optional[str]
    connector: str = rule(OneOf(("aws", "qubole", "auto")))
    starting_position: str = rule(Matches(r"LATEST|TRIM_HORIZON|AT_TIMESTAMP \S+",
                                          "LATEST, TRIM_HORIZON or 'AT_TIMESTAMP <time>' "
                                          "(e.g. AT_TIMESTAMP 2020-01-01T00:00:00Z)"))
    consumer_type: str = rule(OneOf(("GetRecords", "SubscribeToShard")))
    consumer_name: Optional[str]
    max_fetch_records: int = rule(AT_LEAST_1)
    shards: int = rule(AT_LEAST_1)

    def _check(self, prefix: str) -> None:
        if self.consumer_type == "SubscribeToShard" and self.connector == "qubole":
            _fail(f"{prefix}consumer_type", "GetRecords with connector qubole (it has no SubscribeToShard)",
                  self.consumer_type)


@dataclass(frozen=True)
class AlertsConfig:
    enabled: bool
    topic_arn: Optional[str]
    rate_per_second: float = rule(POSITIVE)
    max_retries: int = rule(AT_LEAST_0)
    pending_seconds: float = rule(AT_LEAST_0)
    dead_letter: Optional[str]
    timeout_seconds: float = rule(POSITIVE)


@dataclass(frozen=True)
class ReplayConfig:
    mode: str = rule(OneOf(("kinesis", "landing")))
    stream_name: Optional[str]
    batch_size: int = rule(AT_LEAST_1)     # <= 500 in kinesis mode: see _check below
    rate: float = rule(AT_LEAST_0)         # 0: as fast as possible
    partition_key: Optional[str]
    order_by: str
    max_retries: int = rule(AT_LEAST_0)
    backoff_seconds: float = rule(AT_LEAST_0)

    def _check(self, prefix: str) -> None:
        if self.mode == "kinesis" and self.batch_size > 500:
            _fail(f"{prefix}batch_size", "in [1, 500] with mode kinesis (PutRecords takes <= 500 records)",
                  self.batch_size)


@dataclass(frozen=True)
class StreamConfig:
    source: str = rule(OneOf(("landing", "kinesis")))
    landing: str = rule(TEMPLATE)
    output: str = rule(TEMPLATE)
    checkpoint: str = rule(TEMPLATE)
    dead_letter: str = rule(TEMPLATE)
    trigger: str = rule(TRIGGER)
    max_files_per_trigger: int = rule(AT_LEAST_1)
    max_record_bytes: int = rule(AT_LEAST_1)
    allowed_lateness_seconds: int = rule(AT_LEAST_0)
    max_event_skew_seconds: int = rule(AT_LEAST_0)
    warm_start: bool
    history_seconds: Optional[int] = rule(AT_LEAST_1)
    features: Optional[str] = rule(CALLABLE)
    engine: str = rule(OneOf(("auto", "incremental", "spark")))
    scorer: Optional[str] = rule(CALLABLE)
    kinesis: KinesisConfig
    alerts: AlertsConfig
    replay: ReplayConfig


@dataclass(frozen=True)
class ScoringConfig:
    risk_method: str = rule(OneOf(("stacked", "max", "noisy_or")))
    anomaly_risk: float = rule(FRACTION)
    reasons: int = rule(AT_LEAST_0)
    reader: str = rule(OneOf(("auto", "arrow", "spark")))
    writer: str = rule(OneOf(("auto", "spark")))
    rcf_attribution: str = rule(OneOf(("flagged", "all")))


# SageMaker's RCF hyperparameter ranges, also the RandomCutForest Params' (models/rcf.py).
_NUM_TREES = Range(50, 1000)
_SAMPLES_PER_TREE = Range(1, 2048)


@dataclass(frozen=True)
class RcfTrainConfig:
    num_trees: int = rule(_NUM_TREES)
    num_samples_per_tree: int = rule(_SAMPLES_PER_TREE)
    threshold_method: str = rule(OneOf(("sigma", "quantile")))
    threshold_sigmas: float = rule(Range(0, 1e6))
    threshold_quantile: float = rule(FRACTION)
    seed: int
    features: tuple[str, ...] = rule(Each(NON_EMPTY, distinct=True))
    scaling: str = rule(OneOf(("robust", "none")))


@dataclass(frozen=True)
class SomTrainConfig:
    grid_rows: int = rule(Range(1, 100))
    grid_cols: int = rule(Range(1, 100))
    epochs: int = rule(Range(1, 1000))
    max_samples: int = rule(Range(1, 10_000_000))
    threshold_quantile: float = rule(FRACTION)
    seed: int
    features: tuple[str, ...] = rule(Each(NON_EMPTY, distinct=True))


@dataclass(frozen=True)
class LogisticTrainConfig:
    reg_params: tuple[float, ...] = rule(Each(AT_LEAST_0, min_items=1))
    elastic_net_params: tuple[float, ...] = rule(Each(Range(0, 1), min_items=1))
    validation_days: int = rule(AT_LEAST_1)
    target_metric: str = rule(OneOf(("precision", "recall")))
    target_value: float = rule(Range(0, 1, lo_open=True))
    class_weight: str = rule(OneOf(("balanced",)))   # a str key: a number cannot be given today
    class_weights: tuple[str, ...] = rule(Each(CLASS_WEIGHT, distinct=True))
    binned_features: tuple[str, ...] = rule(Each(NON_EMPTY, distinct=True))
    bins: tuple[int, ...] = rule(Each(Range(0, 64), min_items=1, distinct=True))
    max_iter: int = rule(AT_LEAST_1)
    reproducible: bool


@dataclass(frozen=True)
class ThresholdConfig:
    min_recall: float = rule(Range(0, 1))
    alerts_per_day: float = rule(AT_LEAST_0)
    beta: float = rule(Range(0, 1e6, lo_open=True))
    rule: str = rule(OneOf(("target", "budget", "fbeta")))   # last: the field's name shadows rule() below it


@dataclass(frozen=True)
class GatesConfig:
    min_average_precision: float = rule(Range(0, 1))
    min_recall: Optional[float] = rule(Range(0, 1))
    min_positives: int = rule(AT_LEAST_0)


@dataclass(frozen=True)
class RegistryConfig:
    metric: str = rule(NON_EMPTY)
    tolerance: float = rule(AT_LEAST_0)


@dataclass(frozen=True)
class TrainConfig:
    model: str = rule(OneOf(("rcf", "logistic", "all")))
    train_from: Optional[str] = rule(DATE)
    train_to: Optional[str] = rule(DATE)
    test_from: Optional[str] = rule(DATE)
    test_to: Optional[str] = rule(DATE)
    validation_from: Optional[str] = rule(DATE)
    validation_to: Optional[str] = rule(DATE)
    test_days: int = rule(AT_LEAST_1)
    train_days: Optional[int] = rule(AT_LEAST_1)
    gap_days: Optional[int] = rule(AT_LEAST_0)
    k: int = rule(AT_LEAST_1)
    rcf: RcfTrainConfig
    som: SomTrainConfig
    logistic: LogisticTrainConfig
    threshold: ThresholdConfig
    gates: GatesConfig
    registry: RegistryConfig


@dataclass(frozen=True)
class MaintainConfig:
    keep: str = rule(OneOf(("all", "champions")))
    retention_hours: float = rule(AT_LEAST_0)
    margin_hours: float = rule(AT_LEAST_0)


def _positive_or_balanced(key: str, value: Any) -> None:
    if value != "balanced" and (isinstance(value, str) or value <= 0):
        _fail(key, "a number > 0, 'balanced' or null", value)


@dataclass(frozen=True)
class SageMakerConfig:
    role_arn: str
    s3_prefix: str = rule(Matches(r"(s3a?://[^/]+.*)?", "'' or an s3://bucket/prefix URI"))
    name_prefix: str = rule(Matches(r"[A-Za-z0-9](-*[A-Za-z0-9])*", "letters, digits and hyphens (SageMaker names)"))
    training_instance_type: str = rule(Matches(r"ml\..+", "a SageMaker instance type like ml.m5.xlarge"))
    training_instance_count: int = rule(AT_LEAST_1)
    max_runtime_seconds: int = rule(AT_LEAST_1)
    volume_size_gb: int = rule(AT_LEAST_1)
    endpoint_instance_type: str = rule(Matches(r"ml\..+", "a SageMaker instance type like ml.m5.large"))
    endpoint_instance_count: int = rule(AT_LEAST_1)
    endpoint_wait_seconds: int = rule(AT_LEAST_1)
    keep_endpoint: bool
    batch_size: int = rule(AT_LEAST_1)
    evaluate_with_endpoint: bool
    evaluate_sample_rows: int = rule(AT_LEAST_1)
    rcf_num_trees: Optional[int] = rule(_NUM_TREES)
    rcf_num_samples_per_tree: Optional[int] = rule(_SAMPLES_PER_TREE)
    rcf_threshold: Optional[float] = rule(POSITIVE)
    # Linear Learner's binary_classifier_model_selection_criteria
    logistic_selection_criterion: str = rule(OneOf(("accuracy", "f_beta", "precision_at_target_recall",
                                                    "recall_at_target_precision", "loss_function")))
    logistic_positive_weight: Union[float, str, None] = rule(_positive_or_balanced)
    logistic_threshold: float = rule(FRACTION)


@dataclass(frozen=True)
class ModelsConfig:
    backend: str = rule(OneOf(("embedded", "sagemaker")))
    sagemaker: SageMakerConfig

    def _check(self, prefix: str) -> None:
        if self.backend == "sagemaker":
            for key in ("role_arn", "s3_prefix"):
                if not getattr(self.sagemaker, key):
                    _fail(f"{prefix}sagemaker.{key}", "set when models.backend is sagemaker", "")


@dataclass(frozen=True)
class ServeConfig:
    host: str
    port: int = rule(Range(0, 65535))
    max_body_bytes: int = rule(AT_LEAST_1)
    max_events: int = rule(AT_LEAST_1)
    history_days: Optional[int] = rule(AT_LEAST_1)
    learn: bool
    reload_seconds: float = rule(AT_LEAST_0)
    spark_reasons: bool


# --------------------------------------------------------------------------- building a section


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_label(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(key: str, tp: Any, value: Any) -> Any:
    """``value`` as type ``tp`` (lists become tuples, mappings read-only), or a ConfigError."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            _fail(key, "a mapping", value)
        return _build(tp, value, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for member in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, member, value)
            except ConfigError:
                pass
        _fail(key, " or ".join("null" if a is type(None) else _type_label(a) for a in args), value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            _fail(key, "a list", value)
        return tuple(_coerce(f"{key}[{i}]", args[0], item) for i, item in enumerate(value))
    if tp in (Mapping, dict) or origin in (collections.abc.Mapping, dict):
        if not isinstance(value, Mapping):
            _fail(key, "a mapping", value)
        return types.MappingProxyType(dict(value))
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
        return value
    _fail(key, "a " + _type_label(tp), value)


def _build(cls: type, data: Mapping, prefix: str = "") -> Any:
    """A frozen ``cls`` from ``data`` (a merged section), every field typed and checked."""
    hints, values = _hints(cls), {}
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if f.name not in data:
            raise ConfigError(f"config key '{key}' is missing (runtime/defaults.yaml declares it)")
        value = _coerce(key, hints[f.name], data[f.name])
        if value is not None:
            for check in f.metadata.get("checks", ()):
                check(key, value)
        values[f.name] = value
    section = cls(**values)
    if hasattr(section, "_check"):
        section._check(prefix)
    return section


_T = typing.TypeVar("_T")


class _Section(typing.Generic[_T]):
    """A Config property: the typed, checked view of one top-level section."""

    def __init__(self, cls: type[_T]):
        self.cls = cls

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, config: Any, owner: type | None = None) -> _T:
        if config is None:
            return self
        if self.name not in config:
            raise ConfigError(f"config section '{self.name}' is missing")
        return _build(self.cls, config[self.name], self.name + ".")


# --------------------------------------------------------------------------- the config


DATASETS = ("telemetry", "transactions")
SECTIONS = {"spark": SparkConfig, "aws": AwsConfig, "storage": StorageConfig, "paths": PathsConfig,
            "generate": GenerateConfig, "schema": SchemaConfig, "features": FeaturesConfig,
            "summary": SummaryConfig, "stream": StreamConfig, "scoring": ScoringConfig, "train": TrainConfig,
            "maintain": MaintainConfig, "models": ModelsConfig, "serve": ServeConfig}


def _template_keys(cls: type, prefix: str) -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        tp = _hints(cls)[f.name]
        if dataclasses.is_dataclass(tp):
            keys += _template_keys(tp, f"{prefix}{f.name}.")
        elif TEMPLATE in f.metadata.get("checks", ()):
            keys.append(prefix + f.name)
    return keys


class Config(dict):
    """A validated configuration: a nested dict with dotted lookup through ``get_path``, and
    the typed sections as properties (``config.stream.alerts.rate_per_second``).

    Each property builds a frozen snapshot of the dict's section when read: hand a stage its
    section (``run(config.scoring)``) rather than keeping the whole config.
    """

    spark = _Section(SparkConfig)
    aws = _Section(AwsConfig)
    storage = _Section(StorageConfig)
    paths = _Section(PathsConfig)
    generate = _Section(GenerateConfig)
    schema = _Section(SchemaConfig)
    features = _Section(FeaturesConfig)
    summary = _Section(SummaryConfig)
    stream = _Section(StreamConfig)
    scoring = _Section(ScoringConfig)
    train = _Section(TrainConfig)
    maintain = _Section(MaintainConfig)
    models = _Section(ModelsConfig)
    serve = _Section(ServeConfig)

    @property
    def dataset(self) -> str:
        value = self["dataset"]
        if value not in DATASETS:
            _fail("dataset", _either(DATASETS), value)
        return value

    def validate(self) -> "Config":
        """Build every typed section (each checks its values); returns self."""
        self.dataset  # noqa: B018 - the check is the point
        for name in SECTIONS:
            getattr(self, name)
        return self

    def get_path(self, dotted: str) -> Any:
        node: Any = self
        for part in dotted.split("."):
            if not isinstance(node, Mapping) or part not in node:
                raise ConfigError(f"unknown config key '{dotted}'")
            node = node[part]
        return node

    def resolve(self, template: str, dataset: str | None = None) -> str:
        """``template`` with {lake} (storage.lake, no trailing slash) and {dataset} filled in."""
        return template.format(lake=self["storage"]["lake"].rstrip("/"), dataset=dataset or self["dataset"])

    def path(self, name: str, dataset: str | None = None) -> str:
        """A storage location with {lake} and {dataset} filled in: ``paths.<name>`` for a plain
        name (``path("features")``), else the dotted template key (``path("stream.output")``).
        """
        dotted = name if "." in name else f"paths.{name}"
        if dotted not in TEMPLATE_KEYS:
            raise ConfigError(f"'{name}' is not a storage location (known: {', '.join(TEMPLATE_KEYS)})")
        return self.resolve(self.get_path(dotted), dataset)


# Every key holding a {lake}/{dataset} template, e.g. paths.features, stream.checkpoint.
TEMPLATE_KEYS = tuple(key for name, cls in SECTIONS.items() for key in _template_keys(cls, name + "."))


def load_config(conf_file: str | Path | None = None, overrides: Iterable[str] = ()) -> Config:
    """Defaults, then ``conf_file`` (YAML), then each ``dotted.key=value`` override, validated."""
    merged = _load_defaults()
    if conf_file is not None:
        path = Path(conf_file)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = _yaml(path.read_text()) or {}
        except ConfigError as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        except (yaml.YAMLError, ValueError) as exc:   # ValueError: an impossible date like 2026-02-30
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(f"config file {path} must hold a mapping at the top level")
        try:
            merged = _merge(merged, data)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for text in overrides:
        parts, value = parse_override(text)
        merged = _merge(merged, _nest(parts, value))
    return Config(merged).validate()
