"""The learning section of the STRATEGY page and its REST API [UI-3]: what is shown, who may act,
lifecycle actions through the page, starting tuning runs, read-only endpoints, 4xx on bad input."""

from __future__ import annotations

import pytest
from django.urls import reverse

from strategies import learning
from strategies.models import ModelCandidate, ModelStatus, ModelVersion, TuningRun
from tests.factories import UserFactory, staff_user

PASS = {"decision": "PASS", "rule": "ALL_RULES_PASSED", "detail": "every rule passed",
        "metrics": {"n": 64, "e": 0.0042, "sharpe": 0.31, "q05": -0.012, "q01": -0.02, "mae_mean": 0.006,
                    "mae_95": 0.015, "spd": 2.1, "dsr": 0.97, "pbo": 0.12, "win_rate": 0.58}}


@pytest.fixture
def boss(db):
    return staff_user(username="boss")


@pytest.fixture
def no_queue(monkeypatch):
    calls = []
    monkeypatch.setattr("django_q.tasks.async_task", lambda *a, **kw: calls.append((a, kw)))
    return calls


def validated(name="m1") -> ModelVersion:
    m = learning.create_model_version(name=name, params={"entry_threshold": 60.0}, gate=PASS)
    return learning.validate_model(m)


def page(client) -> str:
    response = client.get(reverse("strategy"))
    assert response.status_code == 200
    return response.content.decode()


def test_staff_sees_models_metrics_actions_runs_and_bandit(client, boss, no_queue):
    m = validated()
    run = TuningRun.objects.create(seed=1, n_trials=60, trials_done=17, status=TuningRun.Status.RUNNING,
                                   config=learning.TUNING_DEFAULTS, best={"number": 9, "objective": 0.42})
    ModelCandidate.objects.create(tuning_run=run, trial_number=9, params={"entry_threshold": 60.0}, objective=0.42,
                                  metrics=PASS["metrics"], gate_decision="PASS", gate_rule="ALL_RULES_PASSED")
    learning.update_bandit(seed=1)
    client.force_login(boss)
    html = page(client)
    assert 'id="learning"' in html and f'data-model="{m.pk}"' in html and "VALIDATED" in html
    assert "0.42%" in html and "0.970" in html                  # E and DSR of the gate metrics
    assert 'data-action="deploy"' in html and 'data-action="discard"' in html
    assert f'data-poll="/api/learning/tuning-runs/{run.pk}/"' in html and "17/60" in html
    assert 'id="candidates"' in html and "MAKE VERSION" in html
    assert 'id="bandit-weights"' in html and "BREAKOUT_ROTATION" in html
    assert 'id="tuning-form"' in html and "js/learning.js" in html


def test_viewers_see_everything_but_no_action(client, db):
    validated()
    client.force_login(UserFactory(operator=True))
    html = page(client)
    assert 'id="model-versions"' in html and "VALIDATED" in html
    assert 'data-action=' not in html and 'id="tuning-form"' not in html


def test_actions_through_the_page(client, boss):
    m = validated()
    client.force_login(boss)
    url = reverse("learning-model-action", args=[m.pk])
    response = client.post(url, {"action": "deploy"})
    assert response.status_code == 302 and response["Location"].endswith("#learning")
    m.refresh_from_db()
    assert m.status == ModelStatus.PAPER_DEPLOYED
    response = client.post(url, {"action": "promote"}, follow=True)      # 24 h not yet passed
    assert "refused by PAPER_MIN_HOURS" in response.content.decode()
    response = client.post(url, {"action": "rollback", "reason": "looks wrong"})
    m.refresh_from_db()
    assert m.status == ModelStatus.MANUAL_ROLLBACK and m.status_reason == "looks wrong"
    assert client.post(url, {"action": "explode"}).status_code == 400
    assert client.post(reverse("learning-model-action", args=[999999]), {"action": "deploy"}).status_code == 404
    assert client.get(url).status_code == 405


def test_only_staff_may_act(client, db):
    m = validated()
    client.force_login(UserFactory(operator=True))
    assert client.post(reverse("learning-model-action", args=[m.pk]), {"action": "deploy"}).status_code == 403
    assert client.post(reverse("learning-start-tuning"), {"n_trials": "5"}).status_code == 403
    m.refresh_from_db()
    assert m.status == ModelStatus.VALIDATED and not TuningRun.objects.exists()


