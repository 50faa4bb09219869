"""Resampling 1m -> 5m/15m/1h/4h/1d [EX-6], checked against pandas on real Upbit data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from execution.engine.replay import build_replay, frame_to_series
from execution.engine.resample import resample, resample_all
from execution.engine.types import Candles, MarketDataError
from tests.conftest import require_shared_data

T0 = 1_767_225_600


def one(values, ts=None, tf="1m"):
    arr = np.array(values, dtype=np.float64)
    ts = T0 + 60 * np.arange(arr.shape[1]) if ts is None else np.asarray(ts)
    return Candles(("X",), tf, ts, arr[0:1], arr[1:2], arr[2:3], arr[3:4], arr[4:5])


def test_ohlcv_aggregation_rules_and_nan_buckets():
    nan = np.nan
    # 15 one-minute bars -> three 5m buckets; the middle bucket is entirely missing
    o = [1, 2, 3, 4, 5, nan, nan, nan, nan, nan, 11, nan, 13, 14, 15]
    h = [x + 0.5 if x == x else nan for x in o]
    h[1] = 9.0
    lo = [x - 0.5 if x == x else nan for x in o]
    lo[13] = 0.1
    c = [x + 0.25 if x == x else nan for x in o]
    v = [1.0] * 15
    out = resample(one([o, h, lo, c, v]), "5m")
    np.testing.assert_array_equal(out.ts, T0 + 300 * np.arange(3))
    np.testing.assert_array_equal(out.open[0], [1, nan, 11])
    np.testing.assert_array_equal(out.high[0], [9.0, nan, 15.5])
    np.testing.assert_array_equal(out.low[0], [0.5, nan, 0.1])
    np.testing.assert_array_equal(out.close[0], [5.25, nan, 15.25])
    np.testing.assert_array_equal(out.volume[0], [5.0, nan, 4.0])


def test_offset_grid_and_complete_only():
    ts = T0 + 3600 * np.arange(30)
    vals = np.arange(30, dtype=float)
    c = one([vals, vals + 1, vals - 1, vals, np.ones(30)], ts=ts, tf="1h")
    day = resample(c, "1d", offset=3600)
    assert day.ts[0] == T0 - 86400 + 3600 and day.n_bars == 3
    np.testing.assert_array_equal(day.volume[0], [1.0, 24.0, 5.0])
    complete = resample(c, "1d", offset=3600, complete_only=True)
    assert complete.n_bars == 2


def test_refuses_impossible_targets():
    c = one([[1.0] * 3] * 5)
    with pytest.raises(MarketDataError):
        resample(c, "1M")
    with pytest.raises(MarketDataError):
        resample(resample(c, "5m"), "1m")


@pytest.mark.parametrize("relative", ["upbit_azuremooni/upbit_KRW-BTC_1m.csv.gz",
                                      "binance_selskas_2021/binance_ETH-USDT_1m.csv.gz"])
def test_matches_pandas_resample_on_real_1m_data(relative):
    path = require_shared_data(relative)
    df = pd.read_csv(path)
    data = build_replay([frame_to_series(df, "M", "1m")])
    frame = df.assign(timestamp=pd.to_datetime(df["timestamp"], utc=True).dt.tz_localize(None)).set_index("timestamp")
    for tf, rule in (("5m", "5min"), ("15m", "15min"), ("1h", "1h"), ("4h", "4h"), ("1d", "1D")):
        ours = resample(data.candles, tf)
        ref = frame.resample(rule, origin="epoch").agg(
            {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
        ref = ref[frame["close"].resample(rule, origin="epoch").count() > 0]
        got = ~np.isnan(ours.close[0])
        assert got.sum() == len(ref)
        np.testing.assert_array_equal(ours.ts[got], ref.index.as_unit("s").asi8)   # naive UTC
        for f in ("open", "high", "low", "close"):
            np.testing.assert_array_equal(getattr(ours, f)[0, got], ref[f].to_numpy())
        np.testing.assert_allclose(ours.volume[0, got], ref["volume"].to_numpy(), rtol=1e-12)


def test_resample_all_many_markets_at_once():
    path = require_shared_data("upbit_azuremooni/upbit_KRW-ETH_1m.csv.gz")
    path2 = require_shared_data("upbit_azuremooni/upbit_KRW-XRP_1m.csv.gz")
    data = build_replay([frame_to_series(pd.read_csv(p), s, "1m") for p, s in ((path, "KRW-ETH"), (path2, "KRW-XRP"))])
    out = resample_all(data.candles)
    assert set(out) == {"5m", "15m", "1h", "4h", "1d"}
    h1 = out["1h"]
    assert h1.symbols == ("KRW-ETH", "KRW-XRP") and np.all(h1.ts % 3600 == 0)
    assert np.isclose(np.nansum(h1.volume[1]), np.nansum(data.candles.volume[1]), rtol=1e-12)
