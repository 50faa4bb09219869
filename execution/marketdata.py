"""Market data service (worker side): one collector per exchange keeps candles, books, tickers
and rules fresh for every trader [issue 3 #9], and loads a trader's view of the market.

The embedded ``sim`` exchange is advanced here to the last completed bar of the wall clock;
its state is persisted so a restart continues the same market. Its bars, books and tickers go
through ``execution.engine.validation`` like a real venue's and are counted in ``DataQuality``
(``execution.quality``). The real venues' collectors are in ``execution.collectors`` and write
the same tables, so ``load_view`` works the same for every source. Candles are bulk-upserted;
retention keeps two days of 1-minute bars for every market and the leader's longer history that
the regime engine's 4-hour ADX needs. See docs/market-data.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

import numpy as np
from django.conf import settings
from django.db import transaction

from execution import quality
from execution.engine.sim import SimConfig, SimHistory, SimMarket
from execution.engine.types import Candles, MarketInfo, OrderBook, Ticker
from execution.engine.validation import check_book, check_ticker, validate_candles
from execution.models import Candle, MarketSnapshot, SimMarketState
from quantweb.db import to_decimal

logger = logging.getLogger(__name__)

SIM = "sim"
BAR = 60
KEEP_BARS = 2 * 1440               # every market: two days of 1-minute bars
LEADER_KEEP_BARS = 2 * 1440        # the leader: >= FeatureConfig.leader_bars_needed (1,485) with room


def warmup_bars() -> int:
    """Bars the sim generates on first start (QUANTWEB_SIM_WARMUP_BARS; tests use fewer)."""
    return int(getattr(settings, "QUANTWEB_SIM_WARMUP_BARS", KEEP_BARS))
WINDOW_BARS = 1000                 # what one scan reads (strategies.engine.pipeline.RECOMMENDED_BARS)
MAX_CATCH_UP_BARS = 3 * 1440       # after a long downtime, the sim jumps instead of replaying days


def last_closed_bar(now_ts: float) -> int:
    """Open time of the newest bar that has closed at ``now_ts``."""
    return int(now_ts // BAR) * BAR - BAR


# -- the sim collector ------------------------------------------------------------------------

def _sim_config(start_ts: int) -> SimConfig:
    return SimConfig(seed=settings.QUANTWEB_SIM_SEED, n_markets=settings.QUANTWEB_SIM_MARKETS, start_ts=start_ts)


def _store_history(history: SimHistory, market: SimMarket, *, leader_keep: int, keep: int) -> int:
    """Validate the new bars [EX-5], upsert the ones that pass, refresh the snapshots and count
    everything in ``DataQuality`` (the sim is clean by construction; the counts prove it)."""
    c, report = validate_candles(history.candles)
    results: dict[str, quality.MarketResult] = {}
    rows = []
    n = c.n_bars
    for i, symbol in enumerate(c.symbols):
        good = np.flatnonzero(~np.isnan(c.close[i]))
        res = results[symbol] = quality.MarketResult()
        res.add_candles(report.markets[i], int(c.ts[good[-1]]) if len(good) else None)
        first = max(0, n - (leader_keep if i == 0 else keep))
        for j in range(first, n):
            if np.isnan(c.close[i, j]):
                continue                     # dropped by validation: counted, never stored
            rows.append(Candle(
                exchange=SIM, symbol=symbol, timeframe="1m", ts=int(c.ts[j]),
                open=to_decimal(float(c.open[i, j])), high=to_decimal(float(c.high[i, j])),
                low=to_decimal(float(c.low[i, j])), close=to_decimal(float(c.close[i, j])),
                volume=to_decimal(round(float(c.volume[i, j]), 8)),
            ))
    Candle.objects.bulk_create(rows, batch_size=2000, update_conflicts=True,
                               unique_fields=["exchange", "symbol", "timeframe", "ts"],
                               update_fields=["open", "high", "low", "close", "volume"])
    _store_snapshots(market, results)
    quality.record(SIM, results)
    return len(rows)


def _book_json(book: OrderBook) -> dict:
    return {"bids": book.bids.tolist(), "asks": book.asks.tolist()}


def _market_json(info: MarketInfo) -> dict:
    return {
        "base": info.base, "quote": info.quote, "min_notional": str(info.min_notional), "lot_size": str(info.lot_size),
        "qty_decimals": info.qty_decimals, "tick_size": str(info.tick_size) if info.tick_size is not None else None,
        "maker_fee": str(info.maker_fee), "taker_fee": str(info.taker_fee), "caution": info.caution,
        "can_short": info.can_short,
    }


def _finite(x: float) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def ticker_json(t: Ticker) -> dict:
    """JSON-safe ticker (NaN is not JSON; a missing value is stored as null)."""
    return {"last": _finite(t.last), "bid": _finite(t.bid), "ask": _finite(t.ask), "value_24h": _finite(t.value_24h),
            "change_24h_pct": _finite(t.change_24h_pct)}


def _ticker_from_json(symbol: str, ts: int, data: dict) -> Ticker:
    def num(key: str) -> float:
        v = data.get(key)
        return float("nan") if v is None else float(v)

    return Ticker(symbol, ts, num("last"), num("bid"), num("ask"), num("value_24h"), num("change_24h_pct"))


def _store_snapshots(market: SimMarket, results: dict[str, quality.MarketResult]) -> None:
    tickers = {t.symbol: t for t in market.tickers()}
    infos = {m.symbol: m for m in market.market_info()}
    now = market.now
    rows = []
    for s in market.symbols:
        book = check_book(market.order_book(s), now)
        ticker = check_ticker(tickers[s], now)
        results[s].add_snapshot(book, "book")
        results[s].add_snapshot(ticker, "ticker")
        if book.value is None or ticker.value is None:
            continue                         # rejected: counted; the previous snapshot stays
        rows.append(MarketSnapshot(exchange=SIM, symbol=s, ts=now, book=_book_json(book.value),
                                   ticker=ticker_json(ticker.value), market=_market_json(infos[s])))
    MarketSnapshot.objects.bulk_create(rows, update_conflicts=True, unique_fields=["exchange", "symbol"],
                                       update_fields=["ts", "book", "ticker", "market"])


def advance_sim(now_ts: float) -> int:
    """Bring the sim exchange up to the last closed bar at ``now_ts``; returns bars produced.

    Concurrent callers serialise on the state row; the loser finds nothing left to do.
    """
    target = last_closed_bar(now_ts)
    with transaction.atomic():
        row = SimMarketState.objects.select_for_update().filter(name=SIM).first()
        if row is None:
            warmup = warmup_bars()
            start = target - (warmup - 1) * BAR
            market = SimMarket(_sim_config(start))
            history = market.generate(warmup)
            _store_history(history, market, leader_keep=LEADER_KEEP_BARS, keep=KEEP_BARS)
            SimMarketState.objects.create(name=SIM, config=market.config.to_dict(), state=market.get_state(),
                                          last_bar_ts=int(history.candles.ts[-1]))
            _record_true_regime(history)
            logger.info("sim exchange created: %d markets, %d warm-up bars", market.n_markets, warmup)
            return warmup
        missing = (target - row.last_bar_ts) // BAR
        if missing <= 0:
            return 0
        market = SimMarket.from_state(row.state)
        if missing > MAX_CATCH_UP_BARS:
            logger.warning("sim exchange was idle %d bars; generating only the last %d", missing, MAX_CATCH_UP_BARS)
        history = market.generate(int(missing))
        keep = min(int(missing), KEEP_BARS)
        _store_history(history, market, leader_keep=min(int(missing), LEADER_KEEP_BARS), keep=keep)
        row.state, row.last_bar_ts = market.get_state(), int(history.candles.ts[-1])
        row.save(update_fields=["state", "last_bar_ts", "updated_at"])
        _record_true_regime(history)
        prune(SIM, row.last_bar_ts)
        return int(missing)


def _record_true_regime(history: SimHistory) -> None:
    """Classify the newest bar and keep the simulator's true regime beside it."""
    from regime.services import evaluate

    transaction.on_commit(lambda: evaluate(SIM, int(history.candles.ts[-1]), str(history.true_regime[-1])))


