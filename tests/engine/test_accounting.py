"""Decimal position accounting: cash, cost basis and realised PnL agree with the fills exactly."""

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from execution.engine.accounting import Book, apply_fill
from execution.engine.types import Fill, Liquidity, Side


def fill(side, price, qty, fee, n=1):
    return Fill("c", "KRW-BTC", side, D(price), D(qty), D(fee), 0, Liquidity.TAKER, f"t{n}")


def test_round_trip_pnl_includes_both_fees():
    book = Book()
    r1 = apply_fill(book, fill(Side.BUY, "100000", "0.5", "25"))
    assert r1.cash_delta == D("-50025")
    assert r1.book.avg_entry == D("100000") and r1.book.cost == D("50025")
    r2 = apply_fill(r1.book, fill(Side.SELL, "110000", "0.2", "11"))
    # proceeds 22000 - 11 fee; cost of 0.2 = 50025 * 0.4 = 20010
    assert r2.realised == D("1979") and r2.cash_delta == D("21989")
    r3 = apply_fill(r2.book, fill(Side.SELL, "90000", "0.3", "13.5"))
    assert r3.book.qty == 0 and r3.book.cost == 0
    assert r3.realised == D("26986.5") - D("30015")
    total_cash = r1.cash_delta + r2.cash_delta + r3.cash_delta
    assert r3.book.realised == total_cash  # realised PnL == net cash moved by the round trip


def test_overselling_is_refused():
    book = apply_fill(Book(), fill(Side.BUY, "100", "1", "0.05")).book
    with pytest.raises(ValueError, match="only 1 is held"):
        apply_fill(book, fill(Side.SELL, "100", "2", "0.1"))


@given(st.lists(st.tuples(st.integers(1, 10**6), st.integers(1, 10**4), st.booleans()), min_size=1, max_size=30))
def test_realised_equals_cash_when_flat(trades):
    """Whatever the sequence of buys and partial sells, once flat the realised PnL equals the
    net cash the position moved, exactly."""
    book, cash = Book(), D(0)
    for n, (price, qty, sell) in enumerate(trades):
        q = D(qty) / D(1000)
        if sell and book.qty > 0:
            q = min(q, book.qty)
            r = apply_fill(book, fill(Side.SELL, price, q, D(price) * q * D("0.0005"), n))
        else:
            r = apply_fill(book, fill(Side.BUY, price, q, D(price) * q * D("0.0005"), n))
        book, cash = r.book, cash + r.cash_delta
        assert book.qty >= 0 and book.cost >= 0
    if book.qty > 0:
        r = apply_fill(book, fill(Side.SELL, 500000, book.qty, D(500000) * book.qty * D("0.0005"), 99))
        book, cash = r.book, cash + r.cash_delta
    assert book.qty == 0
    assert abs(book.realised - cash) <= D("1e-20")


def test_partial_exit_cost_is_rounded_to_money_precision_and_nothing_is_lost():
    book = apply_fill(Book(), fill(Side.BUY, "3", "1", "0.0015")).book     # cost 3.0015
    r1 = apply_fill(book, fill(Side.SELL, "3", "0.333", "0.0004995", 2))
    assert r1.cost_closed == D("0.9994995000")                           # 3.0015 * 0.333
    r2 = apply_fill(r1.book, fill(Side.SELL, "3", "0.667", "0.0010005", 3))
    assert r1.cost_closed + r2.cost_closed == D("3.0015")               # the last exit takes the rest
    for r in (r1, r2):
        assert r.realised == r.realised.quantize(D("1e-10"))
