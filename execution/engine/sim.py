"""Deterministic multi-market simulator [EX-2].

A BTC-like leader and ``n_markets - 1`` correlated markets whose joint behaviour switches
between five regimes (TREND, RANGE, CHOP, BREAKOUT_ROTATION, PANIC). The true regime of every
bar is recorded so the regime engine can be scored against it. The model (see
``docs/sim-model.md`` for the full description and the measured regime signatures):

* Regimes: a semi-Markov chain. An episode lasts ``min_minutes + Exp(mean_extra_minutes)``
  (scaled by ``SimConfig.regime_duration_scale``); the next regime is drawn from
  ``TRANSITIONS`` (never the same one twice in a row). Each regime has its own leader drift and
  volatility, mean reversion, correlation (``beta_scale``), dispersion (``idio_scale``),
  volume level, spread and depth (``REGIME_PARAMS``).
* Leader log price: ``dx = dir * drift + k * (c - x) + sigma * sqrt(h) * z``. In RANGE and
  CHOP the level is an Ornstein-Uhlenbeck process around a centre ``c`` that starts at the
  price when the episode begins and wanders as a slow random walk (``centre_vol``); ``k`` comes
  from the half-life (RANGE 30 min; CHOP ~8 min with louder noise). At 1 minute the noise
  dominates, so 1m returns are nearly uncorrelated (lag-1 autocorrelation ~ -k/2), while the
  level keeps reverting over tens of minutes. TREND, BREAKOUT_ROTATION and PANIC have no pull.
* Other markets: ``dx_i = beta_i * beta_scale * dx_leader + dir * alt_drift + breakout_i +
  idio_scale * s_i * sqrt(h_i) * z_i``. In BREAKOUT_ROTATION a few mid-cap markets get a strong
  drift and a volume surge; the set rotates every ``rotation_minutes``.
* Volatility clustering: GARCH(1,1)-like variance multiplier per market
  ``h_t = (1 - a - b) + a * z_{t-1}^2 + b * h_{t-1}`` (+ an impulse when PANIC or CHOP begins).
* Fat tails: ``z`` is Student-t with ``tail_dof`` degrees of freedom, scaled to unit variance.
* OHLC: open = previous close; high / low are sampled exactly from the maximum / minimum of a
  Brownian bridge between the two latent prices (so high >= max(open, close) and low <=
  min(open, close) always), then snapped outward to the tick grid; closes snap to the nearest tick.
* Traded value: a Zipf (power-law) cross-section of per-market liquidity with log-normal
  jitter, times the regime volume level, the GARCH state and the bar's absolute move.
* Order book: ``depth`` levels per side on the tick grid; spread and depth scale with the
  market's liquidity and the regime (wide and thin in PANIC).

Determinism: all randomness comes from independent PCG64 streams spawned from ``seed``
(universe, regime, shocks, intrabar paths, volume, centre). Each stream is consumed in the same order
whether bars are produced one at a time (``step``) or in a block (``generate``), so
``generate(n)`` equals ``n`` calls of ``step()`` bit for bit. Order books are a pure function
of (seed, bar, market) and never advance a stream. ``get_state()`` returns a JSON-safe dict
and ``SimMarket.from_state`` resumes exactly where it left off.

Units: drifts and volatilities in ``REGIME_PARAMS`` are per minute of log price and are scaled
to ``bar_seconds`` (drift by ``dt``, volatility by ``sqrt(dt)``); durations are in minutes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from decimal import Decimal
from typing import Any

import numpy as np

from execution.engine.precision import krw_tick_table
from execution.engine.types import TIMEFRAME_SECONDS, Candles, MarketInfo, OrderBook, Ticker

#: Regime labels, equal to ``regime.engine.types.RegimeLabel`` values (kept as plain strings so
#: this engine does not depend on another app).
REGIMES: tuple[str, ...] = ("TREND", "RANGE", "CHOP", "BREAKOUT_ROTATION", "PANIC")
TREND, RANGE, CHOP, BREAKOUT, PANIC = range(5)


@dataclass(frozen=True, slots=True)
class RegimeParams:
    """Dynamics of one regime; rates per minute, durations in minutes (see module docstring)."""

    min_minutes: float
    mean_extra_minutes: float
    leader_drift: float          # |drift| of the leader's log price per minute; sign = episode dir
    up_probability: float        # P(dir = +1) when the episode starts
    leader_vol: float            # leader volatility per sqrt(minute) before GARCH
    reversion_half_life: float   # minutes; pull of the leader's level toward its centre (0 = none)
    centre_vol: float            # volatility per sqrt(minute) of that centre (it wanders slowly)
    half_life_jitter: float      # 1: the half-life is drawn per episode as half_life x U(0.66, 1.5)
    beta_scale: float            # multiplies every market's beta to the leader
    idio_scale: float            # multiplies every market's idiosyncratic volatility
    alt_drift: float             # extra drift of every non-leader market per minute, times dir
    volume_mult: float           # traded value level of every market
    leader_volume_mult: float    # extra multiplier on the leader (flight to BTC in panics)
    breakout_drift: float        # drift per minute of the markets breaking out
    breakout_volume_mult: float  # traded value multiplier of the markets breaking out
    rotation_minutes: float      # the breakout set is redrawn this often
    spread_mult: float
    depth_mult: float
    vol_impulse: float           # added to every market's GARCH multiplier when the episode starts


RANGE_VOL, RANGE_HALF_LIFE, RANGE_CENTRE_VOL = 4.5e-4, 30.0, 1.0e-4
CHOP_VOL, CHOP_HALF_LIFE, CHOP_CENTRE_VOL = 1.0e-3, 8.0, 2.0e-4

REGIME_PARAMS: tuple[RegimeParams, ...] = (
    # TREND: persistent drift, low noise relative to drift -> high ADX, high efficiency, one-sided breadth.
    RegimeParams(720, 1440, 1.2e-4, 0.6, 6.0e-4, 0, 0, 0, 1.0, 0.8, 3e-5, 1.3, 1.0, 0, 0, 0, 1.0, 1.0, 0.0),
    # RANGE: the level reverts (Ornstein-Uhlenbeck, half-life 30 min) to a slowly wandering centre;
    # quiet, low volume, breadth ~0.5, low dispersion. 1m returns are ~uncorrelated (noise
    # dominates at 1m); the reversion shows over tens of minutes (variance ratio < 1).
    RegimeParams(480, 960, 0.0, 0.5, RANGE_VOL, RANGE_HALF_LIFE, RANGE_CENTRE_VOL, 0, 1.0, 0.7, 0.0, 0.7, 1.0,
                 0, 0, 0, 0.9, 1.2, 0.0),
    # CHOP: loud noise around a centre with a fast pull (half-life 8 min, per episode 5-12 min):
    # every move is given back within minutes -> high whipsaw, high ATR, low ADX and efficiency,
    # no persistence at 1m.
    RegimeParams(180, 360, 0.0, 0.5, CHOP_VOL, CHOP_HALF_LIFE, CHOP_CENTRE_VOL, 1, 1.0, 0.9, 0.0, 1.1, 1.0,
                 0, 0, 0, 1.4, 0.8, 0.5),
    # BREAKOUT_ROTATION: quiet, loosely coupled leader; a few mid caps break out on huge volume
    # (rotating) while the rest is quiet -> high dispersion, value concentrated in the top markets.
    RegimeParams(240, 480, 2e-5, 0.6, 6.0e-4, 0, 0, 0, 0.6, 1.8, 0.0, 0.5, 1.0, 8e-4, 30.0, 90, 1.2, 0.9,
                 0.5),
    # PANIC: steep correlated sell-off, vol spike, volume spike, breadth collapses, thin books.
    RegimeParams(60, 120, 7.0e-4, 0.0, 2.2e-3, 0, 0, 0, 1.25, 0.6, 2e-4, 3.0, 1.5, 0, 0, 0, 2.5, 0.4, 3.0),
)

#: Row = current regime, column = next regime (TREND, RANGE, CHOP, BREAKOUT_ROTATION, PANIC).
TRANSITIONS: tuple[tuple[float, ...], ...] = (
    (0.00, 0.40, 0.25, 0.25, 0.10),
    (0.40, 0.00, 0.25, 0.25, 0.10),
    (0.30, 0.40, 0.00, 0.15, 0.15),
    (0.35, 0.30, 0.25, 0.00, 0.10),
    (0.15, 0.45, 0.40, 0.00, 0.00),
)

#: Real Upbit KRW market codes (after the leader) with rough early-2026 prices in KRW, in
#: roughly descending order of traded value. Markets beyond this list are synthetic (KRW-S041...).
REAL_MARKETS: tuple[tuple[str, float], ...] = (
    ("ETH", 4_800_000), ("XRP", 3_100), ("SOL", 280_000), ("DOGE", 320), ("ADA", 1_000),
    ("SUI", 5_000), ("TRX", 430), ("LINK", 30_000), ("USDT", 1_450), ("AVAX", 40_000),
    ("XLM", 450), ("HBAR", 300), ("BCH", 700_000), ("SHIB", 0.02), ("DOT", 7_000),
    ("ONDO", 1_300), ("ENA", 800), ("PEPE", 0.015), ("ETC", 30_000), ("NEAR", 4_000),
    ("APT", 8_000), ("AAVE", 400_000), ("UNI", 13_000), ("POL", 350), ("ATOM", 6_000),
    ("SEI", 400), ("ARB", 600), ("STX", 1_000), ("IMX", 900), ("SAND", 400),
    ("MANA", 400), ("AXS", 4_000), ("ALGO", 300), ("EOS", 900), ("THETA", 1_200),
    ("GRT", 150), ("CHZ", 60), ("FLOW", 700), ("BTT", 0.0012),
)


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Simulator parameters (all JSON-safe scalars). Rates are per minute unless noted."""

    seed: int = 7
    n_markets: int = 30
    quote: str = "KRW"
    bar_seconds: int = 60
    start_ts: int = 1_767_225_600            # 2026-01-01T00:00:00Z, bar-open of the first bar
    leader_price: float = 140_000_000.0
    initial_regime: str = "RANGE"
    regime_duration_scale: float = 1.0       # multiplies every episode duration
    vol_scale: float = 1.0                   # multiplies every volatility
    drift_scale: float = 1.0                 # multiplies every drift
    tail_dof: float = 4.0                    # Student-t degrees of freedom of the shocks (> 2)
    garch_alpha: float = 0.05                # per bar
    garch_beta: float = 0.93                 # per bar; alpha + beta < 1
    idio_vol: float = 8.0e-4                 # base idiosyncratic volatility per sqrt(minute)
    beta_min: float = 0.7
    beta_max: float = 1.4
    leader_value_per_minute: float = 2.0e8   # quote value traded per minute by the leader
    value_zipf_exponent: float = 1.0         # value of rank r ~ r ** -exponent
    value_jitter: float = 0.35               # log-normal sigma around the Zipf line
    volume_noise: float = 0.4                # log-normal sigma of per-bar traded value
    leader_spread_bps: float = 0.5           # spread of the leader (at least one tick)
    spread_liquidity_exponent: float = 0.4   # spread ~ (leader value / value) ** exponent
    depth_level_minutes: float = 0.5         # book value per level in minutes of traded value

    def __post_init__(self) -> None:
        if self.n_markets < 1:
            raise ValueError("n_markets must be >= 1")
        if self.bar_seconds not in TIMEFRAME_SECONDS.values() or self.bar_seconds > 86400:
            raise ValueError(f"bar_seconds {self.bar_seconds} is not a known timeframe")
        if self.initial_regime not in REGIMES:
            raise ValueError(f"unknown initial_regime {self.initial_regime!r}")
        if not self.tail_dof > 2:
            raise ValueError("tail_dof must be > 2 (finite variance)")
        if not (0 <= self.garch_alpha and 0 <= self.garch_beta and self.garch_alpha + self.garch_beta < 1):
            raise ValueError("garch_alpha + garch_beta must be < 1")
        for name in ("leader_price", "regime_duration_scale", "vol_scale", "leader_value_per_minute",
                     "idio_vol", "leader_spread_bps", "depth_level_minutes"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be positive")
        if not (0 < self.beta_min <= self.beta_max):
            raise ValueError("need 0 < beta_min <= beta_max")

    @property
    def timeframe(self) -> str:
        return next(k for k, v in TIMEFRAME_SECONDS.items() if v == self.bar_seconds)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True, slots=True)