def leader_of(symbols: list[str] | tuple[str, ...]) -> str | None:
    """The market the regime engine follows: ``KRW-BTC``, else the first BTC market (``BTC/USDT``
    ...), else the first symbol (collectors create the leader's snapshot first)."""
    if not symbols:
        return None
    if "KRW-BTC" in symbols:
        return "KRW-BTC"
    for s in symbols:
        if s.startswith("BTC/") or s.endswith("-BTC") and s.count("-") == 1 and not s.startswith("BTC-"):
            return s
    return symbols[0]


def prune(exchange: str, newest_ts: int) -> int:
    """Retention: drop 1-minute bars older than the keep windows."""
    leader = leader_of(list(MarketSnapshot.objects.filter(exchange=exchange).order_by("id")
                            .values_list("symbol", flat=True)))
    deleted, _ = (Candle.objects.filter(exchange=exchange, timeframe="1m", ts__lt=newest_ts - KEEP_BARS * BAR)
                  .exclude(symbol=leader).delete())
    deleted2, _ = Candle.objects.filter(exchange=exchange, timeframe="1m", symbol=leader,
                                        ts__lt=newest_ts - LEADER_KEEP_BARS * BAR).delete()
    return deleted + deleted2


# -- a trader's view of the market ------------------------------------------------------------

