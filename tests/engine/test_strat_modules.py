"""Score modules on constructed price series that must and must not trigger them [SC-1]."""

from __future__ import annotations

import numpy as np
import pytest

from execution.engine.types import OrderBook
from regime.engine.types import RegimeLabel
from strategies.engine.modules import (
    REGISTRY,
    LeaderFollower,
    LiquiditySweepReversal,
    MeanReversion,
    Microstructure,
    Momentum,
    RegimeModifier,
    ScoreModule,
    TrendPullback,
    VolContractionBreakout,
    default_modules,
    linear,
    logistic,
)
from strategies.engine.modules.base import BookArrays, build_reasons
from strategies.engine.types import Direction
from tests.engine.test_strat_support import bars_from_close, ctx, regime

T = np.arange(130.0)
UPTREND = 100 + 0.5 * T + np.where(T % 2 == 0, 0.3, -0.3)


def mirror(c: np.ndarray) -> np.ndarray:
    return 300.0 - c


def test_registry_has_every_module_and_they_satisfy_the_protocol():
    assert tuple(REGISTRY) == ("TP", "VCB", "LSR", "LF", "REGIME", "MR", "MOM", "MICRO")
    for m in default_modules():
        assert isinstance(m, ScoreModule)


def test_normalisation_linear_and_logistic():
    np.testing.assert_allclose(linear(np.array([0.0, 5.0, 10.0, 20.0, np.nan]), 0, 10), [0, 50, 100, 100, 0])
    np.testing.assert_allclose(linear(np.array([30.0, 15.0, 0.0]), 30, 0), [0, 50, 100])
    np.testing.assert_allclose(logistic(np.array([1.0]), 1.0, 0.5), [50.0])


def test_build_reasons_groups_flag_combinations():
    r = build_reasons([("A", np.array([True, False, True])), ("B", np.array([True, True, False]))], 3)
    assert r == (("A", "B"), ("B",), ("A",))


def _pullback(c: np.ndarray) -> np.ndarray:
    pb = c.copy()
    pb[-4:] = [pb[-5] - 1.5, pb[-5] - 3.0, pb[-5] - 4.0, pb[-5] - 3.2]
    return pb


def test_tp_triggers_on_pullback_to_ema20_in_uptrend_and_mirror_short():
    c = np.vstack([_pullback(UPTREND), mirror(_pullback(UPTREND))])
    out = TrendPullback().score(ctx(bars_from_close(c)))
    assert out.score.tolist() == [100.0, 100.0]
    assert out.direction.tolist() == [Direction.LONG, Direction.SHORT]
    assert out.reasons[0] == ("TP_UPTREND", "TP_PULLBACK_TO_EMA20", "TP_RESUMED")
    assert out.reasons[1] == ("TP_DOWNTREND", "TP_PULLBACK_TO_EMA20", "TP_RESUMED")


def test_tp_silent_without_pullback_or_trend_or_short_permission():
    flat = 100 + np.sin(T)
    out = TrendPullback().score(ctx(bars_from_close(np.vstack([UPTREND, flat]))))
    assert out.score.tolist() == [0.0, 0.0]
    assert out.reasons == (("TP_UPTREND",), ("TP_NO_TREND",))
    no_short = TrendPullback().score(ctx(bars_from_close(mirror(_pullback(UPTREND))), can_short=False))
    assert no_short.score.tolist() == [0.0]
    assert no_short.direction.tolist() == [Direction.NONE]


def _squeeze_break(direction: int = 1, volume_mult: float = 4.0) -> tuple[np.ndarray, np.ndarray]:
    n = 160
    t = np.arange(n, dtype=float)
    amp = np.where(t < 120, 2.0, 0.2)                   # wide swings, then a tight squeeze
    c = 100 + amp * np.sin(t * 0.9)
    c[-1] = 100 + direction * 3.0                       # the break
    v = np.full(n, 100.0)
    v[-1] = 100.0 * volume_mult
    return c, v


def test_vcb_triggers_on_squeeze_then_break_with_volume():
    (c1, v1), (c2, v2) = _squeeze_break(1), _squeeze_break(-1)
    out = VolContractionBreakout().score(ctx(bars_from_close(np.vstack([c1, c2]), wick=0.0005,
                                                             volume=np.vstack([v1, v2]))))
    assert out.direction.tolist() == [Direction.LONG, Direction.SHORT]
    assert np.all(out.score >= 70)
    assert "VCB_SQUEEZE" in out.reasons[0] and "VCB_BREAK_UP" in out.reasons[0]
    assert "VCB_BREAK_DOWN" in out.reasons[1]


