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


def test_delta_only_when_configured():
    assert "spark.sql.extensions" not in session_settings(load_config(None))
    delta = session_settings(load_config(None, ["storage.format=delta"]))
    assert delta["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"


def test_a_key_given_twice_is_an_error_not_a_silent_override(tmp_path):
    conf = tmp_path / "twice.yaml"
    conf.write_text("spark:\n  shuffle_partitions: 3\nspark:\n  log_level: INFO\n")
    with pytest.raises(ConfigError, match=r"twice\.yaml: key 'spark' appears twice \(line 3\)"):
        load_config(conf)
