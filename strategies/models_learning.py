"""The learning layer's rows [AI-1]..[AI-6] (imported by strategies.models).

Model versions move through the lifecycle only by :meth:`ModelVersion.transition`; ``save()``
refuses any other status change, a new row starts as DRAFT, and the database refuses a deployed
status without a gate PASS, two models in one slot, or a slot that disagrees with the status
(rules in ``strategies.engine.learning.lifecycle``).
"""

from __future__ import annotations

from datetime import datetime

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone

from strategies.engine.learning import lifecycle as lc

__all__ = [
    "BanditReward", "BanditState", "DriftCheck", "LifecycleError", "ModelCandidate", "ModelStatus",
    "ModelTransition", "ModelVersion", "TuningRun",
]


class ModelStatus(models.TextChoices):
    DRAFT = "DRAFT"
    VALIDATED = "VALIDATED"
    PAPER_DEPLOYED = "PAPER_DEPLOYED"
    LIVE_ELIGIBLE = "LIVE_ELIGIBLE"
    LIVE_ARMED = "LIVE_ARMED"
    AUTO_ROLLBACK = "AUTO_ROLLBACK"
    MANUAL_ROLLBACK = "MANUAL_ROLLBACK"
    REJECTED = "REJECTED"
    RETIRED = "RETIRED"


class LifecycleError(Exception):
    """A refused lifecycle transition; ``rule`` names the rule (lifecycle module docstring)."""

    def __init__(self, rule: str, detail: str) -> None:
        self.rule, self.detail = rule, detail
        super().__init__(f"{rule}: {detail}")


def _ts(dt: datetime | None) -> float | None:
    return dt.timestamp() if dt is not None else None


