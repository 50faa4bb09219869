"""Tuning runs [AI-3] through the service and the worker task: validation, staff only, queued on
the slow queue, progress stored, only PASS trials kept as candidates, the best ones VALIDATED."""

from __future__ import annotations

import pytest
from django.core.exceptions import PermissionDenied, ValidationError

from strategies import learning
from strategies.models import ModelCandidate, ModelStatus, ModelVersion, TuningRun
from strategies.tasks_learning import run_tuning
from tests.factories import UserFactory, staff_user
from traders import audit
from traders.models import Event

SMALL = {"source": "sim", "sim_markets": 6, "days": 40, "n_trials": 5, "seed": 3, "train_days": 7, "test_days": 5}


def test_requests_are_validated_and_staff_only(db):
    boss = staff_user(username="boss")
    with pytest.raises(PermissionDenied):
        learning.start_tuning(user=UserFactory(operator=True), options=SMALL)
    with pytest.raises(ValidationError) as err:
        learning.start_tuning(user=boss, options={"n_trials": 0, "days": 1, "timeframe": "7m", "nope": 1})
    assert {"n_trials", "days", "timeframe", "nope"} <= set(err.value.message_dict)
    assert not TuningRun.objects.exists()


def test_a_run_is_queued_on_the_slow_queue_after_commit(db, settings, monkeypatch, django_capture_on_commit_callbacks):
    calls = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **kw: calls.append((a, kw)))
    settings.QUANTWEB_SLOW_QUEUE = "quantweb-slow"
    boss = staff_user(username="boss")
    with django_capture_on_commit_callbacks(execute=True):
        run = learning.start_tuning(user=boss, options=SMALL)
    assert run.status == TuningRun.Status.QUEUED and run.n_trials == 5 and run.seed == 3
    (args, kwargs), = calls
    assert args == ("strategies.tasks_learning.run_tuning", run.pk)
    assert kwargs["q_options"] == {"cluster": "quantweb-slow"}
    assert audit.filtered(kind="TUNING_STARTED").count() == 1


def test_the_worker_runs_it_and_keeps_only_gate_passing_candidates(db, monkeypatch):
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **kw: None)
    boss = staff_user(username="boss")
    run = learning.start_tuning(user=boss, options={**SMALL, "versions": 2})
    out = run_tuning(run.pk)
    run.refresh_from_db()
    assert run.status == TuningRun.Status.DONE, run.message
    assert run.trials_done == 5 and run.n_pass + run.n_hold + run.n_reject == 5
    assert len(run.summary["trials"]) == 5 and run.summary["pbo"] is not None
    assert run.best["number"] == run.summary["best_trial"]
    candidates = ModelCandidate.objects.filter(tuning_run=run)
    assert candidates.count() == run.n_pass
    assert all(c.gate_decision == "PASS" and "dsr" in c.metrics and "e" in c.metrics for c in candidates)
    versions = ModelVersion.objects.filter(tuning_run=run)
    assert versions.count() == min(2, run.n_pass) == len(out["versions"])
    assert all(v.status == ModelStatus.VALIDATED and v.gate_decision == "PASS" for v in versions)
    assert Event.objects.filter(kind="TUNING_DONE").exists()
    assert run_tuning(run.pk) == {"run": run.pk, "skipped": True}      # a second delivery does nothing


def test_a_failing_run_is_marked_failed_with_the_reason(db, monkeypatch):
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **kw: None)
    run = learning.start_tuning(user=staff_user(username="boss"), options=SMALL)
    monkeypatch.setattr("strategies.learning._tuning_data", lambda opts: (_ for _ in ()).throw(OSError("disk gone")))
    out = run_tuning(run.pk)
    run.refresh_from_db()
    assert run.status == TuningRun.Status.FAILED and "disk gone" in run.message and "error" in out
    assert Event.objects.filter(kind="TUNING_FAILED").exists()


def fake_evaluate(self, params, window):
    """Trials leaning on TP trade 60 times per window with an edge; the others only 10 times
    (too few for the gate)."""
    import numpy as np

    from strategies.engine.learning.evaluator import WindowResult

    tp = params["module_weights"]["TP"]
    n = 60 if tp > 0.4 else 10
    rng = np.random.default_rng(int(tp * 1e6) + window.start % 1000)
    r = rng.normal(0.004 + 0.004 * tp, 0.01, n)
    days = window.days
    daily = rng.normal(0.002, 0.01, max(1, int(days)))
    return WindowResult(r, -np.abs(rng.normal(0.004, 0.002, n)), np.full(n, window.start), daily, days)


def test_pass_trials_become_candidates_and_the_best_validated_versions(db, monkeypatch):
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **kw: None)
    monkeypatch.setattr("strategies.engine.learning.evaluator.PanelEvaluator.evaluate", fake_evaluate)
    run = learning.start_tuning(user=staff_user(username="boss"), options={**SMALL, "n_trials": 12, "versions": 2})
    run_tuning(run.pk)
    run.refresh_from_db()
    decisions = {t["number"]: t["decision"] for t in run.summary["trials"]}
    passed = sorted(n for n, d in decisions.items() if d == "PASS")
    assert passed and len(passed) < 12                                   # some pass, some do not
    candidates = ModelCandidate.objects.filter(tuning_run=run)
    assert sorted(candidates.values_list("trial_number", flat=True)) == passed
    best_two = sorted(candidates, key=lambda c: -c.objective)[:2]
    versions = ModelVersion.objects.filter(tuning_run=run)
    assert {c.model_version_id for c in best_two} == set(versions.values_list("id", flat=True))
    assert all(v.status == ModelStatus.VALIDATED for v in versions)
    # a PASS candidate without a version can be turned into one by staff
    rest = candidates.filter(model_version__isnull=True).first()
    if rest is not None:
        model = learning.candidate_to_model(rest, actor=staff_user(username="boss2"))
        assert model.status == ModelStatus.VALIDATED and model.params == rest.params
