"""The SageMaker name policy's names: at most 63 characters, our prefix kept whole."""
import datetime

import pytest

from sagemaker_backend.api import training_names

NOON = datetime.datetime(2026, 1, 31, 12, 5, 9, tzinfo=datetime.timezone.utc)


def test_names_carry_the_prefix_a_utc_stamp_and_the_token():
    names = training_names("fraud-logistic", now=NOON, token="a1b2c3")
    assert names.training_job == "fraud-logistic-20260131-120509-a1b2c3"
    assert names.model == "fraud-logistic-20260131-120509-a1b2c3-mdl"
    assert names.endpoint_config == "fraud-logistic-20260131-120509-a1b2c3-cfg"
    assert names.endpoint == "fraud-logistic-20260131-120509-a1b2c3"


def test_the_longest_prefix_that_fits_gives_63_characters_and_one_more_is_refused():
    fits = "p" * 36
    assert max(len(n) for n in training_names(fits, now=NOON, token="abcdef").__dict__.values()) == 63
    with pytest.raises(ValueError, match="too long.*63.*at most 36"):
        training_names(fits + "x", now=NOON, token="abcdef")


@pytest.mark.parametrize("prefix", ["", "fraud_rcf", "-fraud", "fraud-", "fraud rcf"])
def test_a_prefix_sagemaker_would_refuse_is_refused_with_the_config_key(prefix):
    with pytest.raises(ValueError, match="models.sagemaker.name_prefix"):
        training_names(prefix)


def test_two_runs_in_the_same_second_get_different_names():
    assert training_names("fraud-rcf", now=NOON) != training_names("fraud-rcf", now=NOON)
