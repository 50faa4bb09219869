"""Which venue fills are missing from the books (execution.engine.reconcile). No database."""

from __future__ import annotations

from decimal import Decimal as D

import pytest

from execution.engine.reconcile import ReconcileError, missing_fills
from execution.engine.types import Fill, Liquidity, OrderState, OrderStatus, OrderType, Side


def fill(tid: str, qty: str, price: str = "100", fee: str = "0.05") -> Fill:
    return Fill("c1", "KRW-X", Side.BUY, D(price), D(qty), D(fee), 10, Liquidity.MAKER, tid)


def venue(filled: str, fills=(), status=OrderStatus.PARTIALLY_FILLED, avg="100", fee="0") -> OrderState:
    return OrderState("c1", "KRW-X", Side.BUY, OrderType.LIMIT, status, D("10"), D("100"), filled_qty=D(filled),
                      avg_price=D(avg) if avg else None, fee=D(fee), fills=list(fills))


def test_trade_level_fills_are_new_once():
    v = venue("3", [fill("a", "1"), fill("b", "2")])
    assert [f.trade_id for f in missing_fills([], v, now_ts=50)] == ["a", "b"]
    assert [f.trade_id for f in missing_fills([fill("a", "1")], v, now_ts=50)] == ["b"]
    assert missing_fills([fill("a", "1"), fill("b", "2")], v, now_ts=50) == []


def test_cumulative_only_venues_get_deterministic_synthetic_fills():
    v1 = venue("2", avg="100", fee="0.1")
    first = missing_fills([], v1, now_ts=50)
    assert [(f.trade_id, f.qty, f.price, f.fee, f.ts) for f in first] == [("cum:2", D("2"), D("100"), D("0.1"), 50)]
    assert missing_fills([], v1, now_ts=99)[0].trade_id == "cum:2"        # same observation, same id
    v2 = venue("5", avg="106", fee="0.3", status=OrderStatus.FILLED)
    second = missing_fills(first, v2, now_ts=60)
    assert [(f.trade_id, f.qty, f.price, f.fee) for f in second] == [("cum:5", D("3"), D("110"), D("0.2"))]
    assert missing_fills(first + second, v2, now_ts=70) == []


def test_once_cumulative_always_cumulative():
    stored = missing_fills([], venue("2"), now_ts=1)
    v = venue("4", [fill("a", "2"), fill("b", "2")], avg="100")
    assert [f.trade_id for f in missing_fills(stored, v, now_ts=2)] == ["cum:4"]


def test_final_order_with_unreported_trades_gets_the_rest():
    v = venue("3", [fill("a", "1")], status=OrderStatus.CANCELLED, avg="100", fee="0.15")
    new = missing_fills([], v, now_ts=5)
    assert [(f.trade_id, f.qty, f.fee) for f in new] == [("a", D("1"), D("0.05")), ("cum:3", D("2"), D("0.10"))]


def test_books_above_the_venue_are_an_error_never_a_repair():
    with pytest.raises(ReconcileError, match="books hold 3"):
        missing_fills([fill("a", "3")], venue("2"), now_ts=1)
    with pytest.raises(ReconcileError, match="without a price"):
        missing_fills([], venue("2", avg=None), now_ts=1)
