"""Learning-layer services (worker and web side): labels, lifecycle actions, the bandit, drift
and tuning runs [AI-1]..[AI-6].

Each function loads rows, calls the pure engine in ``strategies.engine.learning`` and writes the
result (with its audit row and action-log event where it changes what trades) in one
transaction. ``strategies.tasks_learning`` holds the thin django-q2 entry points. Nothing here
talks to an exchange.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from datetime import datetime

import numpy as np
from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.utils import timezone

from strategies.engine.learning import lifecycle as lc
from strategies.engine.learning.labels import (
    HORIZON_LONG,
    HORIZON_SHORT,
    LABEL_FIELDS,
    LabelCosts,
    SymbolBars,
    label_snapshot,
)
from strategies.models import FeatureSnapshot, LifecycleError, ModelStatus, ModelVersion

logger = logging.getLogger(__name__)

DEFAULT_FEE = 0.0005          # Upbit KRW taker fee, used when a market's rules are unknown
DEFAULT_SLIPPAGE = 0.0005     # per side, used when the scan stored no book for the market


# -- [AI-1] labels ------------------------------------------------------------------------------

def _label_costs(exchange: str, symbols: set[str]) -> dict[str, float]:
    from execution.models import MarketSnapshot

    fees: dict[str, float] = {}
    for symbol, market in MarketSnapshot.objects.filter(exchange=exchange, symbol__in=symbols).values_list(
            "symbol", "market"):
        try:
            fees[symbol] = float(market.get("taker_fee"))
        except (TypeError, ValueError, AttributeError):
            continue
    return fees


def _half_spread(book: dict | None) -> float | None:
    try:
        bid, ask = float(book["bids"][0][0]), float(book["asks"][0][0])
    except (TypeError, KeyError, IndexError, ValueError):
        return None
    mid = (bid + ask) / 2
    return (ask - bid) / (2 * mid) if mid > 0 and ask >= bid else None


def label_candle_files(paths, *, step: int = 1, slippage: float | None = None, fee: float | None = None,
                       timeframe: str | None = None, out=None) -> dict:
    """The [AI-1] labels of real candle files (``shared/data`` or any OHLCV file): every market at
    every ``step``-th bar, as if a scan had stored a snapshot at that bar's close, with the same
    definitions and costs as ``label_features`` (the market's taker fee from its replayed rules
    unless ``fee`` is given, ``DEFAULT_SLIPPAGE`` per side unless ``slippage`` is given).
    ``timeframe`` resamples first (1m, 5m, 15m and 1h bars divide both horizons). Writes one CSV
    row per market-bar to ``out`` (a text stream) when given; returns the pooled summary
    (``strategies.engine.learning.realdata.label_summary``) per file set. Used by ``manage.py
    label_data``."""
    import csv

    from strategies.engine.learning.labels import LABEL_FIELDS, LabelCosts
    from strategies.engine.learning.realdata import label_bars, label_summary, labels_to_rows, load_real

    candles, markets, described = load_real(paths, timeframe=timeframe)
    costs = [LabelCosts(fee=float(fee if fee is not None else markets[s].taker_fee),
                        slippage=float(slippage if slippage is not None else DEFAULT_SLIPPAGE))
             for s in candles.symbols]
    labels = label_bars(candles, costs, step=step)
    if out is not None:
        writer = csv.DictWriter(out, fieldnames=["symbol", "bar_ts", "price", *LABEL_FIELDS])
        writer.writeheader()
        writer.writerows(labels_to_rows(labels))
    described.pop("quality", None)
    return {"data": described, "step": step,
            "costs": {s: {"fee": c.fee, "slippage": c.slippage} for s, c in zip(candles.symbols, costs, strict=True)},
            **label_summary(labels)}


def label_features(*, limit: int = 20_000) -> dict[str, int]:
    """Fill the labels of feature snapshots whose horizons have passed [AI-1].

    A snapshot is picked while it has no ``labelled_at`` and at least its 60-minute horizon is
    covered by the market data (``execution.marketdata.latest_bar``). The 60-minute label is
    written as soon as it is known; the others, and ``labelled_at``, once the 240-minute horizon
    has passed. Costs per market: the taker fee from its rules and half the spread of the book
    the scan saw as slippage (``DEFAULT_FEE`` / ``DEFAULT_SLIPPAGE`` when unknown). Bulk update;
    running it twice changes nothing. Returns counts."""
    from execution.marketdata import latest_bar
    from execution.models import Candle

    counts = {"seen": 0, "complete": 0, "partial": 0, "no_data": 0}
    exchanges = (FeatureSnapshot.objects.filter(labelled_at__isnull=True)
                 .values_list("scan_run__exchange", flat=True).distinct())
    for exchange in list(exchanges):
        known = latest_bar(exchange)
        if known is None:
            continue
        rows = list(
            FeatureSnapshot.objects.filter(scan_run__exchange=exchange, labelled_at__isnull=True,
                                           bar_ts__lte=known - HORIZON_SHORT * 60)
            .exclude(label_ret_60m__isnull=False, bar_ts__gt=known - HORIZON_LONG * 60)
            .order_by("bar_ts", "id")[:limit]
        )
        if not rows:
            continue
        counts["seen"] += len(rows)
        fees = _label_costs(exchange, {r.symbol for r in rows})
        from strategies.models import ScanRun

        books = dict(ScanRun.objects.filter(pk__in={r.scan_run_id for r in rows}).values_list("id", "inputs__books"))
        by_symbol: dict[str, list[FeatureSnapshot]] = defaultdict(list)
        for r in rows:
            by_symbol[r.symbol].append(r)
        now = timezone.now()
        changed: list[FeatureSnapshot] = []
        for symbol, snaps in by_symbol.items():
            lo = min(s.bar_ts for s in snaps) + 60
            hi = max(s.bar_ts for s in snaps) + HORIZON_LONG * 60
            data = list(Candle.objects.filter(exchange=exchange, symbol=symbol, timeframe="1m", ts__gte=lo, ts__lte=hi)
                        .order_by("ts").values_list("ts", "high", "low", "close"))
            arr = np.array(data, dtype=np.float64).reshape(-1, 4)
            bars = SymbolBars.from_arrays(arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2], arr[:, 3])
            fee = fees.get(symbol, DEFAULT_FEE)
            for snap in snaps:
                if not (math.isfinite(snap.price) and snap.price > 0):
                    snap.labelled_at = now
                    changed.append(snap)
                    counts["no_data"] += 1
                    continue
                book = (books.get(snap.scan_run_id) or {}).get(symbol)
                slippage = _half_spread(book)
                costs = LabelCosts(fee=fee, slippage=DEFAULT_SLIPPAGE if slippage is None else slippage)
                labels = label_snapshot(snap.bar_ts, snap.price, bars, costs, known)
                for name, value in labels.as_fields().items():
                    setattr(snap, name, value)
                if labels.complete:
                    snap.labelled_at = now
                    counts["complete" if labels.label_ret_240m is not None else "no_data"] += 1
                else:
                    counts["partial"] += 1
                changed.append(snap)
        FeatureSnapshot.objects.bulk_update(changed, [*LABEL_FIELDS, "labelled_at"], batch_size=500)
    return counts


# -- [AI-5] lifecycle ---------------------------------------------------------------------------

def _require_staff(user) -> None:
    from traders.services import can_manage_live

    if not can_manage_live(user):
        raise PermissionDenied("only staff may change model versions")


def create_model_version(*, name: str, params: dict, gate: dict | None = None, tuning_run=None,
                         actor=None) -> ModelVersion:
    """A DRAFT model version; with a gate result (``GateResult.to_dict()``) stored beside it."""
    from strategies.engine.learning.params import validate
    from traders import audit

    errors = validate(params)
    if errors:
        raise ValidationError(errors)
    with transaction.atomic():
        model = ModelVersion.objects.create(
            name=name[:80], params=params, tuning_run=tuning_run,
            gate_metrics=(gate or {}).get("metrics", {}), gate_decision=(gate or {}).get("decision", ""),
            gate_rule=((gate or {}).get("rule", "") + (": " + gate["detail"] if gate and gate.get("detail") else ""))[:200],
        )
        audit.record("MODEL_CREATED", actor=actor or "system", obj=model,
                     payload={"model": model.pk, "name": model.name, "params": params,
                              "gate_decision": model.gate_decision})
    return model


def validate_model(model: ModelVersion, *, actor=None, now: datetime | None = None,
                   reason_suffix: str = "") -> ModelVersion:
    """DRAFT -> VALIDATED on a gate PASS, DRAFT -> REJECTED otherwise."""
    target = lc.VALIDATED if model.gate_decision == "PASS" else lc.REJECTED
    reason = f"gate {model.gate_decision or 'missing'}: {model.gate_rule}" + (f" ({reason_suffix})" if reason_suffix else "")
    model.transition(target, actor=actor, reason=reason, now=now)
    return model


def deploy_to_paper(model: ModelVersion, *, actor, now: datetime | None = None, reason: str = "") -> ModelVersion:
    """VALIDATED (or rolled back, after the cooldown) -> PAPER_DEPLOYED. Its baseline is the
    armed model at this moment (None: STANDARD)."""
    _require_staff(actor)
    with transaction.atomic():
        armed = ModelVersion.objects.filter(slot=lc.LIVE_SLOT).exclude(pk=model.pk).first()
        ModelVersion.objects.filter(pk=model.pk).update(baseline=armed)
        model.baseline = armed
        model.transition(lc.PAPER_DEPLOYED, actor=actor, reason=reason or "deployed to paper", now=now,
                         data={"baseline": armed.pk if armed else None})
    return model


def promote_eligible(*, now: datetime | None = None) -> list[int]:
    """PAPER_DEPLOYED -> LIVE_ELIGIBLE for every model whose 24 h on paper have passed without an
    open drift warning (system move; refusals are simply not yet)."""
    promoted = []
    for model in ModelVersion.objects.filter(status=ModelStatus.PAPER_DEPLOYED):
        try:
            model.transition(lc.LIVE_ELIGIBLE, actor=None, reason="24 h on paper completed", now=now)
        except LifecycleError:
            continue
        promoted.append(model.pk)
    return promoted


def arm_live(model: ModelVersion, *, actor, now: datetime | None = None) -> ModelVersion:
    """LIVE_ELIGIBLE -> LIVE_ARMED (staff). The armed model it replaces is RETIRED and becomes
    this one's baseline, so a rollback restores it."""
    _require_staff(actor)
    with transaction.atomic():
        current = ModelVersion.objects.select_for_update().filter(slot=lc.LIVE_SLOT).exclude(pk=model.pk).first()
        if current is not None:
            current.transition(lc.RETIRED, actor=None, reason=f"superseded by #{model.pk} {model.name}", now=now)
        ModelVersion.objects.filter(pk=model.pk).update(baseline=current)
        model.baseline = current
        model.transition(lc.LIVE_ARMED, actor=actor, reason="armed for LIVE AI MODE traders", now=now,
                         data={"replaces": current.pk if current else None})
    return model


