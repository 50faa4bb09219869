"""Replay data [EX-3]: CSV, freqtrade JSON / feather and Upbit JSON load, validate and align."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from execution.adapters.replay import find_candle_files, load_candle_files, read_candle_file
from execution.engine.replay import (
    align_series,
    build_replay,
    infer_timeframe,
    parse_candle_filename,
    records_to_series,
)
from execution.engine.types import MarketDataError
from execution.engine.validation import OhlcvSeries
from tests.conftest import SHARED_DATA, require_shared_data


@pytest.mark.parametrize(("name", "expected"), [
    ("upbit_KRW-BTC_1m.csv.gz", ("upbit", "KRW-BTC", "1m", "KRW")),
    ("binance_ETH-USDT_5m.csv.gz", ("binance", "ETH-USDT", "5m", "USDT")),
    ("binancefutures_XRP-USDT_1h.csv.gz", ("binancefutures", "XRP-USDT", "1h", "USDT")),
    ("XRP_ETH-1m.feather", ("freqtrade", "XRP/ETH", "1m", "ETH")),
    ("futures__XRP_USDT_USDT-8h-mark.feather", ("futures", "XRP/USDT:USDT#mark", "8h", "USDT")),
    ("BTC_USDT-5m.json", ("freqtrade", "BTC/USDT", "5m", "USDT")),
])
def test_file_names_give_exchange_symbol_timeframe(name, expected):
    p = parse_candle_filename(name)
    assert (p.exchange, p.symbol, p.timeframe, p.quote) == expected
    assert parse_candle_filename("SOLUSDT.csv") is None


def test_timeframe_is_inferred_from_spacing():
    assert infer_timeframe(np.array([0, 300, 600, 1200])) == "5m"
    month = pd.to_datetime(["2024-01-31", "2024-02-29", "2024-03-31"]).as_unit("s").asi8
    assert infer_timeframe(month) == "1M"
    with pytest.raises(MarketDataError):
        infer_timeframe(np.array([0, 7]))


def test_freqtrade_json_round_trip(tmp_path):
    rows = [[1_700_000_000_000 + 300_000 * i, 1.0 + i, 2.0 + i, 0.5 + i, 1.5 + i, 10.0 * i] for i in range(5)]
    path = tmp_path / "BTC_USDT-5m.json"
    path.write_text(json.dumps(rows))
    gz = tmp_path / "ETH_USDT-5m.json.gz"
    with gzip.open(gz, "wt") as fh:
        json.dump(rows[1:], fh)
    data = load_candle_files([path, gz])
    c = data.candles
    assert c.symbols == ("BTC/USDT", "ETH/USDT") and c.timeframe == "5m"
    np.testing.assert_array_equal(c.ts, 1_700_000_000 + 300 * np.arange(5))
    np.testing.assert_array_equal(c.close[0], [1.5, 2.5, 3.5, 4.5, 5.5])
    assert np.isnan(c.close[1, 0]) and c.close[1, 1] == 2.5     # aligned, missing bar stays NaN
    assert data.report.market("ETH/USDT").rows_out == 4


def test_feather_matches_its_normalised_csv():
    feather = require_shared_data("originals/freqtrade_testdata/ETH_BTC-5m.feather")
    csv = require_shared_data("freqtrade_testdata/bittrex_ETH-BTC_5m.csv.gz")
    a, b = read_candle_file(feather), read_candle_file(csv)
    assert a.timeframe == b.timeframe == "5m" and a.symbol == "ETH/BTC"
    np.testing.assert_array_equal(a.ts, b.ts)
    np.testing.assert_array_equal(a.close, b.close)


def test_upbit_rest_json_is_read_oldest_first():
    path = require_shared_data("originals/upbit_smtm/upbit_1m_20200220_202000-20200220_210000.json")
    s = read_candle_file(path)
    assert s.symbol == "KRW-BTC" and s.timeframe == "1m"
    assert np.all(np.diff(s.ts) > 0)
    data = build_replay([s])
    assert data.report.count("out_of_order") == 0


def test_upbit_hourly_markets_align_on_one_grid():
    paths = [require_shared_data(f"upbit_azuremooni/upbit_KRW-{c}_1h.csv.gz") for c in ("BTC", "ETH", "XRP", "SOL")]
    data = load_candle_files(paths)
    c = data.candles
    assert c.symbols == ("KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL") and c.timeframe == "1h"
    assert np.all(np.diff(c.ts) == 3600)
    assert c.ts[0] == pd.Timestamp("2018-09-26T00:00:00Z").timestamp()          # XRP starts first
    assert c.ts[-1] == pd.Timestamp("2024-06-30T23:00:00Z").timestamp()
    # bars are never invented: NaNs equal the grid minus each market's rows
    for i, sym in enumerate(c.symbols):
        assert int(np.isfinite(c.close[i]).sum()) == data.report.market(sym).rows_out
    assert data.report.market("KRW-BTC").count("missing_bars") == 59


def test_upbit_daily_universe_keeps_its_0100_utc_grid():
    paths = [require_shared_data(f"upbit_daily_krw_universe/upbit_KRW-{c}_1d.csv.gz") for c in ("BTC", "ADA", "1INCH")]
    data = load_candle_files(paths)
    assert np.all(data.candles.ts % 86400 == 3600)
    assert data.report.market("KRW-BTC").grid_offset == 3600
    assert data.report.count("volume_missing", "KRW-ADA") == data.report.market("KRW-ADA").rows_out


def test_markets_on_different_grids_or_timeframes_are_refused():
    a = OhlcvSeries("A", "1h", np.array([0, 3600]), *(np.ones(2),) * 5)
    b = OhlcvSeries("B", "1h", np.array([1800, 5400]), *(np.ones(2),) * 5)
    with pytest.raises(MarketDataError):
        align_series([a, b])
    with pytest.raises(MarketDataError):
        align_series([a, OhlcvSeries("C", "1d", np.array([0]), *(np.ones(1),) * 5)])
    with pytest.raises(MarketDataError):
        records_to_series([{"foo": 1}])


def test_every_candle_file_in_shared_data_loads():
    """Walks all OHLCV files under ../shared/data (CSV, gz, feather, JSON)."""
    root = require_shared_data()
    files = find_candle_files(root)
    assert len(files) >= 150
    kinds = set()
    for path in files:
        data = load_candle_files([path])
        c = data.candles
        mq = data.report.markets[0]
        assert mq.rows_out > 0 and mq.rows_out == int(np.isfinite(c.close[0]).sum()), path
        finite = np.isfinite(c.close[0])
        assert np.all(c.high[0, finite] >= np.maximum(c.open[0, finite], c.close[0, finite])), path
        assert np.all(c.low[0, finite] <= np.minimum(c.open[0, finite], c.close[0, finite])), path
        assert np.all(c.low[0, finite] > 0), path
        kinds.add(path.name.split(".", 1)[1])
    assert {"csv.gz", "feather", "json", "csv"} <= kinds
    assert SHARED_DATA.exists()
