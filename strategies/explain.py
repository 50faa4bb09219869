"""Recompute a stored Signal from its ScanRun's inputs and compare [PL-2] (``manage.py
explain_signal``; the trader page and the API can call the same functions).

A tick stores, in ``ScanRun.inputs`` (``traders.trading.scan_inputs``), everything its scan
read except the candles: the window bounds, the leader history length, books, tickers, market
flags, the EMA state before the scan, the held markets and the profile parameters. The candles
are reloaded from the Candle table, which keeps them only for the retention window
(``execution.marketdata.prune``). :func:`recompute` rebuilds the exact arguments of
``strategies.engine.pipeline.scan`` and runs it again; :func:`compare` lines the stored values
up against the recomputed ones.

Agreement: ``scan`` is pure, so on the same machine the numbers agree bit for bit. Floats are
called equal within ``REL_TOL`` because numpy's SIMD kernels (exp, log) may differ in the last
bits between CPUs; codes, labels and directions must be identical.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

import numpy as np
from django.db.models import Max, Min

from execution.engine.types import Candles, MarketInfo, OrderBook, Ticker
from strategies.engine.pipeline import ScanParams, scan
from strategies.engine.types import Action, Direction
from strategies.models import ProfileKey, Signal

REL_TOL = 1e-9
REQUIRED_INPUTS = ("window_bars", "first_ts", "last_ts", "leader_bars", "symbols", "ema_in", "held", "books",
                   "tickers", "profile")
# The tick stores a scan's ENTER proposal as SKIP until the checks pass (then ENTER), an EXIT
# as EXIT and everything else as HOLD (traders.trading._action).
STORED_ACTIONS = {Action.ENTER: {"ENTER", "SKIP"}, Action.EXIT: {"EXIT"}, Action.HOLD: {"HOLD"},
                  Action.SKIP: {"HOLD"}}


class ExplainError(Exception):
    """The scan cannot be rebuilt (no scan run, no stored inputs, candles pruned)."""


def candles_checksum(*candles: Candles | None) -> str:
    """CRC-32 of the candle arrays as a scan read them (NaN for missing bars included): the
    tick stores it so a recompute can tell whether the Candle table still holds the same bars."""
    crc = 0
    for c in candles:
        if c is None:
            continue
        crc = zlib.crc32(np.ascontiguousarray(c.ts, dtype=np.int64).tobytes(), crc)
        for name in ("open", "high", "low", "close", "volume"):
            crc = zlib.crc32(memoryview(np.ascontiguousarray(getattr(c, name), dtype=np.float64)).cast("B"), crc)
    return f"{crc:08x}"


def _finite(value: Any) -> float | None:
    """The stored form of a float: NaN and infinities become None (``traders.trading._finite``)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _retention_error(exchange: str, symbol: str, start_ts: int, what: str) -> ExplainError:
    from execution.marketdata import KEEP_BARS, LEADER_KEEP_BARS

    return ExplainError(
        f"the candles of this scan are no longer stored: {what} needs {exchange} {symbol} 1m bars from "
        f"{start_ts}, but they were deleted by candle retention (execution.marketdata.prune keeps "
        f"KEEP_BARS={KEEP_BARS} one-minute bars per market and LEADER_KEEP_BARS={LEADER_KEEP_BARS} for the "
        f"leader, i.e. {KEEP_BARS // 1440} days); a signal can be explained only while its window is retained"
    )


def _check_retained(exchange: str, symbols: tuple[str, ...], first_ts: int, leader_start: int | None,
                    *, proven_changed: bool) -> None:
    """Raise when retention has removed bars the scan read: the window starts before the
    oldest bar kept. Without a stored checksum to prove that the reloaded bars differ
    (``proven_changed``), the start must also lie beyond the retention horizon, so a market
    whose history simply starts later is not mistaken for a pruned one."""
    from execution.marketdata import BAR, KEEP_BARS, LEADER_KEEP_BARS
    from execution.models import Candle

    def pruned(syms: Iterable[str], start: int, keep: int) -> bool:
        span = Candle.objects.filter(exchange=exchange, timeframe="1m", symbol__in=list(syms)).aggregate(
            oldest=Min("ts"), newest=Max("ts"))
        if span["oldest"] is None:
            return True
        return start < span["oldest"] and (proven_changed or start < span["newest"] - keep * BAR)

    leader, others = symbols[0], symbols[1:]
    if leader_start is not None and pruned([leader], leader_start, LEADER_KEEP_BARS):
        raise _retention_error(exchange, leader, leader_start, "the regime's leader history")
    if pruned([leader], first_ts, LEADER_KEEP_BARS) or (others and pruned(others, first_ts, KEEP_BARS)):
        raise _retention_error(exchange, ", ".join(symbols[:3]) + (" ..." if len(symbols) > 3 else ""), first_ts,
                               "the scan window")


