import pytest

from runtime.config import ConfigError, load_config, parse_override
from runtime.spark import s3a_settings, session_settings


def test_local_conf_overrides_defaults(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("spark:\n  shuffle_partitions: 3\nstorage:\n  lake: /data/lake\n")
    config = load_config(conf)
    assert config["spark"]["shuffle_partitions"] == 3
    assert config["spark"]["app_name"] == "zen-anomaly"  # untouched default survives the merge
    assert config.path("features", "transactions") == "/data/lake/features/transactions"


def test_set_override_wins_and_is_read_as_yaml(tmp_path):
    config = load_config(None, ["spark.shuffle_partitions=5", "features.transactions.windows_days=[2, 3]"])
    assert config["spark"]["shuffle_partitions"] == 5
    assert config["features"]["transactions"]["windows_days"] == [2, 3]


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'spark\.shufle_partitions'"):
        load_config(None, ["spark.shufle_partitions=5"])


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    conf = tmp_path / "bad.yaml"
    conf.write_text("storage:\n  lakes: x\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: unknown config key 'storage\.lakes'"):
        load_config(conf)


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"'spark\.shuffle_partitions' must be int"):
        load_config(None, ["spark.shuffle_partitions=many"])
    with pytest.raises(ConfigError, match=r"'features\.transactions\.windows_days' must be list"):
        load_config(None, ["features.transactions.windows_days=7"])


def test_int_accepted_for_float_but_bool_is_not_an_int():
    config = load_config(None, ["generate.transactions.radius=4"])
    assert config["generate"]["transactions"]["radius"] == 4.0
    with pytest.raises(ConfigError, match="generate.seed"):
        load_config(None, ["generate.seed=true"])


def test_free_form_spark_conf_accepts_any_keys():
    config = load_config(None, ["spark.conf={spark.sql.adaptive.enabled: 'false'}"])
    assert session_settings(config)["spark.sql.adaptive.enabled"] == "false"


def test_bad_dataset_and_missing_file():
    with pytest.raises(ConfigError, match="'dataset' must be telemetry or transactions"):
        load_config(None, ["dataset=weather"])
    with pytest.raises(ConfigError, match="config file not found: nope.yaml"):
        load_config("nope.yaml")


@pytest.mark.parametrize("text", ["novalue", "=3", "a..b=1"])
def test_malformed_override(text):
    with pytest.raises(ConfigError, match="dotted.key=value"):
        parse_override(text)


