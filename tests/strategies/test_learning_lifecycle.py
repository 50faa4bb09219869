"""Model-version lifecycle [AI-5]: legal moves only, enforced by the model and the database,
slots, the 24 h paper minimum, arming, rollbacks with restore, the redeploy cooldown, audit and
alerts, and which parameters AI MODE traders run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.utils import timezone

from strategies import learning
from strategies.engine.learning.params import apply_scan_params
from strategies.engine.pipeline import ScanParams
from strategies.models import LifecycleError, ModelStatus, ModelTransition, ModelVersion, StrategyProfile
from strategies.services import deployed_model, effective_profile, live_model_params, scan_overrides
from tests.factories import UserFactory, staff_user
from traders import audit
from traders.models import Event

PASS = {"decision": "PASS", "rule": "ALL_RULES_PASSED", "detail": "every rule passed", "metrics": {"e": 0.004}}
HOLD = {"decision": "HOLD", "rule": "SHARPE_MIN", "detail": "sharpe = 0.01 < 0.05", "metrics": {"e": 0.001}}
T0 = timezone.now() - timedelta(days=30)
H = timedelta(hours=1)


def model(name="m", gate=PASS, **params) -> ModelVersion:
    return learning.create_model_version(name=name, params={"entry_threshold": 60.0, **params}, gate=gate)


@pytest.fixture
def boss(db):
    return staff_user(username="boss")


def deployed(boss, name="m", at=T0, **params) -> ModelVersion:
    m = model(name, **params)
    learning.validate_model(m, now=at)
    learning.deploy_to_paper(m, actor=boss, now=at)
    return m


def armed(boss, name="m", at=T0, **params) -> ModelVersion:
    m = deployed(boss, name, at, **params)
    m.transition(ModelStatus.LIVE_ELIGIBLE, now=at + 25 * H)
    learning.arm_live(m, actor=boss, now=at + 26 * H)
    return m


def test_the_happy_path_is_audited_and_alerted(boss):
    m = armed(boss)
    m.refresh_from_db()
    assert m.status == ModelStatus.LIVE_ARMED and m.slot == "live" and m.deployed_at == T0
    moves = list(ModelTransition.objects.filter(model_version=m).order_by("created_at")
                 .values_list("from_status", "to_status", "actor"))
    assert moves == [("DRAFT", "VALIDATED", "system"), ("VALIDATED", "PAPER_DEPLOYED", "boss"),
                     ("PAPER_DEPLOYED", "LIVE_ELIGIBLE", "system"), ("LIVE_ELIGIBLE", "LIVE_ARMED", "boss")]
    rows = audit.filtered(kind="MODEL_TRANSITION")
    assert [r.payload["to"] for r in rows.order_by("seq")] == ["VALIDATED", "PAPER_DEPLOYED", "LIVE_ELIGIBLE", "LIVE_ARMED"]
    assert audit.verify_chain() is None
    kinds = list(Event.objects.order_by("id").values_list("kind", flat=True))
    assert kinds == ["MODEL_VALIDATED", "MODEL_PAPER_DEPLOYED", "MODEL_LIVE_ELIGIBLE", "MODEL_LIVE_ARMED"]


def test_gate_decides_validated_or_rejected(boss):
    held = model("h", gate=HOLD)
    learning.validate_model(held)
    assert held.status == ModelStatus.REJECTED
    with pytest.raises(LifecycleError) as err:
        held.transition(ModelStatus.VALIDATED)
    assert err.value.rule == "ILLEGAL_TRANSITION"
    draft = model("d", gate=HOLD)
    with pytest.raises(LifecycleError) as err:
        draft.transition(ModelStatus.VALIDATED)
    assert err.value.rule == "GATE_NOT_PASS"


def test_illegal_moves_are_refused_by_the_model(boss):
    m = model()
    for target in (ModelStatus.PAPER_DEPLOYED, ModelStatus.LIVE_ARMED, ModelStatus.LIVE_ELIGIBLE,
                   ModelStatus.AUTO_ROLLBACK):
        with pytest.raises(LifecycleError) as err:
            m.transition(target, actor=boss)
        assert err.value.rule == "ILLEGAL_TRANSITION"
    m.status = ModelStatus.LIVE_ARMED
    with pytest.raises(LifecycleError):
        m.save()                                   # a plain save cannot change the status
    with pytest.raises(LifecycleError):
        ModelVersion.objects.create(name="x", params={}, status=ModelStatus.LIVE_ARMED, gate_decision="PASS")
    m.refresh_from_db()
    assert m.status == ModelStatus.DRAFT
    learning.validate_model(m)
    m.params = {"entry_threshold": 10.0}
    with pytest.raises(LifecycleError) as err:
        m.save()
    assert err.value.rule == "PARAMS_FROZEN"


def test_the_database_refuses_what_bypasses_the_model(boss):
    m = model()
    with pytest.raises(IntegrityError), transaction.atomic():   # deployed without a gate PASS
        ModelVersion.objects.filter(pk=m.pk).update(status="LIVE_ARMED", slot="live", deployed_at=T0, gate_decision="HOLD")
    with pytest.raises(IntegrityError), transaction.atomic():   # slot disagrees with the status
        ModelVersion.objects.filter(pk=m.pk).update(status="VALIDATED", slot="live", gate_decision="PASS")
    a = armed(boss, "a")
    b = model("b")
    with pytest.raises(IntegrityError), transaction.atomic():   # two armed models
        ModelVersion.objects.filter(pk=b.pk).update(status="LIVE_ARMED", slot="live", deployed_at=T0,
                                                    gate_decision="PASS")
    assert ModelVersion.objects.get(slot="live") == a


def test_who_may_move(boss):
    operator = UserFactory(operator=True)
    m = model()
    learning.validate_model(m)
    with pytest.raises(PermissionDenied):
        learning.deploy_to_paper(m, actor=operator)
    with pytest.raises(LifecycleError) as err:
        m.transition(ModelStatus.PAPER_DEPLOYED)         # the system never deploys by itself
    assert err.value.rule == "STAFF_ONLY"
    learning.deploy_to_paper(m, actor=boss, now=T0)
    with pytest.raises(LifecycleError) as err:
        m.transition(ModelStatus.AUTO_ROLLBACK, actor=boss, now=T0 + H)   # automatic means the system
    assert err.value.rule == "SYSTEM_ONLY"


def test_paper_needs_24_hours_before_live_eligible(boss):
    m = deployed(boss)
    with pytest.raises(LifecycleError) as err:
        m.transition(ModelStatus.LIVE_ELIGIBLE, now=T0 + 23 * H)
    assert err.value.rule == "PAPER_MIN_HOURS"
    assert learning.promote_eligible(now=T0 + 23 * H) == []
    assert learning.promote_eligible(now=T0 + 24 * H) == [m.pk]
    m.refresh_from_db()
    assert m.status == ModelStatus.LIVE_ELIGIBLE and m.slot == "paper"


def test_one_model_on_paper_at_a_time(boss):
    deployed(boss, "first")
    second = model("second")
    learning.validate_model(second)
    with pytest.raises(LifecycleError) as err:
        learning.deploy_to_paper(second, actor=boss, now=T0 + H)
    assert err.value.rule == "PAPER_SLOT_TAKEN"


def test_arming_retires_the_previous_model_and_rollback_restores_it(boss):
    first = armed(boss, "first", at=T0)
    second = armed(boss, "second", at=T0 + 48 * H)
    first.refresh_from_db()
    assert first.status == ModelStatus.RETIRED and second.baseline_id == first.pk
    assert deployed_model("LIVE") == second
    learning.rollback(second, reason="net_return_24h -2.5 %", now=T0 + 80 * H)     # the drift monitor
    first.refresh_from_db()
    second.refresh_from_db()
    assert second.status == ModelStatus.AUTO_ROLLBACK and second.slot is None
    assert first.status == ModelStatus.LIVE_ARMED and deployed_model("LIVE") == first
    kinds = set(Event.objects.values_list("kind", flat=True))
    assert {"MODEL_AUTO_ROLLBACK", "MODEL_RETIRED"} <= kinds
    assert Event.objects.filter(kind="MODEL_AUTO_ROLLBACK").get().level == "CRITICAL"


def test_manual_rollback_then_the_24_hour_redeploy_cooldown(boss):
    m = deployed(boss, "m")
    learning.rollback(m, actor=boss, reason="operator", now=T0 + 2 * H)
    assert m.status == ModelStatus.MANUAL_ROLLBACK
    other = model("other")
    learning.validate_model(other)
    with pytest.raises(LifecycleError) as err:
        learning.deploy_to_paper(other, actor=boss, now=T0 + 20 * H)
    assert err.value.rule == "REDEPLOY_COOLDOWN"
    with pytest.raises(LifecycleError) as err:
        learning.deploy_to_paper(m, actor=boss, now=T0 + 25 * H)   # 23 h after the rollback
    assert err.value.rule == "REDEPLOY_COOLDOWN"
    learning.deploy_to_paper(m, actor=boss, now=T0 + 26 * H)       # 24 h after: the rolled-back model returns
    assert m.status == ModelStatus.PAPER_DEPLOYED


def test_ai_mode_runs_the_deployed_model_per_mode(boss):
    ai = StrategyProfile.objects.get(key="AI_MODE")
    assert effective_profile(ai).entry_threshold == 70.0 and live_model_params() is None   # STANDARD
    armed(boss, "live", at=T0, entry_threshold=61.0, top_n=12)
    paper = deployed(boss, "paper", at=T0 + 48 * H, entry_threshold=55.0,
                     penalty_weights={"CONFLICT": 0.3}, regime_weights={"TREND": 1.2})
    assert effective_profile(ai, mode="LIVE").entry_threshold == 61.0
    assert effective_profile(ai, mode="PAPER").entry_threshold == 55.0
    assert effective_profile(ai).entry_threshold == 55.0
    assert live_model_params("LIVE") == {"entry_threshold": 61.0}      # scan keys stay out of the profile
    over = scan_overrides(ai, "PAPER")
    assert over["model_version"] == paper.pk and over["scan"] == {"penalty_weights": {"CONFLICT": 0.3},
                                                                  "regime_weights": {"TREND": 1.2}}
    params = apply_scan_params(ScanParams(), over["scan"], over["bandit_weights"])
    assert params.aggregator.penalty_weights == {"CONFLICT": 0.3}
    assert params.aggregator.regime_weights["TREND"] == 1.2
    assert scan_overrides(ai, "LIVE")["scan"] == {"top_n": 12}
    assert scan_overrides(StrategyProfile.objects.get(key="STANDARD"), "PAPER") == {}
    learning.rollback(paper, actor=boss, reason="test", now=T0 + 50 * H)
    assert effective_profile(ai, mode="PAPER").entry_threshold == 61.0   # paper traders fall back to the armed one
    assert Event.objects.filter(kind="MODEL_FALLBACK").exists()


def test_invalid_params_are_refused_at_creation(db):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError):
        learning.create_model_version(name="bad", params={"entry_threshold": 500.0, "top_n": 0, "nope": 1})