def _markets(exchange: str, symbols: tuple[str, ...], inputs: dict) -> tuple[dict[str, MarketInfo], list[str]]:
    """MarketInfo per market: the rules from MarketSnapshot, the flags the scan read (caution,
    can_short) from the stored inputs. Scans stored before the flags were kept use today's."""
    from execution.marketdata import market_info_from_json
    from execution.models import MarketSnapshot

    warnings: list[str] = []
    snaps = {s.symbol: s.market for s in MarketSnapshot.objects.filter(exchange=exchange, symbol__in=symbols)}
    flags = inputs.get("markets")
    caution = set(flags.get("caution", ())) if flags is not None else set()
    can_short = set(flags.get("can_short", ())) if flags is not None else set()
    out: dict[str, MarketInfo] = {}
    for symbol in symbols:
        if symbol in snaps and snaps[symbol]:
            info = market_info_from_json(symbol, snaps[symbol])
        else:  # delisted since: only the flags matter to the scan
            info = MarketInfo(symbol=symbol, base=symbol, quote="")
        if flags is not None:
            info = replace(info, caution=symbol in caution, can_short=symbol in can_short)
        out[symbol] = info
    if flags is None:
        warnings.append("market flags (caution, can_short) were not stored with this scan; today's are used")
    return out, warnings


def _params(signal: Signal, inputs: dict) -> tuple[ScanParams, list[str]]:
    params, warnings = _profile_params(signal, inputs)
    if "regime_thresholds" in inputs:   # the regime thresholds the tick ran with [RG-2]
        from dataclasses import replace as _replace

        from regime.engine.classifier import RegimeThresholds

        params = _replace(params, thresholds=RegimeThresholds.from_dict(inputs["regime_thresholds"]))
    return params, warnings


def _profile_params(signal: Signal, inputs: dict) -> tuple[ScanParams, list[str]]:
    from risk.engine.profiles import RiskProfile
    from strategies.engine.learning.params import apply_scan_params
    from strategies.services import effective_profile
    from traders.trading import scan_params

    warnings: list[str] = []
    if "effective_profile" in inputs:   # the exact profile the tick ran with
        over = inputs.get("scan_overrides") or {}   # AI MODE's model scan keys and bandit weights
        params = scan_params(RiskProfile.from_dict(inputs["effective_profile"]))
        return apply_scan_params(params, over.get("scan"), over.get("bandit_weights")), warnings
    profile_row = signal.trader.profile
    if profile_row.key == ProfileKey.AI_MODE:
        warnings.append("AI MODE: the live model's parameters are today's, not necessarily the scan's")
    return scan_params(effective_profile(profile_row, params=inputs["profile"])), warnings


def _books(data: dict) -> dict[str, OrderBook]:
    return {s: OrderBook(s, int(b["ts"]), np.array(b["bids"], dtype=float).reshape(-1, 2),
                         np.array(b["asks"], dtype=float).reshape(-1, 2)) for s, b in data.items()}


def _tickers(data: dict) -> dict[str, Ticker]:
    return {s: Ticker(s, *row) for s, row in data.items()}