def rollback(model: ModelVersion, *, actor=None, reason: str, now: datetime | None = None,
             data: dict | None = None) -> ModelVersion:
    """Take a deployed model out: AUTO_ROLLBACK when ``actor`` is None (the drift monitor),
    MANUAL_ROLLBACK for a staff user. Rolling back the armed model re-arms its RETIRED
    baseline; otherwise AI MODE falls back to the next model in line or STANDARD."""
    auto = actor is None or actor == "system"
    if not auto:
        _require_staff(actor)
    target = lc.AUTO_ROLLBACK if auto else lc.MANUAL_ROLLBACK
    with transaction.atomic():
        was_armed = model.status == lc.LIVE_ARMED
        model.transition(target, actor=None if auto else actor, reason=reason, now=now, data=data)
        restored = None
        if was_armed and model.baseline_id:
            base = ModelVersion.objects.filter(pk=model.baseline_id, status=lc.RETIRED).first()
            if base is not None:
                base.transition(lc.LIVE_ARMED, actor=None, reason=f"restored by the rollback of #{model.pk}",
                                now=now)
                restored = base.pk
        if restored is None:
            from strategies.services import deployed_model
            from traders.services import log_event

            fallback = deployed_model("PAPER")
            log_event(None, "MODEL_FALLBACK", "AI MODE now runs "
                      + (f"model {fallback.name} (#{fallback.pk})" if fallback else "the STANDARD profile")
                      + f" after the rollback of #{model.pk}", data={"model": model.pk})
    return model