class TuningRun(models.Model):
    """One optuna tuning run [AI-3]: its configuration, live progress and outcome."""

    class Status(models.TextChoices):
        QUEUED = "QUEUED"
        RUNNING = "RUNNING"
        DONE = "DONE"
        FAILED = "FAILED"

    status = models.CharField(max_length=8, choices=Status.choices, default=Status.QUEUED)
    seed = models.BigIntegerField(default=0)
    n_trials = models.PositiveIntegerField(default=60)
    config = models.JSONField(default=dict, help_text="data window, folds, search space, gate thresholds")
    trials_done = models.PositiveIntegerField(default=0)
    n_pass = models.PositiveIntegerField(default=0)
    n_hold = models.PositiveIntegerField(default=0)
    n_reject = models.PositiveIntegerField(default=0)
    best = models.JSONField(default=dict, blank=True, help_text="best trial so far: number, objective, params")
    summary = models.JSONField(default=dict, blank=True, help_text="PBO, Sharpe variance, wall time, evaluator")
    message = models.CharField(max_length=300, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"tuning {self.pk} ({self.status} {self.trials_done}/{self.n_trials})"

    @property
    def progress(self) -> float:
        return self.trials_done / self.n_trials if self.n_trials else 0.0


class ModelVersion(models.Model):
    """A tuned parameter set moving through the guarded lifecycle [AI-5]."""

    name = models.CharField(max_length=80)
    params = models.JSONField(help_text="risk-profile keys and scan keys (strategies.engine.learning.params)")
    status = models.CharField(max_length=20, choices=ModelStatus.choices, default=ModelStatus.DRAFT)
    slot = models.CharField(max_length=8, null=True, blank=True, unique=True, editable=False,
                            help_text="paper or live while deployed; derived from the status")
    gate_metrics = models.JSONField(default=dict, blank=True)
    gate_decision = models.CharField(max_length=8, blank=True)
    gate_rule = models.CharField(max_length=200, blank=True)
    baseline = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                 help_text="the model this one replaced (None: STANDARD) [AI-6]")
    tuning_run = models.ForeignKey(TuningRun, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="model_versions")
    created_at = models.DateTimeField(auto_now_add=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    deployed_at = models.DateTimeField(null=True, blank=True, help_text="entered PAPER_DEPLOYED")
    armed_at = models.DateTimeField(null=True, blank=True)
    status_reason = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                name="model_slot_matches_status",
                condition=(Q(status__in=[lc.PAPER_DEPLOYED, lc.LIVE_ELIGIBLE], slot=lc.PAPER_SLOT)
                           | Q(status=lc.LIVE_ARMED, slot=lc.LIVE_SLOT)
                           | (~Q(status__in=lc.DEPLOYED) & Q(slot__isnull=True))),
            ),
            models.CheckConstraint(
                name="model_gate_pass_to_deploy",
                condition=~Q(status__in=lc.GATE_PASSED) | Q(gate_decision="PASS"),
            ),
            models.CheckConstraint(
                name="model_deployed_has_time",
                condition=~Q(status__in=lc.DEPLOYED) | Q(deployed_at__isnull=False),
            ),
        ]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._loaded = None if self._state.adding else (self.status, self.params)
        self._transitioning = False

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    def save(self, *args, **kwargs) -> None:
        """Refuse any status change that does not come through :meth:`transition`, any new row
        that is not DRAFT and any change of a non-DRAFT model's parameters."""
        if not self._state.adding and (self._loaded is None or self._loaded[0] is None):
            stored = ModelVersion.objects.filter(pk=self.pk).values_list("status", "params").first()
            self._loaded = stored
        if self._state.adding or self._loaded is None:
            if self.status != lc.DRAFT and not self._transitioning:
                raise LifecycleError("ILLEGAL_TRANSITION", "a model version is created as DRAFT")
        else:
            old_status, old_params = self._loaded
            if self.status != old_status and not self._transitioning:
                raise LifecycleError("ILLEGAL_TRANSITION",
                                     f"{old_status} -> {self.status} must go through ModelVersion.transition")
            if old_status != lc.DRAFT and self.params != old_params:
                raise LifecycleError("PARAMS_FROZEN", "a model's parameters are frozen once it leaves DRAFT")
        self.slot = lc.slot_for(self.status)
        super().save(*args, **kwargs)
        self._loaded = (self.status, self.params)

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        instance._loaded = (instance.__dict__.get("status"), instance.__dict__.get("params"))
        return instance

    # -- lifecycle ------------------------------------------------------------------------------

    def transition(self, target: str, *, actor=None, reason: str = "", now: datetime | None = None,
                   data: dict | None = None) -> ModelTransition:
        """Move this model to ``target`` if the lifecycle rules allow it, audit and alert it.

        ``actor``: a user, or None / "system" for the system. Raises LifecycleError naming the
        rule that refuses. Runs in one transaction with this row locked."""
        from traders import audit
        from traders.models import EventLevel
        from traders.services import log_event

        now = now or timezone.now()
        is_system = actor is None or actor == "system"
        is_staff = bool(not is_system and getattr(actor, "is_authenticated", False) and actor.is_staff)
        try:
            with transaction.atomic():
                locked = ModelVersion.objects.select_for_update().get(pk=self.pk)
                holder = (ModelVersion.objects.filter(slot=lc.PAPER_SLOT).exclude(pk=locked.pk)
                          .values_list("pk", flat=True).first())
                last_rollback = (ModelTransition.objects.filter(to_status__in=lc.ROLLED_BACK)
                                 .order_by("-created_at").values_list("created_at", flat=True).first())
                newest_check = DriftCheck.objects.filter(model_version=locked).order_by("-window_end").first()
                facts = lc.TransitionFacts(
                    now=now.timestamp(), actor_is_staff=is_staff, actor_is_system=is_system,
                    gate_decision=locked.gate_decision, deployed_at=_ts(locked.deployed_at),
                    last_rollback_at=_ts(last_rollback), paper_slot_holder=holder, model_id=locked.pk,
                    drift_warn_open=bool(newest_check and newest_check.status == DriftCheck.Status.DRIFT_WARN),
                )
                refusal = lc.check_transition(locked.status, target, facts)
                if refusal is not None:
                    raise LifecycleError(refusal.rule, refusal.detail)
                previous = locked.status
                locked.status, locked.status_changed_at, locked.status_reason = target, now, reason[:300]
                if target == lc.PAPER_DEPLOYED:
                    locked.deployed_at = now
                if target == lc.LIVE_ARMED:
                    locked.armed_at = now
                locked._transitioning = True
                try:
                    locked.save()
                finally:
                    locked._transitioning = False
                paper_id = ModelVersion.objects.filter(slot=lc.PAPER_SLOT).values_list("pk", flat=True).first()
                live_id = ModelVersion.objects.filter(slot=lc.LIVE_SLOT).values_list("pk", flat=True).first()
                row = ModelTransition.objects.create(
                    model_version=locked, from_status=previous, to_status=target,
                    actor=audit.actor_name(None if is_system else actor), reason=reason[:300], created_at=now,
                    paper_model_id=paper_id or live_id, live_model_id=live_id, data=data or {},
                )
                payload = {"model": locked.pk, "name": locked.name, "from": previous, "to": target,
                           "reason": reason, **(data or {})}
                audit.record("MODEL_TRANSITION", actor="system" if is_system else actor, obj=locked, payload=payload)
                level = (EventLevel.CRITICAL if target == lc.AUTO_ROLLBACK
                         else EventLevel.WARN if target in (lc.MANUAL_ROLLBACK, lc.LIVE_ARMED) else EventLevel.INFO)
                log_event(None, f"MODEL_{target}", f"model {locked.name} (#{locked.pk}): {previous} -> {target}"
                          + (f" ({reason})" if reason else ""), level=level, data=payload)
        except IntegrityError as exc:  # a concurrent transition took the slot first
            raise LifecycleError("SLOT_TAKEN", f"another model holds the slot: {exc}") from None
        for name in ("status", "slot", "status_changed_at", "status_reason", "deployed_at", "armed_at"):
            setattr(self, name, getattr(locked, name))
        self._loaded = (self.status, self.params)
        return row