def test_start_tuning_from_the_page(client, boss, no_queue, django_capture_on_commit_callbacks):
    client.force_login(boss)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("learning-start-tuning"),
                               {"source": "sim", "sim_markets": "20", "days": "90", "timeframe": "1h",
                                "n_trials": "60", "seed": "11"})
    assert response.status_code == 302
    run = TuningRun.objects.get()
    assert (run.seed, run.n_trials, run.config["sim_markets"]) == (11, 60, 20) and len(no_queue) == 1
    response = client.post(reverse("learning-start-tuning"), {"n_trials": "many"}, follow=True)
    assert "Tuning not started: n_trials: not a whole number" in response.content.decode()
    assert TuningRun.objects.count() == 1


def test_a_candidate_becomes_a_version_from_the_page(client, boss):
    run = TuningRun.objects.create(seed=1, n_trials=5, status=TuningRun.Status.DONE, config={})
    c = ModelCandidate.objects.create(tuning_run=run, trial_number=3, params={"entry_threshold": 61.0}, objective=0.3,
                                      metrics=PASS["metrics"], gate_decision="PASS", gate_rule="ALL_RULES_PASSED")
    client.force_login(boss)
    assert client.post(reverse("learning-candidate-version", args=[c.pk])).status_code == 302
    c.refresh_from_db()
    assert c.model_version.status == ModelStatus.VALIDATED and c.model_version.params == {"entry_threshold": 61.0}
    response = client.post(reverse("learning-candidate-version", args=[c.pk]), follow=True)
    assert "already has model version" in response.content.decode()


# -- REST -----------------------------------------------------------------------------------------------

def test_api_reads(client, boss):
    m = validated()
    learning.deploy_to_paper(m, actor=boss)
    learning.update_bandit(seed=1)
    client.force_login(UserFactory(operator=True))
    data = client.get("/api/learning/models/").json()
    assert data["count"] == 1 and data["results"][0]["status"] == "PAPER_DEPLOYED"
    assert data["results"][0]["gate_metrics"]["dsr"] == 0.97
    detail = client.get(f"/api/learning/models/{m.pk}/").json()
    assert [t["to_status"] for t in detail["transitions"]] == ["VALIDATED", "PAPER_DEPLOYED"]
    assert detail["drift_checks"] == []
    assert client.get("/api/learning/models/?status=VALIDATED").json()["count"] == 0
    bandit = client.get("/api/learning/bandit/?regime=CHOP").json()
    assert bandit["count"] == 8 and {r["weight"] for r in bandit["results"]} == {1.0}
    assert client.get("/api/learning/candidates/").json()["count"] == 0
    assert client.get("/api/learning/tuning-runs/").json()["count"] == 0


@pytest.mark.parametrize("query", ["status=NOPE", "limit=0", "unknown=1", "tuning_run=abc"])
def test_api_bad_queries_are_400(client, boss, query):
    client.force_login(boss)
    path = "/api/learning/candidates/" if "tuning_run" in query else "/api/learning/models/"
    assert client.get(f"{path}?{query}").status_code == 400


def test_api_starts_tuning_for_staff_only(client, boss, no_queue):
    client.force_login(UserFactory(operator=True))
    assert client.post("/api/learning/tuning-runs/", {"n_trials": 5}, content_type="application/json").status_code == 403
    client.force_login(boss)
    bad = client.post("/api/learning/tuning-runs/", {"n_trials": 0, "days": "NaN"}, content_type="application/json")
    assert bad.status_code == 400 and {"n_trials", "days"} <= set(bad.json())
    mixed = client.post("/api/learning/tuning-runs/", {"source": "sim", "data_files": ["a.csv"]},
                        content_type="application/json")
    assert mixed.status_code == 400 and mixed.json()["data_files"] == ["only with source=files"]
    ok = client.post("/api/learning/tuning-runs/", {"n_trials": 5, "seed": 2}, content_type="application/json")
    assert ok.status_code == 201 and ok.json()["status"] == "QUEUED" and ok.json()["n_trials"] == 5
    run = ok.json()["id"]
    got = client.get(f"/api/learning/tuning-runs/{run}/").json()
    assert got["progress"] == 0 and got["stalled"] is False and "summary" in got
    assert client.put(f"/api/learning/tuning-runs/{run}/", {}, content_type="application/json").status_code == 405
    assert client.post("/api/learning/models/", {}, content_type="application/json").status_code == 405


def test_api_needs_a_login(client, db):
    assert client.get("/api/learning/models/").status_code in (401, 403)


@pytest.mark.parametrize("model", ["modelversion", "modeltransition", "tuningrun", "modelcandidate", "banditstate",
                                   "banditreward", "driftcheck"])
def test_admin_lists_the_learning_rows_read_only(client, boss, model):
    validated()
    learning.update_bandit(seed=1)
    client.force_login(boss)
    assert client.get(f"/admin/strategies/{model}/").status_code == 200
    assert client.get(f"/admin/strategies/{model}/add/").status_code == 403
