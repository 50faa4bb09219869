"""Regime evaluation per exchange and bar, stored as MarketRegime [RG-2]."""

from __future__ import annotations

import math
from dataclasses import asdict

from regime.engine.classifier import classify
from regime.engine.features import compute_inputs
from regime.engine.types import RegimeState
from regime.models import MarketRegime


def _json_safe(inputs) -> dict:
    return {k: (None if v is None or (isinstance(v, float) and not math.isfinite(v)) else float(v))
            for k, v in asdict(inputs).items()}


def store(exchange: str, bar_ts: int, state: RegimeState, true_label: str = "") -> MarketRegime:
    from django.db import transaction

    from traders import realtime

    row, created = MarketRegime.objects.update_or_create(
        exchange=exchange, bar_ts=bar_ts,
        defaults={"label": state.label.value, "regime_score": float(state.regime_score),
                  "confidence": float(state.confidence), "inputs": _json_safe(state.inputs),
                  **({"true_label": true_label} if true_label else {})},
    )
    if created:
        transaction.on_commit(lambda: realtime.publish(realtime.regime_payload(row)))
    return row


def evaluate(exchange: str, bar_ts: int, true_label: str = "") -> MarketRegime:
    """Classify the market at ``bar_ts`` from the stored candles and store the result."""
    from execution.marketdata import load_view
    from regime.thresholds import current_thresholds

    view = load_view(exchange, bar_ts)
    inputs = compute_inputs(view.candles, leader=view.candles.symbols[0], leader_history=view.leader_history)
    return store(exchange, bar_ts, classify(inputs, current_thresholds()), true_label)