def test_vcb_silent_without_volume_or_without_squeeze():
    c, _ = _squeeze_break(1, volume_mult=1.0)
    wide = 100 + 2.0 * np.sin(np.arange(160) * 0.9)
    wide[-1] = 103.5
    out = VolContractionBreakout().score(ctx(bars_from_close(np.vstack([c, wide]), wick=0.0005)))
    assert out.score.tolist() == [0.0, 0.0]
    assert "VCB_LOW_VOLUME" in out.reasons[0]
    assert "VCB_NO_SQUEEZE" in out.reasons[1]


def _sweep_bars(reclaim: bool) -> tuple[np.ndarray, ...]:
    n = 60
    t = np.arange(n, dtype=float)
    c = 100 + np.sin(t * 0.7)                           # swing low ~99
    o = np.concatenate([[c[0]], c[:-1]])
    h = np.maximum(o, c) + 0.1
    lo = np.minimum(o, c) - 0.1
    # last bar: opens 99.6, stabs to 97.5, closes back at 99.7 (or stays down at 98.0)
    o[-1], lo[-1] = 99.6, 97.5
    c[-1] = 99.7 if reclaim else 98.0
    h[-1] = max(o[-1], c[-1]) + 0.05
    return o, h, lo, c


def test_lsr_triggers_on_sweep_and_reclaim_and_not_without_reclaim():
    from regime.engine.features import Bars
    o1, h1, l1, c1 = _sweep_bars(True)
    o2, h2, l2, c2 = _sweep_bars(False)
    bars = Bars(np.vstack([o1, o2]), np.vstack([h1, h2]), np.vstack([l1, l2]), np.vstack([c1, c2]),
                np.full((2, 60), 100.0))
    out = LiquiditySweepReversal().score(ctx(bars))
    assert out.direction.tolist() == [Direction.LONG, Direction.NONE]
    assert out.score[0] >= 60 and out.score[1] == 0.0
    assert out.reasons[0] == ("LSR_SWEPT_LOW", "LSR_RECLAIMED")
    assert out.reasons[1] == ("LSR_SWEPT_LOW",)


def _leader_follower(lead_move: float, follower_catch_up: float) -> np.ndarray:
    rng = np.random.default_rng(3)
    r_lead = rng.normal(0, 0.002, 60)
    r_lead[-3:] = lead_move / 3
    r_fol = r_lead * 1.0 + rng.normal(0, 0.0005, 60)
    r_fol[-3:] = follower_catch_up * lead_move / 3
    r_ind = rng.normal(0, 0.002, 60)                    # unrelated market
    r_ind[-3:] = 0.0
    return 100 * np.exp(np.cumsum(np.vstack([r_lead, r_fol, r_ind]), axis=1))


def test_lf_flags_a_lagging_follower_after_a_leader_move():
    out = LeaderFollower().score(ctx(bars_from_close(_leader_follower(0.01, 0.1))))
    assert out.score[0] == 0.0 and "LF_IS_LEADER" in out.reasons[0]
    assert out.score[1] >= 60 and out.direction[1] == Direction.LONG
    assert out.score[2] == 0.0                          # not a follower
    down = LeaderFollower().score(ctx(bars_from_close(_leader_follower(-0.01, 0.1))))
    assert down.direction[1] == Direction.SHORT


def test_lf_silent_when_leader_quiet_or_follower_caught_up():
    quiet = LeaderFollower().score(ctx(bars_from_close(_leader_follower(0.001, 0.0))))
    assert quiet.score.tolist() == [0.0, 0.0, 0.0]
    caught = LeaderFollower().score(ctx(bars_from_close(_leader_follower(0.01, 1.0))))
    assert caught.score[1] == 0.0


