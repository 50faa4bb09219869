"""Precision: Upbit KRW tick tables, rounding direction, quantity steps, minimum order value."""

from __future__ import annotations

from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from execution.engine.precision import (
    KRW_TICKS_2024,
    KRW_TICKS_2024_FROM_TS,
    KRW_TICKS_2025,
    KRW_TICKS_2025_FROM_TS,
    KRW_TICKS_LEGACY,
    UPBIT_KRW_MIN_ORDER,
    OrderPrecisionError,
    apply_precision,
    check_min_notional,
    format_decimal,
    is_on_grid,
    krw_tick_size,
    krw_tick_table,
    lcm_tick,
    round_krw_price,
    round_price_to_tick,
    round_qty,
)
from execution.engine.types import MarketInfo, OrderRequest, OrderType, Side, TimeInForce

BEFORE_2025 = KRW_TICKS_2025_FROM_TS - 1
BEFORE_2024 = KRW_TICKS_2024_FROM_TS - 1

# (price, tick after 2025-07-31, tick 2024-01-29..2025-07-31, tick before 2024-01-29)
BANDS = [
    ("5000000", "1000", "1000", "1000"),
    ("2000000", "1000", "1000", "1000"),
    ("1999999", "1000", "500", "500"),
    ("1000000", "1000", "500", "500"),
    ("999999", "500", "100", "100"),
    ("500000", "500", "100", "100"),
    ("499999", "100", "50", "50"),
    ("100000", "100", "50", "50"),
    ("99999", "50", "10", "10"),
    ("50000", "50", "10", "10"),
    ("49999", "10", "10", "10"),
    ("10000", "10", "10", "10"),
    ("9999", "5", "1", "5"),
    ("5000", "5", "1", "5"),
    ("4999", "1", "1", "5"),
    ("1000", "1", "1", "5"),
    ("999.9", "1", "0.1", "1"),
    ("100", "1", "0.1", "1"),
    ("99.99", "0.1", "0.01", "0.1"),
    ("10", "0.1", "0.01", "0.1"),
    ("9.999", "0.01", "0.001", "0.01"),
    ("1", "0.01", "0.001", "0.01"),
    ("0.9999", "0.001", "0.0001", "0.001"),
    ("0.1", "0.001", "0.0001", "0.001"),
    ("0.09999", "0.0001", "0.00001", "0.0001"),
    ("0.01", "0.0001", "0.00001", "0.0001"),
    ("0.009999", "0.00001", "0.000001", "0.0001"),
    ("0.001", "0.00001", "0.000001", "0.0001"),
    ("0.0009999", "0.000001", "0.0000001", "0.0001"),
    ("0.0001", "0.000001", "0.0000001", "0.0001"),
    ("0.00009999", "0.0000001", "0.00000001", "0.0001"),
    ("0.00001", "0.0000001", "0.00000001", "0.0001"),
    ("0.00000999", "0.00000001", "0.00000001", "0.0001"),
]


@pytest.mark.parametrize(("price", "new", "mid", "legacy"), BANDS)
def test_krw_tick_size_every_band_boundary_in_each_table(price, new, mid, legacy):
    assert krw_tick_size(D(price)) == D(new)
    assert krw_tick_size(D(price), at_ts=KRW_TICKS_2025_FROM_TS) == D(new)
    assert krw_tick_size(D(price), at_ts=BEFORE_2025) == D(mid)
    assert krw_tick_size(D(price), at_ts=KRW_TICKS_2024_FROM_TS) == D(mid)
    assert krw_tick_size(D(price), at_ts=BEFORE_2024) == D(legacy)


def test_tables_selected_by_timestamp():
    assert krw_tick_table() is KRW_TICKS_2025
    assert krw_tick_table(KRW_TICKS_2025_FROM_TS) is KRW_TICKS_2025
    assert krw_tick_table(BEFORE_2025) is KRW_TICKS_2024
    assert krw_tick_table(BEFORE_2024) is KRW_TICKS_LEGACY


def test_issue_examples_of_the_2025_change():
    """1,000 KRW tick from 1,000,000; 100 from 100,000 to 500,000; 1 from 100 to 1,000."""
    assert krw_tick_size(D("1500000")) == D("1000")
    assert krw_tick_size(D("250000")) == D("100")
    assert krw_tick_size(D("550")) == D("1")
    assert krw_tick_size(D("550"), at_ts=BEFORE_2025) == D("0.1")


@pytest.mark.parametrize("table", [KRW_TICKS_2025, KRW_TICKS_2024, KRW_TICKS_LEGACY])
def test_every_band_bound_lies_on_the_grid_of_the_band_below(table):
    """The property that makes in-band rounding safe across band edges."""
    for (lower, _), (_, tick_below) in zip(table, table[1:], strict=False):
        assert is_on_grid(lower, tick_below), (lower, tick_below)
    assert [lower for lower, _ in table] == sorted((lower for lower, _ in table), reverse=True)
    assert table[-1][0] == 0