@dataclass(frozen=True)
class MarketView:
    """Everything one scan reads: closed 1-minute candles ending at ``bar_ts``, the leader's
    long history, the latest books, tickers and rules."""

    exchange: str
    bar_ts: int
    candles: Candles
    leader_history: Candles | None
    books: dict[str, OrderBook]
    tickers: dict[str, Ticker]
    markets: dict[str, MarketInfo]
    data_ts: int

    def last_price(self, symbol: str) -> float:
        i = self.candles.index(symbol)
        closes = self.candles.close[i]
        valid = closes[~np.isnan(closes)]
        return float(valid[-1]) if len(valid) else float("nan")


def _candles(exchange: str, symbols: tuple[str, ...], start_ts: int, end_ts: int) -> Candles:
    ts = np.arange(start_ts, end_ts + BAR, BAR, dtype=np.int64)
    n, m = len(ts), len(symbols)
    arrays = {k: np.full((m, n), np.nan) for k in ("open", "high", "low", "close", "volume")}
    index = {s: i for i, s in enumerate(symbols)}
    rows = (Candle.objects.filter(exchange=exchange, timeframe="1m", symbol__in=symbols, ts__gte=start_ts, ts__lte=end_ts)
            .values_list("symbol", "ts", "open", "high", "low", "close", "volume"))
    for symbol, t, o, h, lo, c, v in rows.iterator(chunk_size=5000):
        i, j = index[symbol], (t - start_ts) // BAR
        arrays["open"][i, j], arrays["high"][i, j], arrays["low"][i, j] = float(o), float(h), float(lo)
        arrays["close"][i, j], arrays["volume"][i, j] = float(c), float(v)
    return Candles(symbols, "1m", ts, **arrays)


def market_info_from_json(symbol: str, data: dict) -> MarketInfo:
    return MarketInfo(
        symbol=symbol, base=data["base"], quote=data["quote"], min_notional=Decimal(data["min_notional"]),
        lot_size=Decimal(data["lot_size"]), qty_decimals=int(data["qty_decimals"]),
        tick_size=Decimal(data["tick_size"]) if data.get("tick_size") else None,
        maker_fee=Decimal(data["maker_fee"]), taker_fee=Decimal(data["taker_fee"]),
        caution=bool(data.get("caution")), can_short=bool(data.get("can_short")),
    )


_view_cache: dict[tuple[str, int], MarketView] = {}


def load_view(exchange: str, bar_ts: int, window: int = WINDOW_BARS, leader_bars: int | None = None) -> MarketView:
    """The market as of the close of ``bar_ts``. Cached per worker process and bar: every trader
    ticking on the same bar shares one load."""
    key = (exchange, bar_ts)
    if key in _view_cache:
        return _view_cache[key]
    snaps = list(MarketSnapshot.objects.filter(exchange=exchange).order_by("id"))
    if not snaps:
        raise LookupError(f"no market data collected yet for {exchange}")
    ordered = [s.symbol for s in snaps]
    leader = leader_of(ordered)
    symbols = tuple([leader] + [s for s in ordered if s != leader])
    candles = _candles(exchange, symbols, bar_ts - (window - 1) * BAR, bar_ts)
    from regime.engine.features import FeatureConfig

    leader_bars = leader_bars or FeatureConfig().leader_bars_needed
    leader_history = _candles(exchange, symbols[:1], bar_ts - (leader_bars - 1) * BAR, bar_ts)
    books = {s.symbol: OrderBook(s.symbol, s.ts, np.array(s.book["bids"], dtype=float).reshape(-1, 2),
                                 np.array(s.book["asks"], dtype=float).reshape(-1, 2)) for s in snaps}
    tickers = {s.symbol: _ticker_from_json(s.symbol, s.ts, s.ticker) for s in snaps if s.ticker}
    markets = {s.symbol: market_info_from_json(s.symbol, s.market) for s in snaps}
    view = MarketView(exchange, bar_ts, candles, leader_history, books, tickers, markets, max(s.ts for s in snaps))
    _view_cache.clear()  # one bar at a time per process
    _view_cache[key] = view
    return view


def latest_bar(exchange: str) -> int | None:
    row = SimMarketState.objects.filter(name=exchange).values_list("last_bar_ts", flat=True).first()
    if row is not None:
        return row
    return Candle.objects.filter(exchange=exchange, timeframe="1m").order_by("-ts").values_list("ts", flat=True).first()