def test_regime_modifier_by_label():
    c = np.vstack([np.linspace(100, 102, 40), np.linspace(100, 101, 40), np.linspace(100, 99, 40)])
    trend = RegimeModifier().score(ctx(bars_from_close(c), regime(RegimeLabel.TREND, 80.0, breadth=0.7)))
    np.testing.assert_allclose(trend.score, [80.0, 80.0 * 2 / 3, 0.0])  # rank among 3 markets
    assert trend.direction.tolist() == [Direction.LONG, Direction.LONG, Direction.NONE]
    rot = RegimeModifier().score(ctx(bars_from_close(c), regime(RegimeLabel.BREAKOUT_ROTATION, 60.0)))
    assert rot.direction.tolist() == [Direction.LONG, Direction.LONG, Direction.SHORT]
    rng = RegimeModifier().score(ctx(bars_from_close(c), regime(RegimeLabel.RANGE, 60.0)))
    assert rng.score.tolist() == [30.0, 30.0, 30.0] and rng.direction.tolist() == [0, 0, 0]
    for label in (RegimeLabel.CHOP, RegimeLabel.PANIC):
        out = RegimeModifier().score(ctx(bars_from_close(c), regime(label, 90.0)))
        assert out.score.tolist() == [0.0, 0.0, 0.0]
        assert out.reasons[0] == (f"REGIME_{label}",)


def test_mr_triggers_on_band_break_with_rsi_extreme_only():
    base = 100 + 0.3 * np.sin(np.arange(80) * 1.3)
    dump = base.copy()
    dump[-5:] = [99.5, 99.0, 98.3, 97.6, 96.8]
    pump = 200 - dump
    out = MeanReversion().score(ctx(bars_from_close(np.vstack([dump, pump, base]))))
    assert out.direction.tolist() == [Direction.LONG, Direction.SHORT, Direction.NONE]
    assert out.score[0] >= 50 and out.score[1] >= 50 and out.score[2] == 0.0
    assert out.reasons[0][:2] == ("MR_BELOW_LOWER_BAND", "MR_OVERSOLD")


def _momentum(volume_mult: float) -> tuple[np.ndarray, np.ndarray]:
    n = 80
    c = 100 + 0.2 * np.sin(np.arange(n) * 1.1)
    c[-8:] = 100 + np.cumsum(np.full(8, 0.5))          # a clean 8-bar advance
    v = np.full(n, 100.0)
    v[-2] = 100.0 * volume_mult
    return c, v


def test_mom_needs_the_volume_surge():
    (c1, v1), (c2, v2) = _momentum(3.0), _momentum(1.0)
    out = Momentum().score(ctx(bars_from_close(np.vstack([c1, c2, 200 - c1]), volume=np.vstack([v1, v2, v1]))))
    assert out.direction.tolist() == [Direction.LONG, Direction.NONE, Direction.SHORT]
    assert out.score[0] >= 60 and out.score[1] == 0.0 and out.score[2] >= 60
    assert "MOM_NO_SURGE" in out.reasons[1]


def _book(bq: float, aq: float, bid: float = 99.9, ask: float = 100.1) -> OrderBook:
    return OrderBook("X", 0, np.array([[bid, bq]]), np.array([[ask, aq]]))


def test_micro_needs_books_and_reads_buy_pressure():
    c = np.full((3, 30), 100.0)
    books = {
        "M0": [_book(5, 5), _book(8, 5), _book(12, 4), _book(15, 2)],       # bids build, asks thin
        "M1": [_book(5, 5), _book(5, 8), _book(4, 12), _book(2, 15)],       # the mirror
    }
    bk = BookArrays.from_books(("M0", "M1", "M2"), books)
    out = Microstructure().score(ctx(bars_from_close(c), books=bk))
    assert out.direction.tolist() == [Direction.LONG, Direction.SHORT, Direction.NONE]
    assert out.score[0] >= 60 and out.score[1] >= 60 and out.score[2] == 0.0
    assert out.reasons[2] == ("MICRO_NO_BOOK",)
    none = Microstructure().score(ctx(bars_from_close(c)))
    assert none.score.tolist() == [0.0, 0.0, 0.0]
    assert none.reasons == (("MICRO_NO_BOOK",),) * 3


@pytest.mark.parametrize("module", default_modules(), ids=lambda m: m.name)
def test_every_module_returns_valid_shapes_and_ranges_on_random_data(module):
    rng = np.random.default_rng(0)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 0.004, (40, 200)), axis=1))
    out = module.score(ctx(bars_from_close(c, volume=rng.lognormal(4, 0.6, (40, 200)))))
    assert out.module == module.name
    assert out.score.shape == (40,) and out.direction.shape == (40,) and len(out.reasons) == 40
    assert not np.isnan(out.score).any()
    assert out.score.min() >= 0 and out.score.max() <= 100
    assert np.all((out.score > 0) == (out.direction != 0))
