"""The labeller task [AI-1] on the sim exchange's stored candles: labels appear only once their
horizon has passed, equal the pure function's, and a second run changes nothing."""

from __future__ import annotations

import pytest

from execution import marketdata
from execution.models import Candle, MarketSnapshot
from strategies.engine.learning.labels import LabelCosts, SymbolBars, label_snapshot
from strategies.learning import DEFAULT_SLIPPAGE, label_features
from strategies.models import FeatureSnapshot, ScanRun
from strategies.tasks_learning import label_feature_snapshots
from traders import tasks

T0 = 1_790_000_000.0


@pytest.fixture
def sim(db, settings):
    settings.QUANTWEB_SIM_WARMUP_BARS, settings.QUANTWEB_SIM_MARKETS, settings.QUANTWEB_SIM_SEED = 400, 4, 11
    marketdata._view_cache.clear()
    tasks.collect_market_data(T0)
    return marketdata.latest_bar("sim")


def close_of(symbol: str, ts: int) -> float:
    return float(Candle.objects.get(exchange="sim", symbol=symbol, timeframe="1m", ts=ts).close)


def make_snapshots(bar_ts: int) -> list[FeatureSnapshot]:
    symbols = list(MarketSnapshot.objects.filter(exchange="sim").order_by("id").values_list("symbol", flat=True))
    run = ScanRun.objects.create(exchange="sim", bar_ts=bar_ts, inputs={
        "books": {symbols[0]: {"ts": bar_ts, "bids": [[99.0, 1.0]], "asks": [[101.0, 1.0]]}}})
    return FeatureSnapshot.objects.bulk_create([
        FeatureSnapshot(scan_run=run, symbol=s, bar_ts=bar_ts, price=close_of(s, bar_ts), features={"final": 50.0})
        for s in symbols
    ])


def expected(snap: FeatureSnapshot, known: int, slippage: float) -> dict:
    rows = list(Candle.objects.filter(exchange="sim", symbol=snap.symbol, timeframe="1m").order_by("ts")
                .values_list("ts", "high", "low", "close"))
    ts, high, low, close = zip(*rows, strict=True)
    fee = float(MarketSnapshot.objects.get(exchange="sim", symbol=snap.symbol).market["taker_fee"])
    bars = SymbolBars.from_arrays(list(ts), [float(x) for x in high], [float(x) for x in low], [float(x) for x in close])
    return label_snapshot(snap.bar_ts, snap.price, bars, LabelCosts(fee, slippage), known).as_fields()


def test_labels_fill_in_as_the_horizons_pass_and_match_the_engine(sim):
    bar = sim
    snaps = make_snapshots(bar)
    first = snaps[0]
    assert label_features() == {"seen": 0, "complete": 0, "partial": 0, "no_data": 0}   # nothing due yet

    tasks.collect_market_data(T0 + 59 * 60)
    assert label_features()["seen"] == 0                  # 59 minutes: the 60 m horizon has not passed
    assert FeatureSnapshot.objects.filter(label_ret_60m__isnull=False).count() == 0

    tasks.collect_market_data(T0 + 100 * 60)
    counts = label_features()
    assert counts["partial"] == len(snaps) and counts["complete"] == 0
    rows = FeatureSnapshot.objects.all()
    assert all(r.label_ret_60m is not None and r.label_ret_240m is None and r.labelled_at is None for r in rows)
    assert label_features()["seen"] == 0                  # the 60 m label is not rewritten every run

    tasks.collect_market_data(T0 + 300 * 60)
    known = marketdata.latest_bar("sim")
    counts = label_features()
    assert counts["complete"] == len(snaps)
    for row in FeatureSnapshot.objects.all():
        slippage = 1.0 / 100.0 if row.pk == first.pk else DEFAULT_SLIPPAGE   # half the stored spread
        want = expected(row, known, slippage)
        for name, value in want.items():
            assert getattr(row, name) == pytest.approx(value), (row.symbol, name)
        assert row.labelled_at is not None

    # Idempotent: another run has nothing to do, and later candles cannot touch the labels.
    before = list(FeatureSnapshot.objects.order_by("id").values())
    tasks.collect_market_data(T0 + 400 * 60)
    assert label_feature_snapshots()["seen"] == 0
    assert list(FeatureSnapshot.objects.order_by("id").values()) == before


def test_a_snapshot_whose_bars_are_missing_is_closed_without_labels(sim):
    bar = sim
    snap = make_snapshots(bar)[1]
    Candle.objects.filter(exchange="sim", symbol=snap.symbol, ts__gt=bar).delete()   # delisted right after
    tasks.collect_market_data(T0 + 300 * 60)
    Candle.objects.filter(exchange="sim", symbol=snap.symbol, ts__gt=bar, ts__lte=bar + 240 * 60).delete()
    counts = label_features()
    assert counts["no_data"] == 1
    snap.refresh_from_db()
    assert snap.labelled_at is not None and snap.label_ret_240m is None and snap.label_ret_60m is None


def test_the_learning_cycle_runs_every_step(sim):
    from strategies.tasks_learning import learning_cycle

    make_snapshots(sim)
    tasks.collect_market_data(T0 + 300 * 60)
    out = learning_cycle()
    assert set(out) == {"labels", "bandit", "promoted", "drift"}
    assert out["labels"]["complete"] == 4 and out["promoted"] == [] and out["drift"] == []
    assert out["bandit"] == {"rewards": 0, "resampled": True}


def test_a_failing_step_does_not_stop_the_others(sim, monkeypatch):
    from strategies.tasks_learning import learning_cycle

    monkeypatch.setattr("strategies.learning.label_features", lambda: 1 / 0)
    out = learning_cycle()
    assert out["labels"].startswith("error: ZeroDivisionError") and out["drift"] == []
