"""Candle validation [EX-5]: every problem repaired or dropped, and counted exactly."""

from __future__ import annotations

import numpy as np
import pytest

from execution.engine.types import Candles, MarketDataError
from execution.engine.validation import PROBLEM_KINDS, OhlcvSeries, clean_ohlcv, robust_z, validate_candles

T0 = 1_700_000_000 - 1_700_000_000 % 3600


def series(rows, tf="1m", symbol="KRW-BTC"):
    arr = np.array(rows, dtype=np.float64)
    return OhlcvSeries(symbol, tf, arr[:, 0].astype(np.int64), arr[:, 1], arr[:, 2], arr[:, 3], arr[:, 4], arr[:, 5])


def clean_rows(n=30, tf_s=60, start=T0):
    rng = np.random.default_rng(1)
    closes = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    opens = np.r_[100.0, closes[:-1]]
    return [[start + i * tf_s, o, max(o, c) * 1.001, min(o, c) * 0.999, c, 10.0] for i, (o, c) in enumerate(zip(opens, closes, strict=True))]


def test_clean_data_passes_untouched():
    s = series(clean_rows())
    out, q = clean_ohlcv(s)
    assert q.rows_in == q.rows_out == 30 and q.dropped == 0 and q.repaired == 0
    assert all(q.count(k) == 0 for k in PROBLEM_KINDS)
    np.testing.assert_array_equal(out.close, s.close)


def test_each_problem_is_counted_and_handled():
    rows = clean_rows(40)
    rows[3][2] = rows[3][1] - 1.0                      # high below open  -> repaired
    rows[4][3] = max(rows[4][1], rows[4][4]) + 0.5     # low above body   -> repaired
    rows[5][4] = float("nan")                          # NaN close        -> dropped
    rows[6][3] = -1.0                                  # negative low     -> dropped
    rows[7][5] = -3.0                                  # negative volume  -> dropped
    rows[8][5] = float("nan")                          # volume missing   -> flagged
    rows[9][5] = 0.0                                   # zero volume      -> flagged
    dup = list(rows[10])
    dup[4] = dup[4] * 1.0001                           # a revised copy of bar 10 (last wins)
    rows.append(dup)
    rows.append([T0 + 11 * 60 + 7, 100, 101, 99, 100, 1])   # off the minute grid -> dropped
    rows[12], rows[13] = rows[13], rows[12]            # swapped pair -> sorted
    del rows[20:23]                                    # a 3-bar hole -> flagged gap
    # (the dropped bars 5-7 leave a second 3-bar hole; the two appended rows and the swap are out of order)
    out, q = clean_ohlcv(series(rows))
    assert q.counts == {"high_below_body": 1, "low_above_body": 1, "nan_price": 1, "non_positive_price": 1,
                        "negative_volume": 1, "volume_missing": 1, "zero_volume": 1, "duplicate_ts": 1,
                        "off_grid": 1, "out_of_order": 3, "gaps": 2, "missing_bars": 6}
    assert q.rows_in == 39 and q.rows_out == 39 - 5
    assert np.all(np.diff(out.ts) > 0)
    assert np.all(out.high >= np.maximum(out.open, out.close)) and np.all(out.low <= np.minimum(out.open, out.close))
    assert out.close[out.ts == T0 + 600][0] == dup[4]
    assert q.examples["nan_price"] == [T0 + 300]


def test_reverting_spike_is_dropped_and_a_real_jump_is_only_flagged():
    rows = clean_rows(200)
    rows[100][4] *= 1.5                                # bad print: +50% and straight back
    rows[101][1] = rows[100][4]
    rows[101][2] = max(rows[101][2], rows[100][4])
    rows[100][2] = max(rows[100][2], rows[100][4])
    for r in rows[150:]:                               # a genuine -20% repricing that stays
        r[1:5] = [v * 0.8 for v in r[1:5]]
    out, q = clean_ohlcv(series(rows))
    assert q.count("reverting_spike") == 1 and q.examples["reverting_spike"] == [T0 + 100 * 60]
    assert q.count("return_outlier") == 1 and q.examples["return_outlier"] == [T0 + 150 * 60]
    assert q.rows_out == 199


def test_grid_offset_is_detected_not_dropped():
    rows = clean_rows(10, tf_s=86400, start=T0 - T0 % 86400 + 3600)   # days starting 01:00 UTC
    out, q = clean_ohlcv(series(rows, tf="1d"))
    assert q.grid_offset == 3600 and q.count("off_grid") == 0 and q.rows_out == 10


def test_robust_z_handles_flat_series():
    np.testing.assert_array_equal(robust_z(np.zeros(5)), np.zeros(5))
    z = robust_z(np.array([0.0, 0.0, 0.0, 0.0, 0.0, 1.0]))
    assert z[-1] > 1 and z[0] < 0.5


def test_validate_candles_turns_dropped_bars_into_holes():
    n = 6
    ts = T0 + 60 * np.arange(n)
    close = np.array([[100.0, 101, 102, 103, 104, 105], [10, 10, np.nan, 10, 10, 10]])
    high = close + 1
    high[0, 2] = 50.0                                  # below the body: repaired
    low = close - 1
    low[1, 4] = -1                                     # negative: dropped
    c = Candles(("A", "B"), "1m", ts, close.copy(), high, low, close.copy(), np.ones((2, n)))
    out, report = validate_candles(c)
    assert out.high[0, 2] == 102.0 and report.count("high_below_body", "A") == 1
    assert np.isnan(out.close[1, 4]) and report.count("non_positive_price", "B") == 1
    assert report.count("missing_bars", "B") == 2 and report.count("gaps", "B") == 2
    assert report.to_dict()["totals"]["non_positive_price"] == 1
    assert not report.clean


def test_unknown_timeframe_and_ragged_columns_fail_fast():
    with pytest.raises(MarketDataError):
        clean_ohlcv(OhlcvSeries("X", "7m", np.arange(3), *(np.ones(3),) * 5))
    with pytest.raises(MarketDataError):
        clean_ohlcv(OhlcvSeries("X", "1m", np.arange(3) * 60, np.ones(2), *(np.ones(3),) * 4))