class ModelTransition(models.Model):
    """One lifecycle move, with the models AI MODE traders ran right after it (``paper_model``
    for PAPER traders, ``live_model`` for LIVE ones; None = STANDARD). Drift monitoring reads
    this to know which model a trade ran under."""

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="transitions")
    from_status = models.CharField(max_length=20)
    to_status = models.CharField(max_length=20)
    actor = models.CharField(max_length=150)
    reason = models.CharField(max_length=300, blank=True)
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(db_index=True)
    paper_model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    live_model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.model_version_id}: {self.from_status} -> {self.to_status}"


class ModelCandidate(models.Model):
    """A tuning trial's parameters and its out-of-sample gate result [AI-2, AI-3]."""

    tuning_run = models.ForeignKey(TuningRun, on_delete=models.CASCADE, related_name="candidates")
    trial_number = models.PositiveIntegerField()
    params = models.JSONField()
    objective = models.FloatField(null=True, blank=True)
    metrics = models.JSONField(default=dict, help_text="every gate metric, in-sample and OOS")
    gate_decision = models.CharField(max_length=8)
    gate_rule = models.CharField(max_length=200, blank=True)
    gate_detail = models.CharField(max_length=300, blank=True)
    model_version = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="candidates")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["tuning_run", "trial_number"], name="candidate_unique_trial")]

    def __str__(self) -> str:
        return f"{self.tuning_run_id}#{self.trial_number} {self.gate_decision}"


class BanditState(models.Model):
    """Thompson-sampling posterior per regime and strategy module, and its current weight [AI-4]."""

    regime = models.CharField(max_length=20)
    module = models.CharField(max_length=20)
    alpha = models.FloatField(default=5.0)
    beta = models.FloatField(default=5.0)
    n = models.PositiveIntegerField(default=0)
    weight = models.FloatField(default=1.0, help_text="the latest Thompson draw, 0.5 + theta (1 in CHOP/PANIC)")
    sampled_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["regime", "module"], name="bandit_unique")]

    def __str__(self) -> str:
        return f"{self.regime}/{self.module} a={self.alpha:.1f} b={self.beta:.1f} w={self.weight:.2f}"


class BanditReward(models.Model):
    """A closed position's reward to the bandit; one row per position keeps updates idempotent."""

    position = models.OneToOneField("execution.Position", on_delete=models.CASCADE, related_name="+")
    regime = models.CharField(max_length=20)
    module = models.CharField(max_length=20)
    r_net = models.FloatField(null=True, blank=True, help_text="None: nothing realised (marked as seen only)")
    reward = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.regime}/{self.module} r={self.r_net}"


class DriftCheck(models.Model):
    """One hourly drift evaluation of a deployed model [AI-6]."""

    class Status(models.TextChoices):
        OK = "OK"
        DRIFT_WARN = "DRIFT_WARN"
        ROLLBACK = "ROLLBACK"
        INSUFFICIENT = "INSUFFICIENT", "insufficient data"

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="drift_checks")
    role = models.CharField(max_length=8, help_text="paper or live: which traders' results were read")
    window_end = models.DateTimeField()
    bucket = models.BigIntegerField(help_text="hour bucket (epoch seconds // 3600) of window_end")
    status = models.CharField(max_length=12, choices=Status.choices)
    reasons = models.JSONField(default=list)
    metrics = models.JSONField(default=dict)
    warn_streak = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-window_end", "-id"]
        constraints = [models.UniqueConstraint(fields=["model_version", "bucket"], name="drift_check_hourly")]

    def __str__(self) -> str:
        return f"{self.model_version_id} {self.status} @ {self.window_end:%Y-%m-%d %H:%M}"
