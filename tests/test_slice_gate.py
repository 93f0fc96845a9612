"""The slice gate on predictions built for it: better overall, worse on one slice, not blessed.

No model here: the labels, both models' predictions and the slice keys are made up so that the
outcome is known, and the metrics the gate compares are checked against NumPy's own.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from pipeline.definition import Slice
from pipeline.evaluation.evaluator import CANDIDATE, SERVED, EvaluatedModel, Evaluation
from pipeline.evaluation.slice_gate import PASSED, SMALL, UNDEFINED, WORSE, SliceGate
from pipeline.evaluation.slice_gate import compare_slices as compare
from pipeline.push import BlessingRule, PushDecision, judge, publish
from tests import numpy_reference as ref
from tests.test_push import fake_export

ROWS = {"weak": 400, "a": 800, "b": 800, "tiny": 30}


def _evaluation(dataset, labels, candidate, served, keys) -> Evaluation:
    order = list(dict.fromkeys(keys.tolist()))
    models = [EvaluatedModel(CANDIDATE, "runs/r/serving/m/2"), EvaluatedModel(SERVED, "m/1", 1)]
    return Evaluation(
        dataset,
        "splits/eval",
        labels,
        models,
        {CANDIDATE: candidate, SERVED: served},
        {"company": keys},
        {"company": order},
    )


@pytest.fixture(scope="module")
def binary(taxi):
    """The candidate ranks well everywhere but on ``weak``, where only the served model does."""
    rng = np.random.default_rng(3)
    keys = np.concatenate([np.full(n, k, dtype=object) for k, n in ROWS.items()])
    labels = rng.integers(0, 2, len(keys))
    good = np.clip(labels * 0.6 + rng.uniform(0, 0.4, len(keys)), 0, 1)
    guess = rng.uniform(0, 1, len(keys))
    in_weak = keys == "weak"
    candidate = np.where(in_weak | (keys == "tiny"), guess, good)
    served = np.where(in_weak, good, 0.15 * good + 0.85 * guess)
    dataset = dataclasses.replace(taxi, slices=(Slice("company", "company", min_examples=100),))
    evaluation = _evaluation(dataset, labels, candidate, served, keys).to_json()
    return evaluation, labels, keys, {CANDIDATE: candidate, SERVED: served}


def test_better_overall_but_worse_on_one_slice_is_not_blessed(binary):
    evaluation, labels, keys, predictions = binary
    candidate = evaluation["models"][CANDIDATE]["metrics"]["auc"]
    served = evaluation["models"][SERVED]["metrics"]["auc"]
    assert candidate > served + 0.05  # better overall, on the same rows
    comparison = compare(evaluation, SliceGate(tolerance=0.05))
    assert not comparison["passed"] and comparison["worse"] == ["company=weak"]
    rows = {r["key"]: r for r in comparison["keys"]}
    assert rows["weak"]["status"] == WORSE
    assert rows["a"]["status"] == rows["b"]["status"] == PASSED
    assert rows["tiny"]["status"] == SMALL  # worse too, but 30 rows are too few to gate
    assert rows["tiny"]["difference"] < -0.05
    # The gate compares the metrics NumPy computes for each key.
    for key, row in rows.items():
        assert row["examples"] == ROWS[key]
        for role in (CANDIDATE, SERVED):
            rows_of_key = keys == key
            expected = ref.auc(labels[rows_of_key], predictions[role][rows_of_key])
            assert row[role] == pytest.approx(expected, abs=1e-6)
    decision = judge(candidate, BlessingRule("auc", True, 0.5, 0.01), 1, served, comparison)
    assert not decision.blessed
    assert "1 of 3 gated slices are worse than the served version 1" in decision.reason
    assert "company=weak auc" in decision.reason
    assert decision.slices is comparison


def test_the_gate_off_reports_the_slices_but_blesses(binary):
    evaluation = binary[0]
    comparison = compare(evaluation, SliceGate(enabled=False))
    assert comparison["passed"] and comparison["worse"] == ["company=weak"]
    assert comparison["reason"] == "the slice gate is off; 1 would fail it"
    value = evaluation["models"][CANDIDATE]["metrics"]["auc"]
    assert judge(value, BlessingRule("auc", floor=0.5), 1, value, comparison).blessed


def test_a_wide_tolerance_lets_the_slice_pass(binary):
    comparison = compare(binary[0], SliceGate(tolerance=0.6))
    assert comparison["passed"] and comparison["gated"] == 3


def test_without_a_served_version_nothing_is_gated(taxi):
    labels = np.array([0, 1] * 100)
    keys = np.array(["a"] * 200, dtype=object)
    dataset = dataclasses.replace(taxi, slices=(Slice("company", "company", min_examples=10),))
    evaluation = Evaluation(
        dataset, "e", labels, [EvaluatedModel(CANDIDATE, "c")],
        {CANDIDATE: labels * 0.5 + 0.25}, {"company": keys}, {"company": ["a"]},
    ).to_json()  # fmt: skip
    comparison = compare(evaluation, SliceGate())
    assert comparison["passed"] and comparison["served_version"] is None
    assert comparison["keys"][0]["status"] == "no served model"


def test_an_undefined_slice_metric_is_reported_not_gated(taxi):
    """A key whose rows all have one label has no AUC: it cannot fail (or pass) the gate."""
    labels = np.array([0] * 150 + [0, 1] * 100)
    keys = np.array(["one class"] * 150 + ["mixed"] * 200, dtype=object)
    dataset = dataclasses.replace(taxi, slices=(Slice("company", "company", min_examples=10),))
    rng = np.random.default_rng(0)
    evaluation = _evaluation(
        dataset, labels, rng.uniform(size=350), labels * 0.8 + 0.1, keys
    ).to_json()
    rows = {r["key"]: r for r in compare(evaluation, SliceGate())["keys"]}
    assert math.isnan(rows["one class"]["candidate"]) and rows["one class"]["status"] == UNDEFINED
    assert rows["mixed"]["status"] == WORSE


def test_rmse_gates_in_its_own_direction():
    """Lower is better: a slice whose RMSE grows by more than the tolerance fails."""
    from pipeline.datasets import get_dataset

    flights = get_dataset("flights_delay_minutes")
    dataset = dataclasses.replace(flights, slices=(Slice("company", "carrier", min_examples=50),))
    rng = np.random.default_rng(5)
    labels = rng.normal(10, 30, 300)
    keys = np.array(["UA"] * 150 + ["AA"] * 150, dtype=object)
    served = labels + rng.normal(0, 5, 300)
    candidate = np.where(keys == "UA", labels + rng.normal(0, 8, 300), labels)
    evaluation = _evaluation(dataset, labels, candidate, served, keys).to_json()
    comparison = compare(evaluation, SliceGate(tolerance=1.0))
    rows = {r["key"]: r for r in comparison["keys"]}
    assert comparison["metric"] == "rmse" and comparison["higher_is_better"] is False
    assert rows["UA"]["status"] == WORSE and rows["AA"]["status"] == PASSED
    for key in ("UA", "AA"):
        rows_of_key = keys == key
        assert rows[key]["candidate"] == pytest.approx(
            ref.rmse(labels[rows_of_key], candidate[rows_of_key]), abs=1e-5
        )
    assert rows["UA"]["difference"] > 1.0  # a larger RMSE: worse


def test_a_decision_holds_only_while_the_version_it_compared_with_is_served(tmp_path):
    """The evaluate stage compared with version 1; if version 2 is served when the push stage
    runs, nothing is published."""
    base = tmp_path / "base"
    fake_export(base / "1")
    candidate = fake_export(tmp_path / "exports" / "3")
    decision = judge(0.9, BlessingRule("auc", floor=0.5), 1, 0.8)
    assert decision.blessed
    fake_export(base / "2")  # pushed meanwhile
    refused = publish(candidate, base, PushDecision.from_json(decision.to_json()))
    assert not refused.blessed and "the served version is now 2, not the 1" in refused.reason
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]
    (base / "2" / "saved_model.pb").unlink()  # no longer a complete version: 1 is served again
    published = publish(candidate, base, decision)
    assert published.blessed and published.version == 3