@pytest.mark.parametrize("bad", [D("0"), D("-1"), "nan", float("inf")])
def test_krw_tick_size_rejects_non_positive_or_non_finite(bad):
    with pytest.raises(OrderPrecisionError):
        krw_tick_size(bad)


def test_round_price_buy_down_sell_up():
    assert round_price_to_tick(D("101.7"), D("1"), Side.BUY) == D("101")
    assert round_price_to_tick(D("101.2"), D("1"), Side.SELL) == D("102")
    assert round_price_to_tick(D("101"), D("1"), Side.BUY) == D("101")
    assert round_price_to_tick(D("101"), D("1"), Side.SELL) == D("101")
    assert round_krw_price(D("100_123_456"), Side.BUY) == D("100123000")
    assert round_krw_price(D("100_123_456"), Side.SELL) == D("100124000")
    # Sell just below a band edge rounds up onto the edge, which is on the coarser grid.
    assert round_krw_price(D("999999"), Side.SELL) == D("1000000")
    assert round_krw_price(D("999.5"), Side.SELL, at_ts=BEFORE_2025) == D("999.5")


def test_round_price_rejects_rounding_to_zero():
    with pytest.raises(OrderPrecisionError, match="rounds to 0"):
        round_price_to_tick(D("0.4"), D("1"), Side.BUY)


def test_rounded_price_has_plain_exponent():
    assert str(round_krw_price(D("2500001"), Side.BUY)) == "2500000"
    assert str(round_price_to_tick(D("12.345"), D("0.01"), Side.BUY)) == "12.34"
    assert format_decimal(D("1E+3")) == "1000"
    assert format_decimal(D("0.500")) == "0.5"


prices = st.decimals(min_value=D("0.00000001"), max_value=D("500000000"), places=8,
                     allow_nan=False, allow_infinity=False).filter(lambda p: p > 0)
timestamps = st.one_of(st.none(), st.integers(min_value=1_500_000_000, max_value=1_900_000_000))


@given(price=prices, side=st.sampled_from([Side.BUY, Side.SELL]), at_ts=timestamps)
def test_rounded_krw_price_is_on_grid_and_never_worse(price, side, at_ts):
    tick = krw_tick_size(price, at_ts)
    try:
        rounded = round_krw_price(price, side, at_ts)
    except OrderPrecisionError:
        assert side is Side.BUY and price < tick
        return
    assert is_on_grid(rounded, krw_tick_size(rounded, at_ts))
    if side is Side.BUY:
        assert price - tick < rounded <= price
    else:
        assert price <= rounded < price + tick


@given(qty=st.decimals(min_value=0, max_value=D("1e9"), places=12, allow_nan=False, allow_infinity=False),
       decimals=st.integers(min_value=0, max_value=8),
       lot=st.sampled_from([D("0"), D("0.001"), D("0.5"), D("5")]))
def test_round_qty_always_down_and_on_step(qty, decimals, lot):
    rounded = round_qty(qty, decimals, lot)
    assert 0 <= rounded <= qty
    assert rounded == rounded.quantize(D(1).scaleb(-decimals))
    if lot > 0:
        assert is_on_grid(rounded, lot)


def test_round_qty_examples():
    assert round_qty(D("0.123456789")) == D("0.12345678")
    assert round_qty(D("1.99"), 0) == D("1")
    assert round_qty(D("0.0379"), 8, D("0.001")) == D("0.037")
    with pytest.raises(OrderPrecisionError):
        round_qty(D("-1"))


def test_lcm_tick():
    assert lcm_tick(D("500"), D("1000")) == D("1000")
    assert lcm_tick(D("0.1"), D("1")) == D("1")
    assert lcm_tick(D("0.5"), D("1")) == D("1")
    assert lcm_tick(D("0.04"), D("0.06")) == D("0.12")


def test_check_min_notional():
    check_min_notional(D("5000"), UPBIT_KRW_MIN_ORDER)
    with pytest.raises(OrderPrecisionError, match=r"4999\.99 is below the minimum 5000 on KRW-BTC"):
        check_min_notional(D("4999.99"), UPBIT_KRW_MIN_ORDER, "KRW-BTC")


KRW_BTC = MarketInfo(symbol="KRW-BTC", base="BTC", quote="KRW", min_notional=UPBIT_KRW_MIN_ORDER)
BTC_USDT = MarketInfo(symbol="BTC/USDT", base="BTC", quote="USDT", min_notional=D("5"),
                      lot_size=D("0.00001"), qty_decimals=5, tick_size=D("0.01"))


def test_apply_precision_limit_krw():
    req = apply_precision({"client_order_id": "t1-s1-0", "symbol": "KRW-BTC", "side": "buy", "type": "limit",
                           "qty": 0.000123456789, "price": 100_123_456.7}, KRW_BTC)
    assert req == OrderRequest("t1-s1-0", "KRW-BTC", Side.BUY, OrderType.LIMIT, qty=D("0.00012345"),
                               price=D("100123000"))