def discard(model: ModelVersion, *, actor, now: datetime | None = None) -> ModelVersion:
    """VALIDATED -> REJECTED (staff): the operator does not want this candidate."""
    _require_staff(actor)
    model.transition(lc.REJECTED, actor=actor, reason="discarded by the operator", now=now)
    return model


# -- [AI-4] bandit ------------------------------------------------------------------------------

def bandit_seed() -> int:
    return int(getattr(settings, "QUANTWEB_BANDIT_SEED", 7))


def _position_r_net(trades: list[tuple]) -> float | None:
    """Realised net return of a closed position: its trades' PnL (net of fees; slippage is in
    the fill prices) over the entry value of the quantity they closed."""
    pnl = sum(float(p) for p, _, _ in trades)
    entry_value = sum(float(q) * float(e) for _, q, e in trades)
    return pnl / entry_value if entry_value > 0 else None


def update_bandit(*, now: datetime | None = None, seed: int | None = None, limit: int = 5_000) -> dict:
    """Feed every newly closed position to its (entry regime, leading module) arm, then draw new
    weights [AI-4]. One ``BanditReward`` per position makes a second run a no-op; the draw's
    seed is ``seed`` (setting ``QUANTWEB_BANDIT_SEED``) plus the number of rewards so far, so the
    weights are a function of the history."""
    from execution.models import Position, Trade
    from strategies.engine.learning import bandit as bd
    from strategies.engine.modules import MODULE_NAMES
    from strategies.models import BanditReward, BanditState

    config = bd.BanditConfig()
    now = now or timezone.now()
    seed = bandit_seed() if seed is None else seed
    with transaction.atomic():
        done = BanditReward.objects.values("position_id")
        positions = list(Position.objects.filter(status=Position.Status.CLOSED).exclude(strategy="")
                         .exclude(pk__in=done).order_by("closed_ts", "id")[:limit])
        trades: dict[int, list[tuple]] = defaultdict(list)
        for pid, pnl, qty, entry in Trade.objects.filter(position__in=positions).values_list(
                "position_id", "pnl", "qty", "entry_price"):
            trades[pid].append((pnl, qty, entry))
        states = {(s.regime, s.module): s for s in BanditState.objects.select_for_update()}
        rewards = []
        for p in positions:
            r_net = _position_r_net(trades.get(p.pk, []))
            if r_net is None or not math.isfinite(r_net) or not p.regime:
                # nothing to learn from (no realised trade, no regime): marked as seen only
                rewards.append(BanditReward(position=p, regime=p.regime, module=p.strategy))
                continue
            key = (p.regime, p.strategy)
            state = states.get(key)
            if state is None:
                state = states[key] = BanditState(regime=p.regime, module=p.strategy, alpha=config.prior_alpha,
                                                  beta=config.prior_beta)
            arm = bd.update(bd.Arm(state.alpha, state.beta, state.n), r_net, config)
            state.alpha, state.beta, state.n = arm.alpha, arm.beta, arm.n
            rewards.append(BanditReward(position=p, regime=p.regime, module=p.strategy, r_net=r_net,
                                        reward=bd.reward_of(r_net, config)))
        BanditReward.objects.bulk_create(rewards)
        for regime in bd.BANDIT_REGIMES:
            for module in MODULE_NAMES:
                states.setdefault((regime, module), BanditState(regime=regime, module=module,
                                                                alpha=config.prior_alpha, beta=config.prior_beta))
        needs_draw = bool(rewards) or any(s.sampled_at is None for s in states.values())
        if needs_draw:
            total = BanditReward.objects.count()
            arms = {k: bd.Arm(s.alpha, s.beta, s.n) for k, s in states.items()}
            weights = bd.sample_weights(arms, seed + total, modules=MODULE_NAMES)
            for (regime, module), s in states.items():
                s.weight = weights[regime][module]
                s.sampled_at = now
        for s in states.values():
            s.save()
    return {"rewards": len(rewards), "resampled": needs_draw}


