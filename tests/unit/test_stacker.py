"""The combined risk: max / noisy_or / the calibrated stacker over any detectors (numpy only)."""
import math

import numpy as np
import pytest

from jobs.train import stacker_fitter
from models.evaluation import array_table, auc_roc, average_precision
from scoring.plan import ScoringPlan, score_detector_arrays
from scoring.risk import Stacker, combine_risks, fit_stacker, logistic_risk_array, rcf_risk_array, risk_components


def logit(p):
    return np.log(p / (1 - p))


def test_max_and_noisy_or_over_any_named_detectors():
    components = {"rcf": np.array([0.2, 0.7, np.nan]), "logistic": np.array([0.6, 0.1, 0.3]),
                  "som": np.array([0.5, 0.5, 0.5])}
    assert combine_risks(components, method="max").tolist() == [0.6, 0.7, 0.5]
    # 1 - (0.8 * 0.4 * 0.5), 1 - (0.3 * 0.9 * 0.5), 1 - (1 * 0.7 * 0.5)
    assert np.allclose(combine_risks(components, method="noisy_or"), [0.84, 0.865, 0.65])
    # a detector that is absent (None) changes nothing
    assert combine_risks({**components, "other": None}, method="max").tolist() == [0.6, 0.7, 0.5]
    with pytest.raises(ValueError, match="stacker"):
        combine_risks(components, method="stacked")
    with pytest.raises(ValueError, match="method must be one of"):
        combine_risks(components, method="mean")


def test_the_stacker_is_a_logistic_model_on_the_logits_of_the_components():
    stacker = Stacker(detectors=("logistic", "som"), weights=(2.0, 0.5), intercept=-1.0, threshold=0.3)
    components = {"logistic": np.array([0.5, 0.8]), "som": np.array([0.2, np.nan]), "rcf": np.array([0.9, 0.9])}
    # row 0: -1 + 2*0 + 0.5*logit(0.2); row 1: -1 + 2*logit(0.8) + 0 (NaN counts as the threshold)
    expected = [-1 + 0.5 * math.log(0.2 / 0.8), -1 + 2 * math.log(0.8 / 0.2)]
    assert np.allclose(stacker.margin(components), expected, rtol=0, atol=1e-12)
    assert np.allclose(combine_risks(components, method="stacked", stacker=stacker),
                       [1 / (1 + math.exp(-m)) for m in expected], rtol=0, atol=1e-12)
    again = Stacker.from_dict(stacker.as_dict())
    assert again == stacker


def test_fit_stacker_recovers_the_weights_the_labels_were_drawn_with():
    rng = np.random.default_rng(5)
    n = 200_000
    a, b = rng.uniform(0.02, 0.98, n), rng.uniform(0.02, 0.98, n)
    margin = -2.0 + 1.5 * logit(a) + 0.25 * logit(b)
    labels = (rng.random(n) < 1 / (1 + np.exp(-margin))).astype(float)
    labels[::50] = np.nan  # unlabelled rows are left out
    stacker = fit_stacker({"logistic": a, "rcf": b}, labels, l2=0.0)
    assert stacker.detectors == ("logistic", "rcf")
    assert stacker.weights == pytest.approx((1.5, 0.25), abs=0.03)
    assert stacker.intercept == pytest.approx(-2.0, abs=0.03)


def test_fit_stacker_needs_both_classes():
    with pytest.raises(ValueError, match="both classes"):
        fit_stacker({"rcf": np.array([0.1, 0.9])}, np.array([0.0, 0.0]))