def test_apply_precision_uses_table_for_the_timestamp():
    old = apply_precision(OrderRequest("c", "KRW-BTC", Side.SELL, OrderType.LIMIT, qty=D("1"),
                                       price=D("1000100")), KRW_BTC, at_ts=BEFORE_2025)
    new = apply_precision(OrderRequest("c", "KRW-BTC", Side.SELL, OrderType.LIMIT, qty=D("1"),
                                       price=D("1000100")), KRW_BTC)
    assert old.price == D("1000500")
    assert new.price == D("1001000")


def test_apply_precision_fixed_tick_and_lot():
    req = apply_precision(OrderRequest("c", "BTC/USDT", Side.SELL, OrderType.LIMIT, qty=D("0.0123456"),
                                       price=D("65000.123"), tif=TimeInForce.POST_ONLY), BTC_USDT)
    assert (req.qty, req.price, req.tif) == (D("0.01234"), D("65000.13"), TimeInForce.POST_ONLY)


def test_apply_precision_tick_override():
    req = apply_precision(OrderRequest("c", "KRW-BTC", Side.BUY, OrderType.LIMIT, qty=D("1"),
                                       price=D("990700")), KRW_BTC, tick=D("1000"))
    assert req.price == D("990000")


def test_apply_precision_below_minimum_after_rounding():
    with pytest.raises(OrderPrecisionError, match="below the minimum 5000"):
        # 100,000,500 x 0.0000499999999 = 5,000.02 before rounding, 4,999 after.
        apply_precision(OrderRequest("c", "KRW-BTC", Side.BUY, OrderType.LIMIT, qty=D("0.0000499999999"),
                                     price=D("100000500")), KRW_BTC)


def test_apply_precision_qty_rounding_to_zero_is_explained():
    with pytest.raises(OrderPrecisionError, match="rounds to zero on BTC/USDT"):
        apply_precision(OrderRequest("c", "BTC/USDT", Side.BUY, OrderType.LIMIT, qty=D("0.000001"),
                                     price=D("65000")), BTC_USDT)


def test_apply_precision_market_buy_by_quote_amount():
    req = apply_precision(OrderRequest("c", "KRW-BTC", Side.BUY, OrderType.MARKET, quote_amount=D("10000")),
                          KRW_BTC)
    assert (req.qty, req.price, req.quote_amount) == (None, None, D("10000"))
    with pytest.raises(OrderPrecisionError, match="below the minimum"):
        apply_precision(OrderRequest("c", "KRW-BTC", Side.BUY, OrderType.MARKET, quote_amount=D("4000")),
                        KRW_BTC)


def test_apply_precision_market_sell_checks_value_with_reference_price():
    req = OrderRequest("c", "KRW-BTC", Side.SELL, OrderType.MARKET, qty=D("0.000051234567"))
    assert apply_precision(req, KRW_BTC).qty == D("0.00005123")
    with pytest.raises(OrderPrecisionError, match="below the minimum"):
        apply_precision(req, KRW_BTC, reference_price=D("90000000"))


@pytest.mark.parametrize(("fields", "message"), [
    ({"type": "market", "quote_amount": "10000", "side": "sell"}, "sized by qty"),
    ({"type": "market", "qty": "1", "tif": "post_only"}, "post_only applies to limit"),
    ({"type": "limit", "qty": "1"}, "needs a positive price"),
    ({"type": "limit", "price": "100"}, "needs a quantity"),
    ({"type": "limit", "price": "100", "qty": "-1"}, "qty must be positive"),
    ({"type": "stop", "price": "100", "qty": "1"}, "not a valid OrderType"),
    ({"type": "limit", "price": "100", "qty": "1", "symbol": "KRW-ETH"}, "market info is for KRW-BTC"),
    ({"type": "limit", "price": "100", "qty": "1", "reduce_only": True}, "reduce_only"),
])
def test_apply_precision_rejects_invalid_requests(fields, message):
    base = {"client_order_id": "c", "symbol": "KRW-BTC", "side": "buy"}
    with pytest.raises(OrderPrecisionError, match=message):
        apply_precision({**base, **fields}, KRW_BTC)


def test_apply_precision_needs_a_tick_for_non_krw_markets():
    market = MarketInfo(symbol="BTC-ETH", base="ETH", quote="BTC")
    with pytest.raises(OrderPrecisionError, match="no tick size known for BTC-ETH"):
        apply_precision(OrderRequest("c", "BTC-ETH", Side.BUY, OrderType.LIMIT, qty=D("1"), price=D("0.05")),
                        market)


def test_order_precision_error_is_a_value_error():
    assert issubclass(OrderPrecisionError, ValueError)