class SimHistory:
    """Bars produced by one ``generate``/``step`` call and the true regime of each bar.

    ``true_regime``: ``[bars]`` array of regime label strings (``REGIMES``).
    """

    candles: Candles
    true_regime: np.ndarray


# --------------------------------------------------------------------------- price grid


def _decimal_ratio(tick: Decimal) -> tuple[int, int]:
    """A tick as (numerator, denominator) integers so that price = count * num / den exactly."""
    sign, digits, exponent = tick.normalize().as_tuple()
    num = int("".join(map(str, digits)))
    if not isinstance(exponent, int) or sign or num == 0:
        raise ValueError(f"invalid tick {tick}")
    if exponent >= 0:
        return num * 10**exponent, 1
    return num, 10**-exponent


class PriceGrid:
    """Vectorised tick lookup and snapping.

    KRW markets use Upbit's price-dependent table in force at the bar's timestamp
    (``execution.engine.precision.krw_tick_table``); other quotes use a fixed tick per market.
    """

    def __init__(self, fixed_ticks: np.ndarray | None = None) -> None:
        self._fixed = fixed_ticks    # [markets x 2] (num, den) or None for KRW
        self._tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @classmethod
    def krw(cls) -> PriceGrid:
        return cls(None)

    @classmethod
    def fixed(cls, ticks: list[Decimal]) -> PriceGrid:
        return cls(np.array([_decimal_ratio(t) for t in ticks], dtype=np.float64))

    @property
    def is_krw(self) -> bool:
        return self._fixed is None

    def table_id(self, at_ts: int) -> int:
        """Identity of the tick table in force at ``at_ts`` (equal ids = same grid)."""
        if self._fixed is not None:
            return 0
        return id(krw_tick_table(at_ts))

    def _table(self, at_ts: int) -> tuple[np.ndarray, np.ndarray]:
        table = krw_tick_table(at_ts)
        cached = self._tables.get(id(table))
        if cached is None:
            rows = sorted(table, key=lambda band: band[0])          # ascending lower bounds
            lowers = np.array([float(lo) for lo, _ in rows])
            ticks = np.array([_decimal_ratio(t) for _, t in rows], dtype=np.float64)
            cached = self._tables[id(table)] = (lowers, ticks)
        return cached

    def ticks(self, prices: np.ndarray, at_ts: int, market_idx: np.ndarray | None = None) -> np.ndarray:
        """(num, den) of the tick for each price: shape ``prices.shape + (2,)``."""
        if self._fixed is not None:
            idx = np.arange(prices.shape[-1]) if market_idx is None else market_idx
            return np.broadcast_to(self._fixed[idx], prices.shape + (2,))
        p = np.asarray(prices, dtype=np.float64)
        if not np.all(np.isfinite(p)) or np.any(p <= 0):
            raise ValueError("prices must be finite and positive to look up a tick")
        lowers, ticks = self._table(at_ts)
        return ticks[np.searchsorted(lowers, p, side="right") - 1]

    def tick_decimal(self, price: float, at_ts: int, market_idx: int = 0) -> Decimal:
        t = self.ticks(np.array([price]), at_ts, np.array([market_idx]))[0]
        return Decimal(int(t[0])) / Decimal(int(t[1]))

    def snap(self, prices: np.ndarray, at_ts: int, mode: str, market_idx: np.ndarray | None = None) -> np.ndarray:
        """Snap to the tick grid: ``mode`` is "down", "up" or "nearest". Results are the doubles
        closest to the exact decimal grid price (so ``Decimal(repr(x))`` is on the grid)."""
        t = self.ticks(prices, at_ts, market_idx)
        num, den = t[..., 0], t[..., 1]
        units = prices * den / num
        if mode == "down":
            count = np.floor(units + 1e-9)
        elif mode == "up":
            count = np.ceil(units - 1e-9)
        elif mode == "nearest":
            count = np.floor(units + 0.5)
        else:
            raise ValueError(mode)
        count = np.maximum(count, 1.0)
        out = count * num / den
        # a snap that crossed into a coarser band must sit on that band's grid as well
        t2 = self.ticks(out, at_ts, market_idx)
        moved = (t2[..., 0] * t[..., 1]) != (t[..., 0] * t2[..., 1])
        if np.any(moved):
            n2, d2 = t2[..., 0][moved], t2[..., 1][moved]
            u2 = out[moved] * d2 / n2
            c2 = np.ceil(u2 - 1e-9) if mode == "up" else np.floor(u2 + 1e-9)
            out[moved] = np.maximum(c2, 1.0) * n2 / d2
        return out