def bandit_table() -> list[dict]:
    """Per regime, each module's posterior and current weight (for the page and the API)."""
    from strategies.engine.learning.bandit import BANDIT_REGIMES, NEUTRAL_REGIMES
    from strategies.models import BanditState

    rows: dict[str, dict] = {}
    for s in BanditState.objects.order_by("regime", "module"):
        row = rows.setdefault(s.regime, {"regime": s.regime, "neutral": s.regime in NEUTRAL_REGIMES, "modules": []})
        row["modules"].append({"module": s.module, "alpha": s.alpha, "beta": s.beta, "n": s.n,
                               "mean": s.alpha / (s.alpha + s.beta), "weight": s.weight,
                               "sampled_at": s.sampled_at})
    order = {r: i for i, r in enumerate(BANDIT_REGIMES)}
    return sorted(rows.values(), key=lambda r: order.get(r["regime"], 99))


# -- [AI-6] drift and automatic rollback --------------------------------------------------------

class _Audience:
    """Which model AI MODE traders of each mode ran at any moment, from the transition history
    (``ModelTransition.paper_model`` / ``live_model`` after each move; None = STANDARD). Trades
    carry the model recorded at entry (``Trade.model_version``); this is the fallback for rows
    without one, and tells which model runs now."""

    def __init__(self) -> None:
        from strategies.models import ModelTransition

        rows = list(ModelTransition.objects.order_by("created_at", "id")
                    .values_list("created_at", "paper_model_id", "live_model_id"))
        self.times = np.array([r[0].timestamp() for r in rows], dtype=np.float64)
        self.paper = [r[1] for r in rows]
        self.live = [r[2] for r in rows]

    def model_at(self, ts: float, mode: str) -> int | None:
        i = int(np.searchsorted(self.times, ts, side="right")) - 1
        if i < 0:
            return None
        return self.live[i] if mode == "LIVE" else self.paper[i]


def _trade_r_net(pnl, qty, entry) -> float | None:
    value = float(qty) * float(entry)
    return float(pnl) / value if value > 0 else None


