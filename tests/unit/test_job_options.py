"""The command-line contract every job shares (ARCHITECTURE.md): abbreviated options are refused."""
import pytest

from jobs import evaluate, score


@pytest.mark.parametrize("job, argv", [
    (evaluate, ["--conf", "conf/local.yaml", "--model", "logistic"]),   # not --models
    (score, ["--conf", "conf/local.yaml", "--last", "3"]),               # not --last-days
])
def test_an_abbreviated_option_is_refused(job, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        job.main(argv)
    assert exit_info.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_the_registry_option_is_spelled_the_same_in_every_job_and_models_is_its_alias():
    from jobs.common import add_registry_option, base_parser

    parser = base_parser("prog", "d")
    add_registry_option(parser)
    assert parser.parse_args(["--conf", "c", "--registry", "/r"]).registry == "/r"
    assert parser.parse_args(["--conf", "c", "--models", "/m"]).registry == "/m"
    with pytest.raises(SystemExit):
        parser.parse_args(["--conf", "c", "--model", "logistic"])


def test_the_handbook_protocol_is_one_train_command():
    import datetime as dt

    from models.training import validation_window

    d = dt.date
    split = validation_window(d(2018, 7, 25), d(2018, 7, 31), 2, 7,
                              validation_from=d(2018, 7, 25), validation_to=d(2018, 7, 31))
    # fit 7 days, a 7-day delay, validate 7 days: the training protocol shifted back 14 days
    assert split == (d(2018, 7, 11), d(2018, 7, 17), d(2018, 7, 25), d(2018, 7, 31))
    assert split.days == 7
    # the default: the last validation_days of the training window, fitted on the days before it less the gap
    assert validation_window(d(2018, 6, 1), d(2018, 6, 30), 2, 7) == (
        d(2018, 6, 1), d(2018, 6, 21), d(2018, 6, 29), d(2018, 6, 30))  # 06-22..28: the 7-day gap
    assert validation_window(d(2018, 6, 1), d(2018, 6, 7), 2, 7) is None


@pytest.mark.parametrize("kwargs, message", [
    ({"validation_from": "2018-08-01", "validation_to": "2018-08-02"}, "must end by the training window"),
    ({"validation_to": "2018-07-30"}, "needs --validation-from"),
    ({"validation_from": "2018-07-30", "validation_to": "2018-07-29"}, "is before"),
])
def test_a_validation_window_that_cannot_be_used_is_named(kwargs, message):
    import datetime as dt

    from models.training import validation_window
    from runtime.errors import InputError

    dates = {k: dt.date.fromisoformat(v) for k, v in kwargs.items()}
    with pytest.raises(InputError, match=message):
        validation_window(dt.date(2018, 7, 25), dt.date(2018, 7, 31), 2, 7, **dates)
