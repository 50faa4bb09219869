"""Monte Carlo evaluator [RK-6] and the Kelly-with-CVaR fraction used by sizing [RK-1].

For one candidate, paths of future per-bar log returns are drawn from its recent returns
(stationary block bootstrap, which keeps volatility clustering and short-range dependence, or a
moment-fitted Student-t for fat tails), cumulated to ``[paths x horizon]`` and turned into net
trade returns ``exp(cum) - 1 - round_trip_cost`` (fees and slippage both ways, as the learning
layer's ``r_net``). Per horizon it reports EV, win probability and CVaR95; T* is the horizon with
the best EV per hour. An optional stop freezes a path at the bar it first crosses the stop (at
that bar's return, so gaps through the stop are kept).

Everything is vectorised over paths and horizons; the RNG is passed in (``numpy.random.Generator``)
so results are reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

CVAR_LEVEL = 0.05   # CVaR95: mean of the worst 5 % of outcomes
_MIN_RETURN = 1e-12  # smaller average returns are numerical noise, not statistics


class MCMethod(StrEnum):
    BLOCK_BOOTSTRAP = "block_bootstrap"
    STUDENT_T = "student_t"


@dataclass(frozen=True, slots=True)
class TradeStats:
    """Per-trade outcome statistics, as fractions of position notional.

    ``avg_win`` and ``avg_loss`` are positive magnitudes; ``cvar95`` is the mean loss of the worst
    5 % of trades as a positive number (0 when even those are not losses).
    """

    win_rate: float
    avg_win: float
    avg_loss: float
    cvar95: float
    n_trades: int

    @classmethod
    def from_returns(cls, r_net: np.ndarray) -> TradeStats:
        """Statistics of realised net trade returns (a 1-D array of fractions)."""
        r = np.asarray(r_net, dtype=np.float64)
        r = r[np.isfinite(r)]
        if r.size == 0:
            return cls(0.0, 0.0, 0.0, 0.0, 0)
        wins, losses = r[r > 0], r[r <= 0]
        return cls(
            win_rate=float(wins.size / r.size),
            avg_win=float(wins.mean()) if wins.size else 0.0,
            avg_loss=float(-losses.mean()) if losses.size else 0.0,
            cvar95=max(0.0, float(-_tail_mean(r[:, None], CVAR_LEVEL)[0])),
            n_trades=int(r.size),
        )


def kelly_with_cvar(win_prob: float, avg_win: float, avg_loss: float, cvar95: float,
                    fraction: float = 0.5, max_fraction: float = 1.0) -> float:
    """Fraction of equity to hold in the position (notional / equity), Kelly with a CVaR penalty.

    Growth ``p ln(1 + f W) + q ln(1 - f L)`` is maximised at ``f* = p / L - q / W``. Using the
    tail loss ``L = max(avg_loss, cvar95)`` instead of the average loss is the CVaR penalty: a
    strategy whose bad trades are much worse than its average loss is sized for the bad trades.
    The result is scaled by ``fraction`` (half Kelly by default), clipped to ``[0, max_fraction]``
    and is 0 when there is no edge or the inputs are not usable (never NaN).
    """
    vals = (win_prob, avg_win, avg_loss, cvar95, fraction, max_fraction)
    if not all(math.isfinite(v) for v in vals) or fraction <= 0 or max_fraction <= 0:
        return 0.0
    p = min(max(win_prob, 0.0), 1.0)
    if p <= 0.0 or avg_win < _MIN_RETURN:
        return 0.0
    loss = max(avg_loss, cvar95, 0.0)
    if loss < _MIN_RETURN:
        return float(max_fraction)      # no losses observed: only the caller's cap limits it
    f_star = p / loss - (1.0 - p) / avg_win
    if not math.isfinite(f_star):
        return 0.0
    return float(min(max(f_star * fraction, 0.0), max_fraction))


def _tail_mean(x: np.ndarray, level: float) -> np.ndarray:
    """Mean of the lowest ``ceil(level * n)`` values of each column of ``x`` ``[n x k]``."""
    n = x.shape[0]
    k = max(1, math.ceil(level * n))
    rows = np.ascontiguousarray(x.T)          # partition along contiguous memory is much faster
    return np.partition(rows, k - 1, axis=1)[:, :k].mean(axis=1)


def block_bootstrap_indices(n_obs: int, n_paths: int, horizon: int, mean_block: float,
                            rng: np.random.Generator) -> np.ndarray:
    """Stationary bootstrap (Politis & Romano 1994) indices ``[paths x horizon]`` into a series of
    ``n_obs`` observations: blocks start at uniform positions, have geometric lengths with mean
    ``mean_block`` and wrap around the end of the series."""
    if n_obs < 1 or n_paths < 1 or horizon < 1:
        raise ValueError("n_obs, n_paths and horizon must be >= 1")
    p_new = 1.0 / max(mean_block, 1.0)
    new_block = rng.random((n_paths, horizon)) < p_new
    new_block[:, 0] = True
    # int32 throughout: half the memory traffic of int64 on the hot path
    dtype = np.int32 if n_obs + horizon < 2**31 else np.int64
    starts = rng.integers(0, n_obs, size=(n_paths, horizon), dtype=dtype)
    t = np.arange(horizon, dtype=dtype)
    # position of the most recent block start at or before each step
    block_pos = np.maximum.accumulate(np.where(new_block, t, dtype(0)), axis=1)
    idx = np.take_along_axis(starts, block_pos, axis=1)
    idx += t - block_pos
    if horizon <= n_obs:            # idx < 2 n_obs: one conditional wrap instead of a modulo
        np.subtract(idx, n_obs, out=idx, where=idx >= n_obs)
    else:
        idx %= n_obs
    return idx


def fit_student_t(returns: np.ndarray) -> tuple[float, float, float]:
    """Method-of-moments Student-t fit ``(loc, scale, df)``: df from excess kurtosis
    (``6 / (df - 4)``), scale so the variance matches. Thin tails give df = 1e6 (normal)."""
    r = np.asarray(returns, dtype=np.float64)
    mu, sigma = float(r.mean()), float(r.std(ddof=1))
    centred = r - mu
    m2 = float(np.mean(centred**2))
    excess = float(np.mean(centred**4) / m2**2 - 3.0) if m2 > 0 else 0.0
    df = 4.0 + 6.0 / excess if excess > 1e-6 else 1e6
    df = min(max(df, 4.1), 1e6)            # df > 4 keeps kurtosis finite and variance defined
    scale = sigma * math.sqrt((df - 2.0) / df)
    return mu, scale, df


def simulate_cum_returns(returns: np.ndarray, n_paths: int, horizon: int, rng: np.random.Generator,
                         method: MCMethod = MCMethod.BLOCK_BOOTSTRAP, mean_block: float = 10.0,
                         direction: int = 1) -> np.ndarray:
    """Cumulative log returns ``[paths x horizon]`` (column h is the return after h + 1 bars).

    ``returns`` are per-bar log returns of the candidate (1-D, finite, at least 30 values);
    ``direction`` -1 evaluates a short (returns negated).
    """
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 1 or r.size < 30:
        raise ValueError("need a 1-D series of at least 30 returns")
    if not np.all(np.isfinite(r)):
        raise ValueError("returns must be finite (drop or repair NaN bars first)")
    if direction not in (1, -1):
        raise ValueError("direction must be 1 or -1")
    r = r * direction
    if method is MCMethod.BLOCK_BOOTSTRAP:
        steps = r[block_bootstrap_indices(r.size, n_paths, horizon, mean_block, rng)]
    elif method is MCMethod.STUDENT_T:
        loc, scale, df = fit_student_t(r)
        steps = loc + scale * rng.standard_t(df, size=(n_paths, horizon))
    else:
        raise ValueError(f"unknown method {method!r}")
    return np.cumsum(steps, axis=1)


def apply_stop(cum: np.ndarray, stop_loss: float) -> np.ndarray:
    """Freeze each path at the first bar its simple return is <= -stop_loss (keeps the gap)."""
    if not 0.0 < stop_loss < 1.0:
        raise ValueError("stop_loss must be in (0, 1)")
    hit = cum <= math.log1p(-stop_loss)
    any_hit = hit.any(axis=1)
    first = np.where(any_hit, hit.argmax(axis=1), cum.shape[1])
    frozen_val = np.take_along_axis(cum, np.minimum(first, cum.shape[1] - 1)[:, None], axis=1)
    after = np.arange(cum.shape[1])[None, :] >= first[:, None]
    return np.where(after, frozen_val, cum)


@dataclass(frozen=True, slots=True)
class MCReport:
    """Per-horizon statistics of one candidate; arrays are ``[horizon]`` (index h = h + 1 bars).

    ``ev``: mean net return; ``win_prob``: P(net return > 0); ``cvar95``: mean loss of the worst
    5 % of paths as a positive fraction; ``avg_win`` / ``avg_loss``: mean net win / loss magnitude.
    ``t_star_bars`` is the horizon (bars) with the highest EV per hour, or 0 when no horizon
    has a positive EV (``ev_per_hour`` is then the best, non-positive, value).
    """

    horizons_bars: np.ndarray
    bar_seconds: int
    ev: np.ndarray
    win_prob: np.ndarray
    cvar95: np.ndarray
    avg_win: np.ndarray
    avg_loss: np.ndarray
    t_star_bars: int
    ev_per_hour: float
    round_trip_cost: float
    n_paths: int

    def at(self, bars: int) -> dict[str, float]:
        """The statistics at a horizon of ``bars`` bars, JSON-safe."""
        i = int(bars) - 1
        return {"bars": int(bars), "ev": float(self.ev[i]), "win_prob": float(self.win_prob[i]),
                "cvar95": float(self.cvar95[i]), "avg_win": float(self.avg_win[i]),
                "avg_loss": float(self.avg_loss[i])}

    def trade_stats(self, bars: int | None = None) -> TradeStats:
        """Statistics at T* (or ``bars``) in the form sizing's Kelly cap takes."""
        h = bars or self.t_star_bars or int(self.horizons_bars[-1])
        s = self.at(h)
        return TradeStats(s["win_prob"], s["avg_win"], s["avg_loss"], s["cvar95"], self.n_paths)

    def kelly(self, fraction: float = 0.5, max_fraction: float = 1.0) -> float:
        """Kelly-with-CVaR position fraction at T* (0 when no horizon has an edge)."""
        if self.t_star_bars == 0:
            return 0.0
        s = self.trade_stats()
        return kelly_with_cvar(s.win_rate, s.avg_win, s.avg_loss, s.cvar95, fraction, max_fraction)

    def to_dict(self) -> dict[str, object]:
        """Summary for the UI and the Signal row (JSON-safe)."""
        return {
            "t_star_bars": self.t_star_bars,
            "t_star_hours": self.t_star_bars * self.bar_seconds / 3600.0,
            "ev_per_hour": self.ev_per_hour,
            "round_trip_cost": self.round_trip_cost,
            "n_paths": self.n_paths,
            "at_t_star": self.at(self.t_star_bars) if self.t_star_bars else None,
            "ev": self.ev.tolist(),
            "win_prob": self.win_prob.tolist(),
            "cvar95": self.cvar95.tolist(),
        }