def detector_scores(seed=3, n=20_000):
    """A strong logistic-like score, a weak RCF-like score that sees part of what it misses, labels."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.03
    strong = 1 / (1 + np.exp(-(rng.normal(size=n) + 3.0 * y - 4.0)))
    hidden = y & (rng.random(n) < 0.3)
    weak = np.abs(rng.normal(size=n)) + 2.5 * hidden + 1.0
    return {"logistic": strong, "rcf": weak}, y.astype(float)


def choose_half(table):
    return {"threshold": 0.5}


def test_the_stacked_risk_ranks_at_least_as_well_as_its_best_detector_where_max_does_not():
    scores, labels = detector_scores()
    thresholds = {"logistic": 0.3, "rcf": 2.0}
    stacker, info, risk_of = stacker_fitter({"risk_method": "stacked"})(scores, labels, thresholds, choose_half)
    components = risk_components(scores, thresholds)
    best = max(average_precision(array_table(v, labels)) for v in components.values())
    stacked = average_precision(array_table(risk_of(stacker, scores, thresholds), labels))
    maxed = average_precision(array_table(combine_risks(components, method="max"), labels))
    assert stacked >= best > maxed
    assert info["average_precision"] == pytest.approx(stacked)
    assert stacker.threshold == 0.5 and set(stacker.detectors) == {"logistic", "rcf"}


def test_a_detector_that_only_adds_noise_is_left_out_when_the_best_one_alone_ranks_better():
    rng = np.random.default_rng(8)
    n = 5000
    y = (np.arange(n) % 20 == 0).astype(float)
    perfect = np.where(y > 0, 0.9, 0.1) + rng.uniform(-0.05, 0.05, n)
    noise = rng.uniform(0.01, 0.99, n)
    scores, thresholds = {"logistic": perfect, "rcf": noise * 4}, {"logistic": 0.5, "rcf": 2.0}
    stacker, info, risk_of = stacker_fitter({"risk_method": "stacked"})(scores, labels := y, thresholds, choose_half)
    assert average_precision(array_table(risk_of(stacker, scores, thresholds), labels)) == pytest.approx(1.0)
    assert auc_roc(array_table(risk_of(stacker, scores, thresholds), labels)) == pytest.approx(1.0)


def test_no_stacker_fitter_unless_the_method_is_stacked():
    assert stacker_fitter({"risk_method": "max"}) is None


def test_risk_components_squash_each_detector_at_its_own_threshold():
    components = risk_components({"rcf": np.array([2.0, 4.0]), "logistic": np.array([0.2, 0.5])},
                                 {"rcf": 2.0, "logistic": 0.2})
    assert components["rcf"].tolist() == pytest.approx([0.5, 1 / (1 + math.exp(-4.0))])
    assert components["logistic"].tolist() == pytest.approx([0.5, 0.8])
    assert np.array_equal(components["rcf"], rcf_risk_array(np.array([2.0, 4.0]), 2.0))
    assert np.array_equal(components["logistic"], logistic_risk_array(np.array([0.2, 0.5]), 0.2))
    with pytest.raises(ValueError, match="no risk component for detector"):
        risk_components({"unknown": np.array([1.0])}, {"unknown": 1.0})


def test_a_stacked_plan_flags_at_the_stackers_threshold_and_falls_back_to_max_without_one():
    rcf, logistic = np.array([1.0, 3.0, 1.0]), np.array([0.25, 0.05, 0.05])
    stacker = Stacker(detectors=("rcf", "logistic"), weights=(1.0, 1.0), intercept=0.0, threshold=0.4)
    plan = ScoringPlan.of_thresholds(rcf=2.0, logistic=0.2, risk_method="stacked", stacker=stacker)
    risk, flagged, reasons = score_detector_arrays(plan, rcf, logistic)
    components = risk_components({"rcf": rcf, "logistic": logistic}, {"rcf": 2.0, "logistic": 0.2})
    expected = 1 / (1 + np.exp(-(logit(components["rcf"]) + logit(components["logistic"]))))
    assert np.allclose(risk, expected, rtol=0, atol=1e-12)
    assert flagged.tolist() == (expected >= 0.4).tolist()
    plain = ScoringPlan.of_thresholds(rcf=2.0, logistic=0.2, risk_method="stacked")
    assert plain.risk_method == "max" and plain.alert_risk == 0.5
    assert score_detector_arrays(plain, rcf, logistic)[1].tolist() == [True, True, False]


def test_array_table_counts_ties_and_ignores_rows_without_a_label():
    table = array_table(np.array([0.9, 0.5, 0.5, 0.1, 0.7]), np.array([1, 0, 1, 0, np.nan]))
    assert table.scores.tolist() == [0.9, 0.5, 0.1]
    assert table.pos.tolist() == [1, 1, 0] and table.neg.tolist() == [0, 1, 1]


def test_a_stacked_flag_is_explained_by_the_detector_that_drives_it():
    from types import SimpleNamespace

    from models.logistic import LinearTerms
    from scoring.plan import score_arrays

    terms = LinearTerms(features=("amount", "terminal_risk_7d"), surrogates=(0.0, 0.0), missing_value=float("nan"),
                        means=(0.0, 0.0), scales=(1.0, 1.0), weights=(1.0, 2.0), intercept=-3.0)
    champions = SimpleNamespace(rcf=None, logistic=SimpleNamespace(threshold=0.4, terms=terms),
                                stacker=Stacker(detectors=("logistic",), weights=(2.0,), intercept=-1.0, threshold=0.3))
    plan = ScoringPlan.of(champions, risk_method="stacked")
    # the stacker alone flags where 2 logit(r) - 1 >= logit(0.3); r = sigmoid(logit(p) - logit(0.4))
    r_star = 1 / (1 + math.exp(-(math.log(0.3 / 0.7) + 1.0) / 2.0))
    expected_cut = 1 / (1 + math.exp(-(math.log(r_star / (1 - r_star)) + math.log(0.4 / 0.6))))
    assert plan.logistic_cut == pytest.approx(expected_cut, rel=1e-12)
    values = np.array([[3.0, 0.1], [1.0, 0.2], [0.5, 1.5], [-2.0, 0.0]])
    p = 1 / (1 + np.exp(-(-3.0 + values[:, 0] + 2.0 * values[:, 1])))
    risk, flagged, reasons = score_arrays(plan, None, p, rcf_attribution_of=None,
                                          logistic_inputs_of=lambda rows: values[rows])
    assert flagged.tolist() == (p >= expected_cut).tolist() and flagged.any() and not flagged.all()
    for row in np.flatnonzero(flagged):  # every flag has the logistic model's features as reasons
        assert reasons[row] and all(name.startswith("logistic:") for name in reasons[row])
    assert all(reasons[row] == [] for row in np.flatnonzero(~flagged))