def _net_return(trader_ids: list[int], start_ts: float, end_ts: float) -> float | None:
    """Equity change of these traders from ``start_ts`` to ``end_ts`` (last snapshot at or before
    each; a trader without one before the start counts from its first one after it)."""
    from traders.models import EquitySnapshot

    start_sum = end_sum = 0.0
    for tid in trader_ids:
        snaps = EquitySnapshot.objects.filter(trader_id=tid, ts__lte=end_ts)
        end = snaps.order_by("-ts").values_list("equity", flat=True).first()
        start = (snaps.filter(ts__lte=start_ts).order_by("-ts").values_list("equity", flat=True).first()
                 or snaps.filter(ts__gt=start_ts).order_by("ts").values_list("equity", flat=True).first())
        if start is None or end is None or start <= 0:
            continue
        start_sum += float(start)
        end_sum += float(end)
    return end_sum / start_sum - 1.0 if start_sum > 0 else None


def _regime_counts(exchanges: set[str], start_ts: float, end_ts: float) -> tuple[dict[str, int], float]:
    """Regime label counts in ``(start_ts, end_ts]`` and the hours the labels span."""
    from django.db.models import Count, Max, Min

    from regime.models import MarketRegime

    rows = MarketRegime.objects.filter(exchange__in=exchanges, bar_ts__gt=start_ts, bar_ts__lte=end_ts)
    span = rows.aggregate(lo=Min("bar_ts"), hi=Max("bar_ts"))
    hours = (span["hi"] - span["lo"]) / 3600 if span["lo"] is not None else 0.0
    return {r["label"]: r["n"] for r in rows.values("label").annotate(n=Count("id"))}, hours


def drift_inputs(model: ModelVersion, now_ts: float, config=None, previous_streak: int = 0):
    """Gather the DriftInputs of one deployed model at ``now_ts`` (see ``engine.learning.drift``)."""
    from execution.models import Trade
    from strategies.engine.learning.drift import DriftConfig, DriftInputs
    from traders.models import Trader

    c = config or DriftConfig()
    window_start = now_ts - c.window_hours * 3600
    deployed = model.deployed_at.timestamp()
    ref_start = deployed - c.reference_days * 86400
    role_start = model.armed_at.timestamp() if model.slot == lc.LIVE_SLOT and model.armed_at else deployed
    audience = _Audience()
    trades = (Trade.objects.filter(trader__profile__key="AI_MODE", exit_ts__gt=min(ref_start, window_start),
                                   exit_ts__lte=now_ts)
              .order_by("exit_ts", "id").values_list("mode", "entry_ts", "exit_ts", "pnl", "qty", "entry_price",
                                                     "model_version_id"))
    recent, reference, mine = [], [], []
    for mode, entry_ts, exit_ts, pnl, qty, entry, recorded in trades:
        r = _trade_r_net(pnl, qty, entry)
        if r is None:
            continue
        # The model recorded at entry decides; the transition history only for rows without one
        # (older rows, and entries made while no model was deployed). A recorded entry may be
        # stamped a little before ``deployed`` (opened_ts is the bar close, the scan ran after the
        # deploy); an earlier deployment of the same model ended in a rollback at least the
        # redeploy cooldown before this one, so that much slack cannot pull its trades in.
        owner = recorded if recorded is not None else audience.model_at(entry_ts, mode)
        since = deployed - lc.REDEPLOY_COOLDOWN_SECONDS if recorded is not None else deployed
        if owner == model.pk and entry_ts >= since:
            mine.append(r)
            if exit_ts > window_start:
                recent.append(r)
        elif owner == model.baseline_id and ref_start < exit_ts <= deployed:
            reference.append(r)
    losses = 0
    for r in reversed(mine):
        if r >= 0:
            break
        losses += 1
    traders = list(Trader.objects.filter(profile__key="AI_MODE", removed_at__isnull=True)
                   .values_list("id", "mode", "exchange"))
    running = [(tid, ex) for tid, mode, ex in traders if audience.model_at(now_ts, mode) == model.pk]
    exchanges = {ex for _, ex in running} or {"sim"}
    net = _net_return([tid for tid, _ in running], max(window_start, role_start), now_ts) if running else None
    gate = model.gate_metrics or {}
    recent_regimes, _ = _regime_counts(exchanges, max(window_start, deployed), now_ts)
    reference_regimes, reference_hours = _regime_counts(exchanges, ref_start, deployed)
    return DriftInputs(
        recent_r=np.array(recent), reference_r=np.array(reference), net_return_24h=net, consecutive_losses=losses,
        recent_regimes=recent_regimes, reference_regimes=reference_regimes, reference_hours=reference_hours,
        previous_streak=previous_streak, expected_mean=gate.get("e"), expected_std=gate.get("std"),
    )