def horizon_stats(cum: np.ndarray, round_trip_cost: float, bar_seconds: int) -> MCReport:
    """Reduce simulated cumulative log returns ``[paths x horizon]`` to an MCReport."""
    n_paths, horizon = cum.shape
    # work on [horizon x paths] so every reduction runs along contiguous memory
    net = np.expm1(np.ascontiguousarray(cum.T))
    net -= round_trip_cost
    total = net.sum(axis=1)
    ev = total / n_paths
    wins = np.maximum(net, 0.0)
    win = wins > 0
    n_win = np.count_nonzero(win, axis=1)
    n_loss = n_paths - n_win
    win_prob = n_win / n_paths
    sum_win = wins.sum(axis=1)
    sum_loss = total - sum_win
    avg_win = np.divide(sum_win, n_win, out=np.zeros(horizon), where=n_win > 0)
    avg_loss = np.divide(-sum_loss, n_loss, out=np.zeros(horizon), where=n_loss > 0)
    k = max(1, math.ceil(CVAR_LEVEL * n_paths))
    net.partition(k - 1, axis=1)
    cvar95 = np.maximum(-net[:, :k].mean(axis=1), 0.0)
    horizons = np.arange(1, horizon + 1)
    per_hour = ev / (horizons * bar_seconds / 3600.0)
    best = int(np.argmax(per_hour))
    t_star = best + 1 if ev[best] > 0 else 0
    return MCReport(horizons, bar_seconds, ev, win_prob, cvar95, avg_win, avg_loss, t_star,
                    float(per_hour[best]), float(round_trip_cost), n_paths)


