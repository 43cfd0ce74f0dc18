"""Threshold rules on a validation score table, their fallback, and the promotion gates."""
import numpy as np
import pytest

from models.evaluation import ScoreTable
from models.thresholds import ThresholdRule, choose_threshold, flag_metrics
from models.training import any_over_threshold, check_gates


def _table(rows):
    """A score table from (score, positives, negatives) rows given high to low."""
    scores, pos, neg = zip(*rows, strict=True)
    return ScoreTable(scores=np.array(scores, float), pos=np.array(pos), neg=np.array(neg))


# 10 positives. Flagging >= 0.9: 1 TP 0 FP (precision 1, recall 0.1);
# >= 0.7: 4 TP 6 FP (0.4, 0.4); >= 0.5: 8 TP 22 FP (0.267, 0.8); >= 0.1: 10 TP 90 FP (0.1, 1.0).
VALIDATION = _table([(0.9, 1, 0), (0.7, 3, 6), (0.5, 4, 16), (0.1, 2, 68)])


def test_unreachable_precision_at_the_recall_floor_falls_back_to_best_f1_and_says_so():
    rule = ThresholdRule(rule="target", target_metric="precision", target_value=0.8, min_recall=0.2)
    choice = choose_threshold(VALIDATION, rule, days=2)
    # F1 by hand: 0.9 -> 2*1*.1/1.1 = .182; 0.7 -> .4; 0.5 -> 2*.267*.8/1.067 = .4; 0.1 -> .182.
    # 0.7 and 0.5 tie at 0.4 (8/20 both); argmax takes the first (the higher threshold).
    assert not choice.met and choice.fallback == "fbeta"
    assert choice.threshold == 0.7
    assert (choice.precision, choice.recall, choice.flagged) == (0.4, 0.4, 10)
    assert choice.alerts_per_day == 5.0
    assert "cannot be met" in choice.message and "precision >= 0.8 at recall >= 0.2" in choice.message
    assert "best precision at recall >= 0.2 is 0.400" in choice.message
    assert "F1" in choice.message


def test_precision_target_without_floor_is_the_old_rule():
    choice = choose_threshold(VALIDATION, ThresholdRule(target_value=0.8, min_recall=0.0), days=1)
    assert choice.met and choice.threshold == 0.9 and choice.recall == 0.1


def test_reachable_precision_target_takes_the_most_recall():
    choice = choose_threshold(VALIDATION, ThresholdRule(target_value=0.25, min_recall=0.2), days=1)
    assert choice.met and choice.fallback is None and choice.threshold == 0.5 and choice.recall == 0.8


def test_recall_target_and_budget_and_fbeta():
    assert choose_threshold(VALIDATION, ThresholdRule(target_metric="recall", target_value=0.5), 1).threshold == 0.5
    budget = choose_threshold(VALIDATION, ThresholdRule(rule="budget", alerts_per_day=12), days=2)
    assert budget.met and budget.threshold == 0.7 and budget.alerts_per_day == 5.0  # 30 rows / 2 days = 15 > 12
    # F2 favours recall: 0.5 -> 5*.267*.8/(4*.267+.8) = .571 beats 0.7 -> .4
    assert choose_threshold(VALIDATION, ThresholdRule(rule="fbeta", beta=2.0), 1).threshold == 0.5


def test_budget_below_the_top_tie_falls_back():
    tied = _table([(0.9, 5, 45), (0.1, 5, 45)])
    choice = choose_threshold(tied, ThresholdRule(rule="budget", alerts_per_day=10), days=1)
    assert not choice.met and choice.fallback == "fbeta" and "even the highest score flags 50.0 rows/day" in choice.message


def test_no_positives_is_an_error():
    with pytest.raises(ValueError, match="no positive"):
        choose_threshold(_table([(0.5, 0, 3)]), ThresholdRule(), 1)


def test_flag_metrics_and_the_default_combined_flag():
    flags = any_over_threshold({"rcf": np.array([3.0, 1.0, np.nan, 0.5]), "logistic": np.array([0.1, 0.9, 0.9, 0.1])},
                               {"rcf": 2.0, "logistic": 0.5})
    assert flags.tolist() == [True, True, True, False]
    out = flag_metrics(flags, np.array([1.0, 0.0, np.nan, 1.0]), days=2)
    assert out == {"flagged": 3, "alerts_per_day": 1.5, "precision": 0.5, "recall": 0.5}


GATES = {"min_average_precision": 0.1, "min_positives": 5, "min_recall": None}


def _validation(ap, recall, positives):
    return {"average_precision": ap, "n_positive": positives, "threshold_choice": {"recall": recall}}


def test_gates_fail_with_reasons_and_pass():
    failures, warnings, metrics = check_gates(_validation(0.05, 0.1, 10), GATES, labelled=100, min_recall=0.2,
                                              has_champion=True)
    assert failures == ["validation average precision 0.050 < 0.1", "validation recall 0.100 at threshold < 0.2"]
    assert not warnings and metrics["positives"] == 10
    assert check_gates(_validation(0.3, 0.5, 10), GATES, labelled=100, min_recall=0.2, has_champion=True)[:2] == ([], [])


def test_too_few_positives_fails_with_a_champion_and_warns_without():
    failures, warnings, _ = check_gates(_validation(0.9, 0.9, 3), GATES, labelled=100, min_recall=0.2, has_champion=True)
    assert failures == ["too few labelled positives in the validation window to judge (3 < 5)"] and not warnings
    failures, warnings, _ = check_gates(_validation(0.9, 0.9, 3), GATES, labelled=100, min_recall=0.2,
                                        has_champion=False)
    assert not failures and "no champion yet" in warnings[0]


def test_no_labels_are_not_judged():
    failures, warnings, _ = check_gates({"threshold_choice": {}}, GATES, labelled=0, min_recall=0.2, has_champion=True)
    assert not failures and "not judged" in warnings[0]
