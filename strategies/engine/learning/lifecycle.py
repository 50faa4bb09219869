"""Model-version lifecycle rules [AI-5] (pure: the Django model gathers the facts, this decides).

::

    DRAFT ──gate PASS──▶ VALIDATED ──deploy──▶ PAPER_DEPLOYED ──≥ 24 h──▶ LIVE_ELIGIBLE ──arm──▶ LIVE_ARMED
      │                     │                        │                        │                      │
      └─▶ REJECTED ◀────────┘         AUTO_ROLLBACK / MANUAL_ROLLBACK ◀───────┴──────────────────────┤
                                            │  (redeploy to paper after the 24 h cooldown)           │
                                            └──────────────▶ PAPER_DEPLOYED          RETIRED ◀──────┘
                                                                           (superseded by a newer armed
                                                                            model; a rollback of that
                                                                            one restores it)

Two slots, each held by at most one model (a unique column in the database):

* ``paper``: PAPER_DEPLOYED or LIVE_ELIGIBLE. AI MODE PAPER traders run this model.
* ``live``: LIVE_ARMED. AI MODE LIVE traders run this model, and PAPER traders too while the
  paper slot is empty. Without any, AI MODE falls back to STANDARD.

Rules (each refusal names the rule):

* ``VALIDATED`` needs the gate decision PASS (``GATE_NOT_PASS``).
* Deploying to paper needs the paper slot free (``PAPER_SLOT_TAKEN``) and no rollback of any
  model in the last 24 h (``REDEPLOY_COOLDOWN``): after a rollback the system runs on what it
  fell back to for a day before anything new is tried. A rolled-back model may be redeployed
  after the cooldown if its gate decision is still PASS.
* ``LIVE_ELIGIBLE`` needs at least 24 h in PAPER_DEPLOYED (``PAPER_MIN_HOURS``) and no
  unresolved drift warning (``DRIFT_WARN_OPEN``).
* ``LIVE_ARMED`` comes only from LIVE_ELIGIBLE and only by a person (``STAFF_ONLY``); the model
  it replaces becomes RETIRED and is its baseline.
* ``AUTO_ROLLBACK`` is done by the system (drift monitor), ``MANUAL_ROLLBACK`` by a person; both
  from any deployed status. Rolling back the armed model re-arms its RETIRED baseline.
* ``RETIRED`` <-> ``LIVE_ARMED`` are system moves made inside an arm or a rollback.
"""

from __future__ import annotations

from dataclasses import dataclass

DRAFT = "DRAFT"
VALIDATED = "VALIDATED"
PAPER_DEPLOYED = "PAPER_DEPLOYED"
LIVE_ELIGIBLE = "LIVE_ELIGIBLE"
LIVE_ARMED = "LIVE_ARMED"
AUTO_ROLLBACK = "AUTO_ROLLBACK"
MANUAL_ROLLBACK = "MANUAL_ROLLBACK"
REJECTED = "REJECTED"
RETIRED = "RETIRED"

PAPER_SLOT = "paper"
LIVE_SLOT = "live"
DEPLOYED = (PAPER_DEPLOYED, LIVE_ELIGIBLE, LIVE_ARMED)
ROLLED_BACK = (AUTO_ROLLBACK, MANUAL_ROLLBACK)
GATE_PASSED = (VALIDATED, PAPER_DEPLOYED, LIVE_ELIGIBLE, LIVE_ARMED, RETIRED)

PAPER_MIN_SECONDS = 24 * 3600
REDEPLOY_COOLDOWN_SECONDS = 24 * 3600

#: (from, to) -> who may make the move: "staff", "system" or "any".
TRANSITIONS: dict[tuple[str, str], str] = {
    (DRAFT, VALIDATED): "any",
    (DRAFT, REJECTED): "any",
    (VALIDATED, REJECTED): "staff",
    (VALIDATED, PAPER_DEPLOYED): "staff",
    (PAPER_DEPLOYED, LIVE_ELIGIBLE): "any",
    (LIVE_ELIGIBLE, LIVE_ARMED): "staff",
    (LIVE_ARMED, RETIRED): "system",
    (RETIRED, LIVE_ARMED): "system",
    (AUTO_ROLLBACK, PAPER_DEPLOYED): "staff",
    (MANUAL_ROLLBACK, PAPER_DEPLOYED): "staff",
}
for _status in DEPLOYED:
    TRANSITIONS[(_status, AUTO_ROLLBACK)] = "system"
    TRANSITIONS[(_status, MANUAL_ROLLBACK)] = "staff"


def slot_for(status: str) -> str | None:
    """The slot a model in ``status`` holds (None: none)."""
    if status in (PAPER_DEPLOYED, LIVE_ELIGIBLE):
        return PAPER_SLOT
    if status == LIVE_ARMED:
        return LIVE_SLOT
    return None


@dataclass(frozen=True, slots=True)
class TransitionFacts:
    """What the rules need to know about the model and the system at ``now`` (epoch seconds)."""

    now: float
    actor_is_staff: bool = False
    actor_is_system: bool = False
    gate_decision: str = ""
    deployed_at: float | None = None           # when the model entered PAPER_DEPLOYED
    last_rollback_at: float | None = None      # the newest rollback of any model
    paper_slot_holder: int | None = None       # id of the model in the paper slot (None: free)
    model_id: int | None = None
    drift_warn_open: bool = False              # the newest drift check of this model warned


@dataclass(frozen=True, slots=True)
class Refusal:
    rule: str
    detail: str


def check_transition(current: str, target: str, facts: TransitionFacts) -> Refusal | None:
    """None when ``current -> target`` is allowed, else the rule that refuses it."""
    who = TRANSITIONS.get((current, target))
    if who is None:
        return Refusal("ILLEGAL_TRANSITION", f"{current} -> {target} is not a lifecycle transition")
    if who == "staff" and not facts.actor_is_staff:
        return Refusal("STAFF_ONLY", f"{current} -> {target} needs a staff user")
    if who == "system" and not facts.actor_is_system:
        return Refusal("SYSTEM_ONLY", f"{current} -> {target} is made by the system only")
    if target in GATE_PASSED and target != RETIRED and facts.gate_decision != "PASS":
        return Refusal("GATE_NOT_PASS", f"the gate decision is {facts.gate_decision or 'missing'}, not PASS")
    if target == PAPER_DEPLOYED:
        if facts.paper_slot_holder is not None and facts.paper_slot_holder != facts.model_id:
            return Refusal("PAPER_SLOT_TAKEN", f"model {facts.paper_slot_holder} is on paper; promote or roll "
                                               "it back first")
        if facts.last_rollback_at is not None and facts.now - facts.last_rollback_at < REDEPLOY_COOLDOWN_SECONDS:
            left = REDEPLOY_COOLDOWN_SECONDS - (facts.now - facts.last_rollback_at)
            return Refusal("REDEPLOY_COOLDOWN", f"a model was rolled back {(facts.now - facts.last_rollback_at) / 3600:.1f} h "
                                                f"ago; deployments resume in {left / 3600:.1f} h")
    if target == LIVE_ELIGIBLE:
        if facts.deployed_at is None:
            return Refusal("PAPER_MIN_HOURS", "the model has no paper deployment time")
        held = facts.now - facts.deployed_at
        if held < PAPER_MIN_SECONDS:
            return Refusal("PAPER_MIN_HOURS", f"on paper for {held / 3600:.1f} h; 24 h are required")
        if facts.drift_warn_open:
            return Refusal("DRIFT_WARN_OPEN", "the newest drift check warned; wait for a clean check")
    return None