def evaluate_candidate(returns: np.ndarray, rng: np.random.Generator, *, n_paths: int = 2_000,
                       horizon: int = 240, bar_seconds: int = 60, fee: float = 0.0005,
                       slippage: float = 0.001, stop_loss: float | None = None,
                       method: MCMethod = MCMethod.BLOCK_BOOTSTRAP, mean_block: float = 10.0,
                       direction: int = 1) -> MCReport:
    """Simulate one candidate and report EV / win probability / CVaR95 per horizon, T* and EV per
    hour, net of ``2 * (fee + slippage)`` (entry and exit)."""
    if fee < 0 or slippage < 0:
        raise ValueError("fee and slippage must be >= 0")
    cum = simulate_cum_returns(returns, n_paths, horizon, rng, method, mean_block, direction)
    if stop_loss is not None:
        cum = apply_stop(cum, stop_loss)
    return horizon_stats(cum, 2.0 * (fee + slippage), bar_seconds)


def evaluate_candidates(returns: np.ndarray, rng: np.random.Generator, **kwargs: object
                        ) -> list[MCReport]:
    """``evaluate_candidate`` for each row of ``returns`` ``[candidates x bars]`` (one RNG stream,
    so the whole batch is reproducible from one seed). Memory stays at one candidate's paths."""
    r = np.asarray(returns, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError("returns must be [candidates x bars]")
    return [evaluate_candidate(row, rng, **kwargs) for row in r]  # type: ignore[arg-type]


def rank_candidates(reports: list[MCReport]) -> list[int]:
    """Indices of candidates with a positive edge, best EV per hour first."""
    scored = [(i, r.ev_per_hour) for i, r in enumerate(reports) if r.t_star_bars > 0]
    return [i for i, _ in sorted(scored, key=lambda x: -x[1])]