def build_ladder_book(symbol: str, ts: int, mid: float, spread_frac: float, level_values: np.ndarray,
                      grid: PriceGrid, market_idx: int = 0, step_ticks: int = 1) -> OrderBook:
    """A synthetic book around ``mid`` on the tick grid.

    ``spread_frac``: target spread as a fraction of mid (at least one tick); ``level_values``:
    quote value per level, best first (same for both sides); ``step_ticks``: gap between levels.
    Quantities are in base units rounded down to 8 decimals. Used by the simulator and replay.
    """
    if not (math.isfinite(mid) and mid > 0):
        raise ValueError(f"mid must be positive, got {mid}")
    depth = len(level_values)
    mi = np.array([market_idx])
    tick = grid.ticks(np.array([mid]), ts, mi)[0]
    tick_f = tick[0] / tick[1]
    spread_ticks = max(1, int(round(spread_frac * mid / tick_f)))
    bid0 = float(grid.snap(np.array([mid - (spread_ticks // 2) * tick_f]), ts, "down", mi)[0])
    ask0 = float(grid.snap(np.array([bid0 + spread_ticks * tick_f]), ts, "up", mi)[0])
    bids = np.empty(depth)
    asks = np.empty(depth)
    bids[0], asks[0] = bid0, ask0
    for k in range(1, depth):
        tb = grid.ticks(np.array([bids[k - 1]]), ts, mi)[0]
        cand = bids[k - 1] - step_ticks * tb[0] / tb[1]
        if cand <= 0:
            bids = bids[:k]
            break
        bids[k] = grid.snap(np.array([cand]), ts, "down", mi)[0]
        if bids[k] >= bids[k - 1]:      # band edge: the finer tick below the edge
            tb2 = grid.ticks(np.array([bids[k - 1] * (1 - 1e-12)]), ts, mi)[0]
            bids[k] = grid.snap(np.array([bids[k - 1] - tb2[0] / tb2[1]]), ts, "down", mi)[0]
    for k in range(1, depth):
        ta = grid.ticks(np.array([asks[k - 1]]), ts, mi)[0]
        asks[k] = grid.snap(np.array([asks[k - 1] + step_ticks * ta[0] / ta[1]]), ts, "up", mi)[0]
    b_qty = np.floor(level_values[: len(bids)] / bids * 1e8) / 1e8
    a_qty = np.floor(level_values / asks * 1e8) / 1e8
    b_qty = np.maximum(b_qty, 1e-8)
    a_qty = np.maximum(a_qty, 1e-8)
    return OrderBook(symbol, int(ts), np.column_stack([bids, b_qty]), np.column_stack([asks, a_qty]))


# --------------------------------------------------------------------------- the market


#: Version of ``SimMarket.get_state``. 2: the RANGE / CHOP level model (centre + half-life, a
#: sixth random stream) replaced the square-wave anchor of version 1.
STATE_VERSION = 2
_RNG_NAMES = ("regime", "shock", "path", "volume", "centre")


def _upgrade_state_v1(state: dict[str, Any]) -> dict[str, Any]:
    """A version-1 state (square-wave anchor) continued under the current model: the anchor
    becomes the centre, the half-life is the current regime's default and the new centre stream
    starts from ``(seed, bar)``. Deterministic, but not the continuation version 1 would have made."""
    r = dict(state["regime"])
    reg = int(r["reg"])
    r["centre"] = float(r.pop("anchor"))
    r["half_life"] = REGIME_PARAMS[reg].reversion_half_life
    r.pop("swing_half", None)
    r.pop("swing_phase", None)
    rng = dict(state["rng"])
    seed = int(state["config"]["seed"])
    rng["centre"] = _rng_state(np.random.default_rng([seed, int(state["bar"]), 0xCE]))
    return {**state, "version": STATE_VERSION, "regime": r, "rng": rng}


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    return rng.bit_generator.state


def _rng_from(state: dict[str, Any]) -> np.random.Generator:
    bg = np.random.PCG64()
    bg.state = state
    return np.random.Generator(bg)


class SimMarket:
    """The simulated venue's market data. See the module docstring for the model."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config = config or SimConfig()
        n = config.n_markets
        self._dt = config.bar_seconds / 60.0
        ss = np.random.SeedSequence(config.seed)
        uni, reg, shock, path, vol, centre = (np.random.Generator(np.random.PCG64(s)) for s in ss.spawn(6))
        self._rng_regime, self._rng_shock, self._rng_path, self._rng_volume = reg, shock, path, vol
        self._rng_centre = centre

        # static universe ------------------------------------------------------------------
        codes = ["BTC"] + [c for c, _ in REAL_MARKETS[: n - 1]]
        prices = [config.leader_price] + [p for _, p in REAL_MARKETS[: n - 1]]
        for i in range(len(codes), n):
            codes.append(f"S{i + 1:03d}")
            prices.append(float(10 ** uni.uniform(0.5, 5.0)))
        uni_draws = uni.standard_normal((n, 3))   # value jitter, beta, idio
        self.symbols: tuple[str, ...] = tuple(f"{config.quote}-{c}" for c in codes)
        rank = np.arange(1, n + 1, dtype=np.float64)
        value = config.leader_value_per_minute * rank ** -config.value_zipf_exponent
        value[1:] *= np.exp(config.value_jitter * uni_draws[1:, 0])
        self._value_rate = value                                   # quote per minute
        u = 0.5 * (1 + np.tanh(uni_draws[:, 1]))                   # (0, 1)
        self._beta = config.beta_min + (config.beta_max - config.beta_min) * u
        self._beta[0] = 1.0
        liq = value[0] / value
        self._idio = config.idio_vol * liq ** 0.12 * np.exp(0.2 * uni_draws[:, 2])
        self._idio[0] = 0.0
        self._spread_frac = config.leader_spread_bps * 1e-4 * liq ** config.spread_liquidity_exponent
        if config.quote == "KRW":
            self.grid = PriceGrid.krw()
        else:
            self.grid = PriceGrid.fixed([Decimal(1).scaleb(math.floor(math.log10(p)) - 4) for p in prices])
        p0 = np.array(prices, dtype=np.float64)
        close0 = self.grid.snap(p0, config.start_ts, "nearest")
        self._pool = np.arange(4 if n >= 8 else 1, min(n, 61))    # breakout candidates (mid caps)
        self._n_breakouts = int(max(1, min(6, round(0.12 * (n - 1))))) if n > 1 else 0

        # dynamic state ----------------------------------------------------------------------
        self._bar = 0
        self._x = np.log(close0)
        self._close = close0
        self._h = np.ones(n)
        self._z_prev = np.zeros(n)
        self._reg = REGIMES.index(config.initial_regime)
        self._left = 0
        self._dir = 1
        self._centre = float(self._x[0])
        self._half_life = 0.0
        self._episode_bar = 0
        self._breakouts: list[int] = []
        self._rot_left = 0
        self._start_episode(self._reg, float(self._x[0]))
        self._last_reg = self._reg
        # ticker buckets: traded value per bucket and the close when each bucket began
        self._bucket_bars = max(1, 3600 // config.bar_seconds)
        self._n_buckets = max(1, 86400 // (self._bucket_bars * config.bar_seconds))
        self._bucket_value = np.zeros((self._n_buckets, n))
        self._bucket_open = np.tile(close0, (self._n_buckets, 1))

    # ------------------------------------------------------------------ regime episodes

    def _bars(self, minutes: float) -> int:
        return max(1, int(round(minutes * 60.0 / self.config.bar_seconds)))

    def _start_episode(self, reg: int, x_lead: float) -> None:
        """Begin an episode of ``reg``; ``x_lead`` is the leader's log price right now (the
        centre a reverting regime starts from)."""
        p = REGIME_PARAMS[reg]
        rng = self._rng_regime
        scale = self.config.regime_duration_scale
        minutes = (p.min_minutes + rng.exponential(p.mean_extra_minutes)) * scale
        self._reg = reg
        self._left = self._bars(minutes)
        self._dir = 1 if rng.random() < p.up_probability else -1
        self._centre = x_lead
        self._episode_bar = 0
        self._half_life = p.reversion_half_life
        if p.half_life_jitter:
            u = rng.uniform(0.66, 1.5)
            self._half_life *= u
            # Not used: drawn only so the regime stream is consumed exactly as by the earlier
            # square-wave model, which keeps every seed's sequence of true regimes unchanged.
            rng.integers(0, self._bars(12.0 * u))
        self._breakouts = []
        self._rot_left = 0
        if p.breakout_drift and self._n_breakouts:
            self._rotate()
        if p.vol_impulse:
            self._h = self._h + p.vol_impulse

    def _rotate(self) -> None:
        p = REGIME_PARAMS[self._reg]
        rng = self._rng_regime
        k = min(self._n_breakouts, len(self._pool))
        self._breakouts = sorted(int(i) for i in rng.choice(self._pool, size=k, replace=False))
        self._rot_left = self._bars(p.rotation_minutes * self.config.regime_duration_scale
                                    * rng.uniform(0.66, 1.33))

    def _next_regime(self, x_lead: float) -> None:
        row = np.array(TRANSITIONS[self._reg])
        nxt = int(self._rng_regime.choice(len(REGIMES), p=row / row.sum()))
        self._start_episode(nxt, x_lead)

    # ------------------------------------------------------------------ generation

    @property
    def n_markets(self) -> int:
        return len(self.symbols)

    @property
    def bar_index(self) -> int:
        """Number of bars produced so far."""
        return self._bar

    @property
    def now(self) -> int:
        """Epoch seconds at the end of the last produced bar (= open of the next one)."""
        return self.config.start_ts + self._bar * self.config.bar_seconds

    @property
    def true_regime(self) -> str:
        """Regime of the last produced bar (the initial regime before any bar)."""
        return REGIMES[self._last_reg]

    def step(self) -> SimHistory:
        """One bar (real-time use); continues from the previous ``step``/``generate``."""
        return self.generate(1)

    def generate(self, n_bars: int) -> SimHistory:
        """The next ``n_bars`` bars, vectorised over markets (as fast as possible)."""
        if n_bars < 1:
            raise ValueError("n_bars must be >= 1")
        cfg = self.config
        n, m = n_bars, self.n_markets
        dt, sdt = self._dt, math.sqrt(self._dt)
        dof = cfg.tail_dof
        z = self._rng_shock.standard_t(dof, size=(n, m)) / math.sqrt(dof / (dof - 2.0))
        u_path = self._rng_path.random((n, m, 2))
        v_noise = self._rng_volume.standard_normal((n, m))
        zc = self._rng_centre.standard_normal(n).tolist()

        a, b = cfg.garch_alpha, cfg.garch_beta
        omega = 1.0 - a - b
        az2 = a * z * z
        H = np.empty((n, m))
        reg_t = np.empty(n, dtype=np.int64)
        dir_t = np.empty(n)
        rl = np.empty(n)
        centre_sd = np.zeros(n)
        bo_segments: list[tuple[int, int, list[int]]] = []
        seg_start = 0
        x_lead = float(self._x[0])
        h = self._h
        z_prev2 = a * self._z_prev * self._z_prev
        vol_scale, drift_scale = cfg.vol_scale, cfg.drift_scale
        z0 = z[:, 0].tolist()
        for t in range(n):
            if self._left <= 0:
                if self._breakouts:
                    bo_segments.append((seg_start, t, self._breakouts))
                self._next_regime(x_lead)
                h = self._h
                seg_start = t
            elif REGIME_PARAMS[self._reg].breakout_drift and self._rot_left <= 0:
                bo_segments.append((seg_start, t, self._breakouts))
                self._rotate()
                seg_start = t
            p = REGIME_PARAMS[self._reg]
            h = omega + z_prev2 + b * h
            np.minimum(h, 25.0, out=h)
            H[t] = h
            z_prev2 = az2[t]
            self._h = h
            sq_h0 = math.sqrt(h[0])
            r = self._dir * p.leader_drift * drift_scale * dt
            if self._half_life:
                # Ornstein-Uhlenbeck level around a wandering centre: the centre moves first,
                # then the price is pulled a fraction k of the way toward it, plus noise.
                c_sd = p.centre_vol * vol_scale * sdt * sq_h0
                self._centre += c_sd * zc[t]
                centre_sd[t] = c_sd
                k = 1.0 - 0.5 ** (dt / self._half_life)
                r += k * (self._centre - x_lead)
            r += p.leader_vol * vol_scale * sdt * sq_h0 * z0[t]
            x_lead += r
            rl[t] = r
            reg_t[t] = self._reg
            dir_t[t] = self._dir
            self._left -= 1
            self._rot_left -= 1
            self._episode_bar += 1
        if self._breakouts:
            bo_segments.append((seg_start, n, self._breakouts))
        self._last_reg = int(reg_t[-1])

        # per-bar regime parameters as vectors
        P = REGIME_PARAMS
        col = np.array
        beta_scale = col([p.beta_scale for p in P])[reg_t]
        idio_scale = col([p.idio_scale for p in P])[reg_t]
        alt_drift = col([p.alt_drift for p in P])[reg_t] * dir_t * drift_scale * dt
        vmult = col([p.volume_mult for p in P])[reg_t]
        lvmult = col([p.leader_volume_mult for p in P])[reg_t]
        lead_vol = col([p.leader_vol for p in P])[reg_t] * vol_scale * sdt

        sqh = np.sqrt(H)
        factor = beta_scale[:, None] * self._beta[None, :]
        idio_sd = idio_scale[:, None] * self._idio[None, :] * vol_scale * sdt * sqh
        R = factor * rl[:, None] + alt_drift[:, None] + idio_sd * z
        R[:, 0] = rl
        vol_mult = np.repeat(vmult[:, None], m, axis=1)
        vol_mult[:, 0] *= lvmult
        for s, e, members in bo_segments:
            p = P[BREAKOUT]
            R[s:e, members] += p.breakout_drift * drift_scale * dt
            vol_mult[s:e, members] *= p.breakout_volume_mult
        # sequential accumulation from the last state: identical for step() and generate()
        X = np.cumsum(np.vstack([self._x[None, :], R]), axis=0)[1:]
        lead_sd = np.sqrt((lead_vol * sqh[:, 0]) ** 2 + centre_sd ** 2)[:, None]
        bar_sd = np.sqrt((factor * lead_sd) ** 2 + idio_sd ** 2)
        bar_sd[:, 0] = lead_sd[:, 0]

        # OHLC from the latent path: exact Brownian-bridge extremes between x_{t-1} and x_t
        x_prev = np.vstack([self._x[None, :], X[:-1]])
        d = X - x_prev
        var = bar_sd * bar_sd
        up = 0.5 * (d + np.sqrt(d * d - 2.0 * var * np.log1p(-u_path[..., 0])))
        dn = 0.5 * (d - np.sqrt(d * d - 2.0 * var * np.log1p(-u_path[..., 1])))
        ts = cfg.start_ts + (self._bar + np.arange(n, dtype=np.int64)) * cfg.bar_seconds
        close = np.empty((n, m))
        high = np.empty((n, m))
        low = np.empty((n, m))
        for s, e in self._era_segments(ts):
            at = int(ts[s])
            close[s:e] = self.grid.snap(np.exp(X[s:e]), at, "nearest")
            high[s:e] = self.grid.snap(np.exp(x_prev[s:e] + up[s:e]), at, "up")
            low[s:e] = self.grid.snap(np.exp(x_prev[s:e] + dn[s:e]), at, "down")
        open_ = np.vstack([self._close[None, :], close[:-1]])
        np.maximum(high, np.maximum(open_, close), out=high)
        np.minimum(low, np.minimum(open_, close), out=low)

        # traded value -> volume in base units
        move = np.abs(R) / np.maximum(bar_sd, 1e-12)
        value = (self._value_rate[None, :] * dt * vol_mult * sqh * (0.5 + 0.6 * np.minimum(move, 8.0))
                 * np.exp(cfg.volume_noise * v_noise - 0.5 * cfg.volume_noise ** 2))
        typical = (open_ + high + low + close) / 4.0
        volume = np.floor(value / typical * 1e8) / 1e8

        self._update_buckets(close, value)
        self._x = X[-1].copy()
        self._close = close[-1].copy()
        self._z_prev = z[-1].copy()
        self._bar += n
        candles = Candles(self.symbols, cfg.timeframe, ts, np.ascontiguousarray(open_.T),
                          np.ascontiguousarray(high.T), np.ascontiguousarray(low.T),
                          np.ascontiguousarray(close.T), np.ascontiguousarray(volume.T))
        return SimHistory(candles, np.array([REGIMES[r] for r in reg_t]))

    def _era_segments(self, ts: np.ndarray) -> list[tuple[int, int]]:
        """Split a block where the tick table changes (e.g. Upbit's 2025-07-31 change)."""
        segments = []
        start = 0
        while start < len(ts):
            first = self.grid.table_id(int(ts[start]))
            lo, hi = start, len(ts)
            if self.grid.table_id(int(ts[-1])) == first:
                segments.append((start, len(ts)))
                break
            while hi - lo > 1:                      # first bar whose table differs
                mid = (lo + hi) // 2
                if self.grid.table_id(int(ts[mid])) == first:
                    lo = mid
                else:
                    hi = mid
            segments.append((start, hi))
            start = hi
        return segments

    def _update_buckets(self, close: np.ndarray, value: np.ndarray) -> None:
        n = close.shape[0]
        t = 0
        prev_close = self._close
        while t < n:
            pos = (self._bar + t) % self._bucket_bars
            bucket = ((self._bar + t) // self._bucket_bars) % self._n_buckets
            take = min(self._bucket_bars - pos, n - t)
            if pos == 0:
                self._bucket_value[bucket] = 0.0
                self._bucket_open[bucket] = prev_close if t == 0 else close[t - 1]
            acc = self._bucket_value[bucket]
            for row in value[t:t + take]:           # bar by bar: same rounding as step()
                acc += row
            t += take
            prev_close = close[t - 1]

    # ------------------------------------------------------------------ views at the current bar

    def _index(self, symbol_or_index: str | int) -> int:
        if isinstance(symbol_or_index, str):
            return self.symbols.index(symbol_or_index)
        if not 0 <= symbol_or_index < self.n_markets:
            raise IndexError(symbol_or_index)
        return int(symbol_or_index)

    def last_close(self, symbol_or_index: str | int) -> float:
        return float(self._close[self._index(symbol_or_index)])

    def order_book(self, symbol_or_index: str | int, depth: int = 15) -> OrderBook:
        """The book at the end of the last bar (``ts = now``); levels on the tick grid."""
        i = self._index(symbol_or_index)
        if depth < 1:
            raise ValueError("depth must be >= 1")
        p = REGIME_PARAMS[self._last_reg]
        rng = np.random.default_rng([self.config.seed, self._bar, i, 0xB00C])
        vol_spread = min(float(self._h[i]), 25.0) ** 0.25
        spread = self._spread_frac[i] * p.spread_mult * vol_spread * math.exp(0.25 * rng.standard_normal())
        base = self._value_rate[i] * self.config.depth_level_minutes * p.depth_mult / max(vol_spread, 0.5)
        levels = base * (1.0 + 0.15 * np.arange(depth)) * np.exp(0.3 * rng.standard_normal(depth))
        step = 1 if self._spread_frac[i] < 5e-4 else 2
        return build_ladder_book(self.symbols[i], self.now, float(self._close[i]), spread, levels, self.grid,
                                 market_idx=i, step_ticks=step)

    def tickers(self) -> list[Ticker]:
        """Last price, best bid/ask, traded value over the last 24 h buckets, 24 h change."""
        oldest = ((self._bar // self._bucket_bars) + 1) % self._n_buckets
        if self._bar < self._bucket_bars * self._n_buckets:
            oldest = 0
        ref = self._bucket_open[oldest]
        value24 = self._bucket_value.sum(axis=0)
        out = []
        for i, sym in enumerate(self.symbols):
            book = self.order_book(i, depth=1)
            out.append(Ticker(sym, self.now, float(self._close[i]), book.best_bid, book.best_ask,
                              float(value24[i]), float((self._close[i] / ref[i] - 1.0) * 100.0)))
        return out

    def market_info(self) -> list[MarketInfo]:
        quote = self.config.quote
        out = []
        for i, sym in enumerate(self.symbols):
            tick = None if self.grid.is_krw else self.grid.tick_decimal(float(self._close[i]), self.now, i)
            out.append(MarketInfo(sym, sym.split("-", 1)[1], quote,
                                  min_notional=Decimal("5000") if quote == "KRW" else Decimal("0"),
                                  qty_decimals=8, tick_size=tick))
        return out

    # ------------------------------------------------------------------ persistence

    def get_state(self) -> dict[str, Any]:
        """JSON-safe snapshot (dicts, lists, str, int, float) to persist and resume."""
        return {
            "version": STATE_VERSION,
            "config": self.config.to_dict(),
            "bar": self._bar,
            "x": self._x.tolist(),
            "close": self._close.tolist(),
            "h": self._h.tolist(),
            "z_prev": self._z_prev.tolist(),
            "regime": {
                "reg": self._reg, "last_reg": self._last_reg, "left": self._left,
                "dir": self._dir, "centre": self._centre, "half_life": self._half_life,
                "episode_bar": self._episode_bar, "breakouts": list(self._breakouts), "rot_left": self._rot_left,
            },
            "rng": {name: _rng_state(getattr(self, f"_rng_{name}")) for name in _RNG_NAMES},
            "bucket_value": self._bucket_value.tolist(),
            "bucket_open": self._bucket_open.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> SimMarket:
        version = state.get("version")
        if version == 1:
            state = _upgrade_state_v1(state)
        elif version != STATE_VERSION:
            raise ValueError(f"unsupported simulator state version {version!r} "
                             f"(this simulator writes version {STATE_VERSION})")
        market = cls(SimConfig.from_dict(state["config"]))
        market._bar = int(state["bar"])
        for name in ("x", "close", "h", "z_prev"):
            arr = np.array(state[name], dtype=np.float64)
            if arr.shape != (market.n_markets,) or not np.all(np.isfinite(arr)):
                raise ValueError(f"corrupt simulator state: {name}")
            setattr(market, f"_{name}", arr)
        r = state["regime"]
        market._reg, market._last_reg, market._left = int(r["reg"]), int(r["last_reg"]), int(r["left"])
        market._dir, market._episode_bar = int(r["dir"]), int(r["episode_bar"])
        market._centre, market._half_life = float(r["centre"]), float(r["half_life"])
        market._breakouts, market._rot_left = [int(i) for i in r["breakouts"]], int(r["rot_left"])
        if set(state["rng"]) != set(_RNG_NAMES):
            raise ValueError("corrupt simulator state: rng streams")
        for name in _RNG_NAMES:
            setattr(market, f"_rng_{name}", _rng_from(state["rng"][name]))
        market._bucket_value = np.array(state["bucket_value"], dtype=np.float64)
        market._bucket_open = np.array(state["bucket_open"], dtype=np.float64)
        return market