def test_s3a_endpoint_override_and_per_service_precedence():
    aws = {"region": "eu-west-1", "endpoint_url": "http://localhost:5000", "endpoints": {"s3": None}}
    settings = s3a_settings(aws)
    assert settings["spark.hadoop.fs.s3a.endpoint"] == "http://localhost:5000"
    assert settings["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert settings["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    aws["endpoints"]["s3"] = "https://s3.example.test"
    assert s3a_settings(aws)["spark.hadoop.fs.s3a.endpoint"] == "https://s3.example.test"
    assert "spark.hadoop.fs.s3a.endpoint" not in s3a_settings({"region": "us-east-1", "endpoint_url": None,
                                                                "endpoints": {}})


def test_delta_is_on_by_default_and_off_only_without_package_and_delta_tables():
    default = session_settings(load_config(None))
    assert default["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert default["spark.jars.packages"] == "io.delta:delta-spark_2.12:3.3.2"
    emr_like = session_settings(load_config(None, ["spark.delta_package="]))
    assert emr_like["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert "spark.jars.packages" not in emr_like
    plain = session_settings(load_config(None, ["spark.delta_package=", "storage.format=parquet"]))
    assert "spark.sql.extensions" not in plain and "spark.jars.packages" not in plain


def test_a_key_given_twice_is_an_error_not_a_silent_override(tmp_path):
    conf = tmp_path / "twice.yaml"
    conf.write_text("spark:\n  shuffle_partitions: 3\nspark:\n  log_level: INFO\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml: key 'spark' appears twice \(line 3\)"):
        load_config(conf)


# --------------------------------------------------------------------------- typed sections

import dataclasses  # noqa: E402
import typing  # noqa: E402
from pathlib import Path  # noqa: E402

from runtime.config import SECTIONS, TEMPLATE_KEYS, Config, _load_defaults  # noqa: E402

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.mark.parametrize("key, value, allowed", [
    ("storage.format", "orc", "parquet or delta"),
    ("schema.telemetry.format", "avro", "auto, parquet, csv, json or delta"),
    ("generate.transactions.simulator", "numpy", "spark or handbook"),
    ("summary.export_format", "xml", "csv or json"),
    ("stream.source", "kafka", "landing or kinesis"),
    ("stream.engine", "fast", "auto, incremental or spark"),
    ("stream.kinesis.consumer_type", "Polling", "GetRecords or SubscribeToShard"),
    ("stream.replay.mode", "files", "kinesis or landing"),
    ("scoring.risk_method", "mean", "stacked, max or noisy_or"),
    ("scoring.reader", "pandas", "auto, arrow or spark"),
    ("scoring.writer", "arrow", "auto or spark"),
    ("scoring.rcf_attribution", "none", "flagged or all"),
    ("train.model", "som", "rcf, logistic or all"),
    ("train.rcf.threshold_method", "mad", "sigma or quantile"),
    ("train.rcf.scaling", "zscore", "robust or none"),
    ("models.backend", "bedrock", "embedded or sagemaker"),
])
def test_an_enum_violation_names_the_key_the_allowed_values_and_the_value(key, value, allowed):
    with pytest.raises(ConfigError) as info:
        load_config(None, [f"{key}={value}"])
    assert str(info.value) == f"config key '{key}' must be {allowed}, got {value!r}"


@pytest.mark.parametrize("override, message", [
    ("stream.alerts.rate_per_second=0", "'stream.alerts.rate_per_second' must be > 0, got 0.0"),
    ("stream.alerts.max_retries=-1", "'stream.alerts.max_retries' must be >= 0, got -1"),
    ("stream.max_record_bytes=0", "'stream.max_record_bytes' must be >= 1, got 0"),
    ("stream.allowed_lateness_seconds=-5", "'stream.allowed_lateness_seconds' must be >= 0, got -5"),
    ("stream.replay.batch_size=0", "'stream.replay.batch_size' must be >= 1, got 0"),
    ("stream.replay.rate=-1", "'stream.replay.rate' must be >= 0, got -1.0"),
    ("scoring.anomaly_risk=1", "'scoring.anomaly_risk' must be in (0, 1), got 1.0"),
    ("train.rcf.num_trees=49", "'train.rcf.num_trees' must be in [50, 1000], got 49"),
    ("train.rcf.num_samples_per_tree=4096", "'train.rcf.num_samples_per_tree' must be in [1, 2048], got 4096"),
    ("train.rcf.threshold_quantile=1.5", "'train.rcf.threshold_quantile' must be in (0, 1), got 1.5"),
    ("generate.telemetry.anomaly_fraction=0.5", "'generate.telemetry.anomaly_fraction' must be in [0, 0.5), got 0.5"),
    ("features.transactions.delay_days=0", "'features.transactions.delay_days' must be >= 1, got 0"),
    ("features.transactions.windows_days=[7, 0]", "'features.transactions.windows_days[1]' must be >= 1, got 0"),
    ("models.sagemaker.logistic_threshold=0", "'models.sagemaker.logistic_threshold' must be in (0, 1), got 0.0"),
    ("summary.top=0", "'summary.top' must be >= 1, got 0"),
    ("serve.port=70000", "'serve.port' must be in [0, 65535], got 70000"),
    ("serve.max_body_bytes=0", "'serve.max_body_bytes' must be >= 1, got 0"),
    ("serve.max_events=0", "'serve.max_events' must be >= 1, got 0"),
    ("serve.reload_seconds=-1", "'serve.reload_seconds' must be >= 0, got -1.0"),
])
def test_a_range_violation_names_the_key_the_range_and_the_value(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value) == f"config key {message}"


def test_set_alert_rate_zero_is_refused_at_load():
    with pytest.raises(ConfigError, match=r"config key 'stream\.alerts\.rate_per_second' must be > 0"):
        load_config(None, ["stream.alerts.rate_per_second=0"])


def test_a_bad_value_in_a_conf_file_is_refused_at_load(tmp_path):
    conf = tmp_path / "c.yaml"
    conf.write_text("scoring:\n  reader: fast\n")
    with pytest.raises(ConfigError, match=r"'scoring\.reader' must be auto, arrow or spark, got 'fast'"):
        load_config(conf)


@pytest.mark.parametrize("override, key", [
    ("stream.trigger=soon", "stream.trigger"),
    ("features.telemetry.windows=[1 hour, 2 fortnights]", r"features.telemetry.windows\[1\]"),
    ("summary.date=2026-02-30", "summary.date"),
    ("train.test_from=yesterday", "train.test_from"),
    ("paths.raw={lake}/{datset}", "paths.raw"),
    ("stream.kinesis.starting_position=AT_TIMESTAMP", "stream.kinesis.starting_position"),
    ("stream.scorer=mymodule", "stream.scorer"),
    ("stream.history_seconds=1.5", "stream.history_seconds"),
    ("spark.log_level=LOUD", "spark.log_level"),
])
def test_formats_and_nullable_types_are_checked(override, key):
    with pytest.raises(ConfigError, match=f"config key '{key}' must be"):
        load_config(None, [override])


def test_replay_batch_size_above_500_only_for_landing():
    with pytest.raises(ConfigError, match=r"'stream\.replay\.batch_size' must be in \[1, 500\] with mode kinesis"):
        load_config(None, ["stream.replay.batch_size=501"])
    assert load_config(None, ["stream.replay.mode=landing", "stream.replay.batch_size=5000"]).stream.replay.batch_size == 5000


def test_the_sagemaker_backend_needs_a_role_and_a_prefix():
    with pytest.raises(ConfigError, match=r"'models\.sagemaker\.role_arn' must be set when models\.backend is sagemaker"):
        load_config(None, ["models.backend=sagemaker"])


@pytest.mark.parametrize("name", ["local.yaml", "emr.yaml"])
def test_the_shipped_conf_files_load(name):
    config = load_config(CONF / name)
    assert isinstance(config, Config) and isinstance(config, dict)
    assert config.storage.format == config["storage"]["format"]


def test_typed_properties_return_the_merged_values_and_types():
    config = load_config(CONF / "emr.yaml", ["stream.alerts.rate_per_second=25", "train.rcf.num_trees=200",
                                             "features.transactions.windows_days=[2, 3]", "summary.date=2026-01-31"])
    assert config.stream.alerts.rate_per_second == 25.0 and type(config.stream.alerts.rate_per_second) is float
    assert config.train.rcf.num_trees == 200 and type(config.train.rcf.num_trees) is int
    assert config.features.transactions.windows_days == (2, 3)
    assert config.summary.date == "2026-01-31"   # an unquoted YAML date reads as the string
    assert config.scoring.reader == config["scoring"]["reader"] == "auto"
    assert config.models.backend == "sagemaker"
    assert config.models.sagemaker.role_arn == "arn:aws:iam::123456789012:role/fraud-anomaly-sagemaker-execution"
    assert config.stream.kinesis.stream_name == "fraud-anomaly-transactions"
    assert config.spark.shuffle_partitions == 400 and config.spark.master is None
    assert config.storage.lake == "s3a://your-lake-bucket/fraud-anomaly"
    assert config.dataset == "telemetry"
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.scoring.reader = "spark"


def _keys(node, prefix=""):
    out = set()
    for key, value in node.items():
        out.add(prefix + key)
        if isinstance(value, dict) and prefix + key != "spark.conf":
            out |= _keys(value, f"{prefix}{key}.")
    return out


def _fields(cls, prefix):
    out = set()
    for name, tp in typing.get_type_hints(cls).items():
        out.add(prefix + name)
        if dataclasses.is_dataclass(tp):
            out |= _fields(tp, f"{prefix}{name}.")
    return out


def test_the_typed_sections_declare_exactly_the_keys_of_defaults_yaml():
    defaults = _load_defaults()
    assert set(SECTIONS) == set(defaults) - {"dataset"}
    for name, cls in SECTIONS.items():
        assert _fields(cls, name + ".") == _keys(defaults[name], name + "."), name


def test_every_path_template_resolves_through_config_path():
    config = load_config(None, ["storage.lake=s3a://bucket/lake/", "dataset=transactions"])
    assert config.path("features") == "s3a://bucket/lake/features/transactions"
    assert config.path("stream.output") == "s3a://bucket/lake/stream/transactions"
    assert config.path("stream.checkpoint", "telemetry") == "s3a://bucket/lake/checkpoints/stream/telemetry"
    assert config.resolve("{lake}/x/{dataset}") == "s3a://bucket/lake/x/transactions"
    assert {"stream.landing", "stream.dead_letter", "paths.models"} <= set(TEMPLATE_KEYS)
    with pytest.raises(ConfigError, match="'stream.trigger' is not a storage location"):
        config.path("stream.trigger")
