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