def recompute(signal: Signal) -> dict[str, Any]:
    """Rerun the scan that produced ``signal`` from the stored inputs and the retained candles.

    Returns the recomputed values in the stored shape (floats as the tick stores them, NaN as
    None): ``module_scores``, ``base_score``, ``total_score``, ``final_score``, ``direction``,
    ``reason_codes``, ``raw_metrics``, ``action`` (the scan's proposal), ``regime`` (label,
    score, confidence, inputs), ``bar_ts``, ``candles_checksum`` and ``warnings``. ``found`` is
    False when the scan no longer produces a signal for the market. Raises ExplainError.
    """
    from execution.marketdata import BAR, _candles

    run = signal.scan_run
    if run is None:
        raise ExplainError(f"signal {signal.pk} has no scan run to recompute from")
    inputs = run.inputs or {}
    missing = [k for k in REQUIRED_INPUTS if k not in inputs]
    if missing:
        raise ExplainError(f"scan run {run.pk} does not store {', '.join(missing)}; it cannot be recomputed")
    symbols = tuple(inputs["symbols"])
    first_ts, last_ts = int(inputs["first_ts"]), int(inputs["last_ts"])
    leader_bars = int(inputs["leader_bars"])
    leader_start = last_ts - (leader_bars - 1) * BAR if leader_bars else None
    candles = _candles(run.exchange, symbols, first_ts, last_ts)
    if candles.n_bars != int(inputs["window_bars"]):
        raise ExplainError(f"scan run {run.pk}: window {first_ts}..{last_ts} holds {candles.n_bars} bars, "
                           f"the scan read {inputs['window_bars']}")
    leader_history = _candles(run.exchange, symbols[:1], leader_start, last_ts) if leader_start is not None else None
    checksum = candles_checksum(candles, leader_history)
    stored_checksum = inputs.get("candles_checksum")
    if checksum != stored_checksum:
        _check_retained(run.exchange, symbols, first_ts, leader_start, proven_changed=stored_checksum is not None)
    markets, warnings = _markets(run.exchange, symbols, inputs)
    params, more = _params(signal, inputs)
    warnings += more

    result = scan(candles, books=_books(inputs["books"]), tickers=_tickers(inputs["tickers"]), params=params,
                  ema_state=inputs["ema_in"], held={s: Direction(int(d)) for s, d in inputs["held"].items()},
                  markets=markets, leader_history=leader_history)
    mine = next((s for s in result.signals if s.symbol == signal.symbol), None)
    regime = result.regime
    out: dict[str, Any] = {
        "signal": signal.pk, "scan_run": run.pk, "symbol": signal.symbol, "bar_ts": result.ts,
        "found": mine is not None,
        "regime": {"label": regime.label.value, "regime_score": float(regime.regime_score),
                   "confidence": float(regime.confidence),
                   "inputs": {k: _finite(v) for k, v in _asdict(regime.inputs).items()}},
        "candles_checksum": checksum,
        "warnings": warnings,
    }
    if mine is None:
        out.update(module_scores={}, base_score=None, total_score=None, final_score=None, direction=None,
                   reason_codes=[], raw_metrics={}, action=None)
    else:
        out.update(
            module_scores={k: _finite(v) for k, v in mine.module_scores.items()},
            base_score=float(mine.base_score), total_score=float(mine.total_score),
            final_score=float(mine.final_score), direction=int(mine.direction), reason_codes=list(mine.reason_codes),
            raw_metrics={k: _finite(v) for k, v in mine.raw_metrics.items()}, action=mine.action.value,
        )
    return out


def _asdict(inputs: Any) -> dict[str, Any]:
    return {name: getattr(inputs, name) for name in inputs.__dataclass_fields__}


def _row(field: str, stored: Any, recomputed: Any, match: bool | None = None) -> dict[str, Any]:
    diff = None
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (stored, recomputed))
    if numeric:
        diff = abs(float(stored) - float(recomputed))
        if match is None:
            match = diff <= REL_TOL * max(1.0, abs(float(stored)))
    elif match is None:
        match = stored == recomputed
    return {"field": field, "stored": stored, "recomputed": recomputed, "match": bool(match), "diff": diff}


def compare(signal: Signal, recomputed: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Stored vs recomputed, one row per value: ``{field, stored, recomputed, match, diff}``
    (``diff`` = absolute difference for numbers, else None). Raises ExplainError."""
    r = recomputed if recomputed is not None else recompute(signal)
    run = signal.scan_run
    rows = [_row("bar_ts", signal.bar_ts, r["bar_ts"])]
    if not r["found"]:
        rows.append(_row("signal", signal.symbol, None, match=False))
    stored_checksum = (run.inputs or {}).get("candles_checksum")
    if stored_checksum is not None:
        rows.append(_row("candles_checksum", stored_checksum, r["candles_checksum"]))
    for name in sorted(set(signal.module_scores) | set(r["module_scores"])):
        rows.append(_row(f"module_scores.{name}", signal.module_scores.get(name), r["module_scores"].get(name)))
    for name in ("base_score", "total_score", "final_score"):
        rows.append(_row(name, getattr(signal, name), r[name]))
    rows.append(_row("direction", signal.direction, r["direction"]))
    rows.append(_row("reason_codes", list(signal.reason_codes), r["reason_codes"]))
    proposal = r["action"]
    rows.append(_row("action", signal.action, proposal,
                     match=proposal is not None and signal.action in STORED_ACTIONS[Action(proposal)]))
    rows.append(_row("regime.label", signal.regime, r["regime"]["label"]))
    regime_row = run.regime
    if regime_row is not None:
        rows.append(_row("regime.regime_score", regime_row.regime_score, r["regime"]["regime_score"]))
        rows.append(_row("regime.confidence", regime_row.confidence, r["regime"]["confidence"]))
        for name, value in r["regime"]["inputs"].items():
            rows.append(_row(f"regime.inputs.{name}", (regime_row.inputs or {}).get(name), value))
    for name in sorted(set(signal.raw_metrics) | set(r["raw_metrics"])):
        rows.append(_row(f"raw_metrics.{name}", signal.raw_metrics.get(name), r["raw_metrics"].get(name)))
    return rows