def check_drift(*, now: datetime | None = None, config=None) -> list[dict]:
    """One drift check per deployed model per hour [AI-6]; a ROLLBACK verdict rolls the model
    back automatically (``rollback`` with the system as actor). Idempotent within the hour."""
    from strategies.engine.learning.drift import DriftStatus, evaluate_drift
    from strategies.engine.learning.gate import json_safe
    from strategies.models import DriftCheck
    from traders.models import EventLevel
    from traders.services import log_event

    now = now or timezone.now()
    now_ts = now.timestamp()
    bucket = int(now_ts // 3600)
    out = []
    for model in ModelVersion.objects.filter(slot__isnull=False).order_by("id"):
        if model.deployed_at is None or DriftCheck.objects.filter(model_version=model, bucket=bucket).exists():
            continue
        previous = DriftCheck.objects.filter(model_version=model).order_by("-window_end", "-id").first()
        inputs = drift_inputs(model, now_ts, config, previous.warn_streak if previous else 0)
        result = evaluate_drift(inputs, config)
        with transaction.atomic():
            check = DriftCheck.objects.create(
                model_version=model, role=model.slot, window_end=now, bucket=bucket, status=result.status.value,
                reasons=list(result.reasons) + ([f"ROLLBACK:{result.rollback_rule}"] if result.rollback_rule else []),
                metrics=json_safe(result.metrics), warn_streak=result.warn_streak,
            )
            if result.status is DriftStatus.DRIFT_WARN:
                log_event(None, "DRIFT_WARN", f"model {model.name} (#{model.pk}): {', '.join(result.reasons)} "
                          f"(warning {result.warn_streak} in a row)", level=EventLevel.WARN,
                          data={"model": model.pk, "check": check.pk, **json_safe(result.metrics)})
            if result.status is DriftStatus.ROLLBACK:
                rollback(model, actor=None, now=now,
                         reason=f"{result.rollback_rule}: " + ", ".join(
                             f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                             for k, v in json_safe(result.metrics).items()
                             if k in ("net_return_24h", "consecutive_losses", "warn_streak", "z", "regime_psi")
                             and v is not None),
                         data={"drift_check": check.pk, "rule": result.rollback_rule})
        out.append({"model": model.pk, "status": result.status.value, "reasons": list(result.reasons),
                    "rollback_rule": result.rollback_rule})
    return out


# -- [AI-3] tuning runs -------------------------------------------------------------------------

TUNING_TASK = "strategies.tasks_learning.run_tuning"
TUNING_DEFAULTS: dict = {"source": "sim", "sim_seed": 7, "sim_markets": 20, "days": 90.0, "timeframe": "1h",
                         "data_files": [], "bar": None, "last_days": None, "n_trials": 60, "seed": 0,
                         "holdout_fraction": 0.3, "train_days": 14.0, "test_days": 7.0, "versions": 3}
SIM_TIMEFRAMES = {"5m": 300, "15m": 900, "1h": 3600, "4h": 14400}
#: bars candle files may be resampled to for tuning (``bar``); without one, the run takes the
#: finest bar whose markets x bars fit the K = 60 runtime budget
#: (``strategies.engine.learning.realdata.auto_bar``; docs/learning.md gives the measurements)
FILE_BARS = SIM_TIMEFRAMES
BAR_CHOICES: tuple[str, ...] = tuple(SIM_TIMEFRAMES)       # the API's enum of both (quantweb.settings)
DEFAULT_FILE_BAR = "auto"
FILES_ONLY = ("data_files", "bar", "last_days")


def tuning_bar(file_timeframe: str, bar: str | None) -> str:
    """The bar a tuning run on ``file_timeframe`` files runs on: ``bar``, or ``"auto"`` (chosen
    by ``realdata.auto_bar`` once the files are read); ValueError when the files cannot be
    turned into ``bar``."""
    from execution.engine.types import TIMEFRAME_SECONDS

    src = TIMEFRAME_SECONDS.get(file_timeframe)
    if src is None:
        raise ValueError(f"unknown timeframe {file_timeframe!r}")
    if bar is None or bar == "auto":
        return "auto"
    dst = FILE_BARS[bar]
    if dst < src or dst % src:
        raise ValueError(f"{file_timeframe} files cannot be resampled to {bar} bars (a multiple of "
                         f"{file_timeframe} is needed)")
    return bar


def tuning_options(data: dict) -> dict:
    """Validate a tuning request (``api_learning.TuningRequestSerializer`` shape) against the
    defaults; raises ValidationError naming every bad field."""
    errors: dict[str, str] = {}
    out = {**TUNING_DEFAULTS, **{k: v for k, v in data.items() if v is not None}}
    unknown = set(data) - set(TUNING_DEFAULTS)
    for key in sorted(unknown):
        errors[key] = "unknown option"
    if out["source"] not in ("sim", "files"):
        errors["source"] = "sim or files"
    if out["source"] == "sim" and out["timeframe"] not in SIM_TIMEFRAMES:
        errors["timeframe"] = f"one of {', '.join(SIM_TIMEFRAMES)}"
    if out["source"] == "sim":
        for key in FILES_ONLY:
            if data.get(key) not in (None, [], ""):
                errors[key] = "only with source=files"
    if out["source"] == "files":
        from strategies.services_backtest import data_catalogue

        offered = {f.id: f for f in data_catalogue()}
        files = out["data_files"]
        if not files:
            errors["data_files"] = "choose at least two candle files of one timeframe"
        elif any(f not in offered for f in files):
            errors["data_files"] = "not one of the data files offered"
        elif len({offered[f].timeframe for f in files}) != 1:
            errors["data_files"] = "the files must share one timeframe"
        if out["bar"] is not None and out["bar"] not in FILE_BARS:
            errors["bar"] = f"one of {', '.join(FILE_BARS)} (or empty: the finest bar within the runtime budget)"
        elif "data_files" not in errors and files:
            try:
                tuning_bar(offered[files[0]].timeframe, out["bar"])
            except ValueError as exc:
                errors["bar"] = str(exc)
        last = out["last_days"]
        if last is not None and (isinstance(last, bool) or not isinstance(last, int | float)
                                 or not math.isfinite(last) or not 10 <= last <= 366):
            errors["last_days"] = "must be a number from 10 to 366 (or empty: every day of the files)"
    checks = {"sim_markets": (2, 100), "days": (10, 366), "n_trials": (1, 500), "sim_seed": (0, 2**31 - 1),
              "seed": (0, 2**31 - 1), "holdout_fraction": (0.05, 0.8), "train_days": (0, 180),
              "test_days": (1, 90), "versions": (0, 10)}
    for key, (lo, hi) in checks.items():
        value = out[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) \
                or not lo <= value <= hi:
            errors[key] = f"must be a number from {lo} to {hi}"
    if errors:
        raise ValidationError(errors)
    return out


def start_tuning(*, user, options: dict):
    """Record a QUEUED TuningRun (staff only) with its audit row and enqueue it on the slow queue
    after commit. The web never tunes."""
    from strategies.models import TuningRun
    from strategies.services_backtest import slow_queue_options
    from traders import audit

    _require_staff(user)
    opts = tuning_options(options)
    with transaction.atomic():
        run = TuningRun.objects.create(seed=int(opts["seed"]), n_trials=int(opts["n_trials"]), config=opts,
                                       created_by=user)
        audit.record("TUNING_STARTED", actor=user, obj=run, payload={"run": run.pk, "config": opts})
        transaction.on_commit(lambda: _enqueue_tuning(run.pk, slow_queue_options()))
    return run


def _enqueue_tuning(run_id: int, options: dict) -> None:
    from django_q.tasks import async_task

    from strategies.models import TuningRun

    try:
        async_task(TUNING_TASK, run_id, task_name=f"tuning-{run_id}", group="tuning", q_options=options)
    except Exception as exc:  # the queue refused it: nobody else would ever run it
        logger.exception("could not enqueue tuning run %s", run_id)
        TuningRun.objects.filter(pk=run_id, status=TuningRun.Status.QUEUED).update(
            status=TuningRun.Status.FAILED, message=f"could not queue the run: {type(exc).__name__}: {exc}"[:300],
            finished_at=timezone.now())


def _tuning_data(opts: dict):
    """(candles, market rules, description) of a tuning run's data."""
    if opts["source"] == "sim":
        from execution.engine.sim import SimConfig, SimMarket

        seconds = SIM_TIMEFRAMES[opts["timeframe"]]
        market = SimMarket(SimConfig(seed=int(opts["sim_seed"]), n_markets=int(opts["sim_markets"]),
                                     bar_seconds=seconds))
        candles = market.generate(int(round(float(opts["days"]) * 86400 / seconds))).candles
        return candles, {m.symbol: m for m in market.market_info()}, {
            "source": "sim", "seed": opts["sim_seed"], "markets": len(candles.symbols), "timeframe": opts["timeframe"]}
    from strategies.engine.learning.realdata import load_real
    from strategies.services_backtest import resolve_data_file

    files = opts["data_files"]
    # no bar: the finest within the runtime budget for these markets and days (realdata.auto_bar)
    candles, markets, described = load_real([resolve_data_file(f) for f in files], timeframe=opts.get("bar") or "auto",
                                            days=opts.get("last_days"))
    return candles, markets, {**described, "files": files}


def run_tuning(run_id: int) -> dict:
    """Run one tuning run (worker, slow queue): build the evaluator's panel, run K optuna trials
    with progress stored after each, gate them, keep the PASS trials as ModelCandidates and turn
    the best ``versions`` of them into VALIDATED model versions. Idempotent: a run that is no
    longer QUEUED is left alone."""
    from strategies.engine.learning.evaluator import build_panel
    from strategies.engine.learning.tick_evaluator import TickEvaluator
    from strategies.engine.learning.tuning import TuningConfig, best_passing, describe, tune
    from strategies.models import ModelCandidate, TuningRun
    from traders.models import EventLevel
    from traders.services import log_event

    claimed = TuningRun.objects.filter(pk=run_id, status=TuningRun.Status.QUEUED).update(
        status=TuningRun.Status.RUNNING, started_at=timezone.now(), heartbeat_at=timezone.now(),
        message="building the evaluator's panel")
    if not claimed:
        return {"run": run_id, "skipped": True}
    run = TuningRun.objects.get(pk=run_id)
    opts = run.config
    try:
        started = time.perf_counter()
        candles, markets, described = _tuning_data(opts)
        panel = build_panel(candles, markets)
        panel_seconds = time.perf_counter() - started
        evaluator = TickEvaluator(panel, candles, markets)     # every trial scored by the full tick
        config = TuningConfig(n_trials=run.n_trials, seed=run.seed, holdout_fraction=float(opts["holdout_fraction"]),
                              train_days=float(opts["train_days"]), test_days=float(opts["test_days"]))
        best: dict = {}

        def progress(record, done: int) -> None:
            nonlocal best
            if not best or record.objective > best["objective"]:
                best = {"number": record.number, "objective": record.objective, "params": record.params}
            TuningRun.objects.filter(pk=run_id).update(trials_done=done, best=best, heartbeat_at=timezone.now(),
                                                       message=f"trial {done} of {run.n_trials}")

        result = tune(evaluator, evaluator.span(), len(candles.symbols), config, on_trial=progress)
        with transaction.atomic():
            candidates = {}
            for record in result.passed:
                gate = record.gate.to_dict()
                candidates[record.number] = ModelCandidate.objects.create(
                    tuning_run=run, trial_number=record.number, params=record.params, objective=record.objective,
                    metrics={**gate["metrics"], "folds": record.folds}, gate_decision=gate["decision"],
                    gate_rule=gate["rule"], gate_detail=gate["detail"][:300])
            versions = []
            for record in best_passing(result, int(opts["versions"])):
                model = create_model_version(name=f"tuning {run.pk} #{record.number}", params=record.params,
                                             gate=record.gate.to_dict(), tuning_run=run)
                validate_model(model, reason_suffix=f"tuning run {run.pk}")
                ModelCandidate.objects.filter(pk=candidates[record.number].pk).update(model_version=model)
                versions.append(model.pk)
            summary = {**result.summary(), "panel_seconds": round(panel_seconds, 2), "data": described,
                       "evaluator": "strategies.engine.learning.tick_evaluator.TickEvaluator", "trials": describe(result.trials),
                       "versions": versions}
            counts = summary["decisions"]
            TuningRun.objects.filter(pk=run_id).update(
                status=TuningRun.Status.DONE, finished_at=timezone.now(), heartbeat_at=timezone.now(),
                trials_done=len(result.trials), n_pass=counts["PASS"], n_hold=counts["HOLD"], n_reject=counts["REJECT"],
                summary=summary, message=f"{counts['PASS']} of {len(result.trials)} trials passed the gate")
            log_event(None, "TUNING_DONE", f"tuning run {run.pk}: {counts['PASS']} PASS, {counts['HOLD']} HOLD, "
                      f"{counts['REJECT']} REJECT; {len(versions)} model version(s) VALIDATED",
                      data={"run": run.pk, "versions": versions})
        return {"run": run_id, "passed": counts["PASS"], "versions": versions}
    except Exception as exc:
        logger.exception("tuning run %s failed", run_id)
        TuningRun.objects.filter(pk=run_id).update(status=TuningRun.Status.FAILED, finished_at=timezone.now(),
                                                   message=f"{type(exc).__name__}: {exc}"[:300])
        log_event(None, "TUNING_FAILED", f"tuning run {run_id} failed: {type(exc).__name__}: {exc}",
                  level=EventLevel.WARN, data={"run": run_id})
        return {"run": run_id, "error": str(exc)[:300]}


def candidate_to_model(candidate, *, actor):
    """Staff: turn a PASS candidate that has no model version yet into a VALIDATED one."""
    _require_staff(actor)
    if candidate.gate_decision != "PASS":
        raise ValidationError("only a candidate that passed the gate becomes a model version")
    if candidate.model_version_id:
        raise ValidationError(f"candidate already has model version #{candidate.model_version_id}")
    with transaction.atomic():
        model = create_model_version(
            name=f"tuning {candidate.tuning_run_id} #{candidate.trial_number}", params=candidate.params,
            gate={"decision": candidate.gate_decision, "rule": candidate.gate_rule, "detail": candidate.gate_detail,
                  "metrics": {k: v for k, v in candidate.metrics.items() if k != "folds"}},
            tuning_run=candidate.tuning_run, actor=actor)
        validate_model(model, actor=actor)
        type(candidate).objects.filter(pk=candidate.pk).update(model_version=model)
    return model
