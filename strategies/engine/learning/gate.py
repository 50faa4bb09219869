"""Evaluation gate [AI-2]: out-of-sample results of one candidate -> PASS / HOLD / REJECT.

The gate only ever sees out-of-sample (OOS) samples: one net return per signal or trade that the
candidate took in data it was not tuned on (walk-forward test folds, or labelled snapshots after
the tuning window). ``r_net`` is net of the round trip's costs (``labels.LabelCosts``); ``mae``
is the maximum adverse excursion of each sample as a return (<= 0 usually; its magnitude
``max(0, -mae)`` is what the MAE rules read).

Metrics (all returned, whatever the decision):

* ``n``: samples; ``days``: OOS span in days; ``spd``: signals per day ``n / days``.
* ``e``: mean ``r_net``; ``std``: its standard deviation (ddof 1); ``sharpe``: ``e / std`` per
  sample (not annualised; the deflated Sharpe ratio uses the same unit); ``win_rate``.
* ``q05`` / ``q01``: 5 % and 1 % quantiles of ``r_net`` (linear interpolation).
* ``mae_mean`` / ``mae_95``: mean and 95 % quantile of the adverse-excursion magnitude.
* ``skew`` / ``kurt`` (non-excess; 3 for a normal) of ``r_net``.
* ``dsr``: deflated Sharpe ratio against the candidate set (when ``trials`` is given) and
  ``pbo``: probability of backtest overfitting of the tuning run (when given).
* ``baseline_percentile``: where the candidate's trades stand among random entries with the
  same markets, holding times and stakes (0..100; ``strategies.engine.backtest.evidence``:
  ``evidence(...)["excess"]["percentile"]`` of its backtest), when given. Reported only: no rule
  reads it yet (a candidate below the baseline's median with a positive ``e`` rode the market,
  which ``E_POSITIVE`` and ``DSR_MIN`` do not see; a rule needs figures from real sets first).

Rules, checked in this order; the first failing rule decides and is returned as ``rule``:

Hard fails -> REJECT
  1. ``N_MIN``        n < ``min_samples`` (30): too few samples to judge.
  2. ``E_POSITIVE``   e <= ``e_min`` (0): no positive expectancy after costs.
  3. ``Q01_FLOOR``    q01 < ``q01_floor`` (-10 %): the 1 % tail loses too much.
  4. ``SPD_RANGE``    spd < ``spd_min`` (0.2) or spd > ``spd_max`` (48): trades too rarely to
                      matter or so often that costs and capacity dominate.
  5. ``MAE_95_MAX``   mae_95 > ``mae95_max`` (10 %): adverse moves too deep for the stops.
Soft fails -> HOLD (kept, not deployable)
  6. ``SHARPE_MIN``   sharpe < ``sharpe_min`` (0.05 per sample).
  7. ``Q05_FLOOR``    q05 < ``q05_floor`` (-4 %).
  8. ``MAE_MEAN_MAX`` mae_mean > ``mae_mean_max`` (3 %).
  9. ``DSR_MIN``      dsr < ``dsr_min`` (0.90), when computed.
 10. ``PBO_MAX``      pbo > ``pbo_max`` (0.5), when computed.
Otherwise PASS (rule ``ALL_RULES_PASSED``). ``failures`` lists every failing rule, not just
the deciding one.

Overfitting statistics:

* Deflated Sharpe ratio (Bailey & López de Prado, 2014): the probability that the true Sharpe
  ratio exceeds the best one expected from ``N`` unskilled trials,
  ``SR0 = sqrt(V[SR]) * ((1 - g) * Z^-1(1 - 1/N) + g * Z^-1(1 - 1/(N e)))`` (g = Euler-
  Mascheroni), ``DSR = Z((SR - SR0) * sqrt(T - 1) / sqrt(1 - skew * SR + (kurt - 1) / 4 * SR^2))``.
* Probability of backtest overfitting by combinatorially symmetric cross-validation (Bailey,
  Borwein, López de Prado & Zhu, 2017): the ``T x N`` matrix of per-period returns of the ``N``
  candidates is cut into ``S`` blocks; for every half/half split the in-sample best candidate's
  out-of-sample rank ``w`` gives ``logit = ln(w / (1 - w))``; PBO is the share of splits with
  ``logit <= 0`` (the in-sample winner is at or below the OOS median).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from itertools import combinations
from statistics import NormalDist

import numpy as np

EULER_GAMMA = 0.5772156649015329
_N = NormalDist()


class Decision(StrEnum):
    PASS = "PASS"
    HOLD = "HOLD"
    REJECT = "REJECT"


@dataclass(frozen=True, slots=True)
class GateConfig:
    """Thresholds of the rules in the module docstring (fractions, per sample)."""

    min_samples: int = 30
    e_min: float = 0.0
    q01_floor: float = -0.10
    spd_min: float = 0.2
    spd_max: float = 48.0
    mae95_max: float = 0.10
    sharpe_min: float = 0.05
    q05_floor: float = -0.04
    mae_mean_max: float = 0.03
    dsr_min: float = 0.90
    pbo_max: float = 0.5

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class TrialStats:
    """The candidate set a Sharpe ratio was selected from: how many trials and the variance of
    their (per-sample) Sharpe ratios."""

    n_trials: int
    sharpe_variance: float


@dataclass(frozen=True, slots=True)
class GateResult:
    decision: Decision
    rule: str                       # the rule that decided (ALL_RULES_PASSED for PASS)
    detail: str                     # "e = -0.0012 <= 0" ...
    metrics: dict[str, float | int | None]
    failures: tuple[str, ...]       # every failing rule, in rule order

    def to_dict(self) -> dict:
        """JSON-safe (NaN and infinities become None)."""
        return {"decision": self.decision.value, "rule": self.rule, "detail": self.detail,
                "metrics": json_safe(self.metrics), "failures": list(self.failures)}


def json_safe(data: dict) -> dict:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in data.items()}


def _quantile(x: np.ndarray, q: float) -> float:
    return float(np.quantile(x, q)) if len(x) else float("nan")


def sample_metrics(r_net: np.ndarray, mae: np.ndarray, days: float) -> dict[str, float | int | None]:
    """Every gate metric of one OOS sample set (NaN-free inputs; ``days`` > 0)."""
    r = np.asarray(r_net, dtype=np.float64)
    m = np.abs(np.minimum(np.asarray(mae, dtype=np.float64), 0.0))
    if r.shape != m.shape:
        raise ValueError("r_net and mae must have the same shape")
    if not (np.isfinite(r).all() and np.isfinite(m).all()):
        raise ValueError("r_net and mae must be finite")
    if not (math.isfinite(days) and days > 0):
        raise ValueError(f"days must be positive, got {days!r}")
    n = len(r)
    e = float(r.mean()) if n else float("nan")
    std = float(r.std(ddof=1)) if n > 1 else float("nan")
    sharpe = e / std if n > 1 and std > 0 else float("nan")   # identical returns: undefined
    if n > 2 and std > 0:
        z = (r - e) / r.std(ddof=0)
        skew, kurt = float((z ** 3).mean()), float((z ** 4).mean())
    else:
        skew, kurt = 0.0, 3.0
    return {
        "n": n, "days": float(days), "spd": n / days, "e": e, "std": std, "sharpe": sharpe,
        "win_rate": float((r > 0).mean()) if n else float("nan"),
        "q05": _quantile(r, 0.05), "q01": _quantile(r, 0.01),
        "mae_mean": float(m.mean()) if n else float("nan"), "mae_95": _quantile(m, 0.95),
        "skew": skew, "kurt": kurt,
    }


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """SR0: the Sharpe ratio the best of ``n_trials`` unskilled trials reaches by luck."""
    if n_trials < 2 or sharpe_variance <= 0:
        return 0.0
    a = _N.inv_cdf(1.0 - 1.0 / n_trials)
    b = _N.inv_cdf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(sharpe_variance) * ((1.0 - EULER_GAMMA) * a + EULER_GAMMA * b)


def deflated_sharpe(sharpe: float, n_obs: int, skew: float, kurt: float, n_trials: int,
                    sharpe_variance: float) -> float:
    """Deflated Sharpe ratio in [0, 1] (per-observation Sharpe ratios; ``kurt`` non-excess)."""
    if n_obs < 2 or not math.isfinite(sharpe):
        return float("nan")
    sr0 = expected_max_sharpe(n_trials, sharpe_variance)
    denom = 1.0 - skew * sharpe + (kurt - 1.0) / 4.0 * sharpe ** 2
    if denom <= 0:
        return float("nan")
    return _N.cdf((sharpe - sr0) * math.sqrt(n_obs - 1) / math.sqrt(denom))


def _sharpe_cols(block: np.ndarray) -> np.ndarray:
    mean = block.mean(axis=0)
    std = block.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > 0, mean / std, np.where(mean > 0, np.inf, np.where(mean < 0, -np.inf, 0.0)))


def pbo_cscv(returns: np.ndarray, n_blocks: int = 10) -> dict[str, float | int]:
    """Probability of backtest overfitting of choosing the best column of ``returns``
    (``[periods x candidates]``, e.g. daily returns) by Sharpe ratio; see the module docstring.

    Returns ``pbo``, the number of splits, the mean logit and the share of splits whose
    in-sample winner lost money out of sample."""
    m = np.asarray(returns, dtype=np.float64)
    if m.ndim != 2 or m.shape[1] < 2:
        raise ValueError("returns must be [periods x candidates] with at least 2 candidates")
    if not np.isfinite(m).all():
        raise ValueError("returns must be finite")
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError("n_blocks must be an even number >= 2")
    t, n = m.shape
    if t < 2 * n_blocks:
        raise ValueError(f"need at least {2 * n_blocks} periods for {n_blocks} blocks, got {t}")
    blocks = np.array_split(np.arange(t), n_blocks)
    logits, oos_loss = [], 0
    all_blocks = set(range(n_blocks))
    for train in combinations(range(n_blocks), n_blocks // 2):
        test = sorted(all_blocks - set(train))
        rows_in = np.concatenate([blocks[i] for i in train])
        rows_out = np.concatenate([blocks[i] for i in test])
        sr_in, sr_out = _sharpe_cols(m[rows_in]), _sharpe_cols(m[rows_out])
        best = int(np.argmax(sr_in))
        # relative rank of the in-sample winner out of sample, in (0, 1); ties share the mean rank
        below = float((sr_out < sr_out[best]).sum())
        equal = float((sr_out == sr_out[best]).sum())
        w = (below + (equal + 1) / 2.0) / (n + 1)
        logits.append(math.log(w / (1.0 - w)))
        oos_loss += int(m[rows_out, best].sum() < 0)
    lg = np.array(logits)
    return {"pbo": float((lg <= 0).mean()), "splits": len(lg), "logit_mean": float(lg.mean()),
            "oos_loss_share": oos_loss / len(lg), "n_blocks": n_blocks, "candidates": n}


#: figures of the random-entry baseline (``strategies.engine.backtest.evidence``, as the
#: backtest report computes them; ``PanelEvaluator.baseline``) the gate copies into its
#: metrics as ``rb_<name>``
BASELINE_KEYS = ("excess_total", "excess_trade_mean", "percentile", "total_return_mean", "total_return_p05",
                 "total_return_p95", "trade_return_mean", "trade_return_p05", "trade_return_p95", "draws")


def evaluate_gate(r_net: np.ndarray, mae: np.ndarray, days: float, config: GateConfig | None = None,
                  trials: TrialStats | None = None, pbo: float | None = None,
                  baseline_percentile: float | None = None, baseline: dict | None = None) -> GateResult:
    """The gate decision for one candidate's OOS samples (see the module docstring).

    ``baseline``: the candidate's random-entry baseline on the same OOS trades (the dict of
    ``PanelEvaluator.baseline``); its figures are reported as ``rb_*`` metrics and its
    ``percentile`` as ``baseline_percentile`` when that is not given. Reporting only."""
    c = config or GateConfig()
    mt = sample_metrics(r_net, mae, days)
    if baseline is not None:
        for key in BASELINE_KEYS:
            value = baseline.get(key)
            mt[f"rb_{key}"] = float(value) if isinstance(value, int | float) and math.isfinite(value) else None
        if baseline_percentile is None:
            baseline_percentile = mt["rb_percentile"]
    mt["baseline_percentile"] = baseline_percentile
    dsr = None
    if trials is not None and mt["n"] > 1:
        value = deflated_sharpe(mt["sharpe"], mt["n"], mt["skew"], mt["kurt"], trials.n_trials,
                                trials.sharpe_variance)
        dsr = None if math.isnan(value) else value
    mt["dsr"] = dsr
    mt["sr0"] = expected_max_sharpe(trials.n_trials, trials.sharpe_variance) if trials else None
    mt["pbo"] = pbo
    n = mt["n"]
    checks: list[tuple[str, bool, bool, str]] = [   # (rule, hard, failed, detail)
        ("N_MIN", True, n < c.min_samples, f"n = {n} < {c.min_samples}"),
    ]
    if n:
        checks += [
            ("E_POSITIVE", True, not mt["e"] > c.e_min, f"e = {mt['e']:.5f} <= {c.e_min}"),
            ("Q01_FLOOR", True, mt["q01"] < c.q01_floor, f"q01 = {mt['q01']:.4f} < {c.q01_floor}"),
            ("SPD_RANGE", True, not c.spd_min <= mt["spd"] <= c.spd_max,
             f"spd = {mt['spd']:.2f} outside [{c.spd_min}, {c.spd_max}]"),
            ("MAE_95_MAX", True, mt["mae_95"] > c.mae95_max, f"mae_95 = {mt['mae_95']:.4f} > {c.mae95_max}"),
            ("SHARPE_MIN", False, not (mt["sharpe"] >= c.sharpe_min),
             f"sharpe = {mt['sharpe']:.4f} < {c.sharpe_min}"),
            ("Q05_FLOOR", False, mt["q05"] < c.q05_floor, f"q05 = {mt['q05']:.4f} < {c.q05_floor}"),
            ("MAE_MEAN_MAX", False, mt["mae_mean"] > c.mae_mean_max,
             f"mae_mean = {mt['mae_mean']:.4f} > {c.mae_mean_max}"),
        ]
    else:
        checks += [("E_POSITIVE", True, True, "no samples")]
    if dsr is not None:
        checks.append(("DSR_MIN", False, dsr < c.dsr_min, f"dsr = {dsr:.3f} < {c.dsr_min}"))
    if pbo is not None:
        checks.append(("PBO_MAX", False, pbo > c.pbo_max, f"pbo = {pbo:.3f} > {c.pbo_max}"))
    failures = tuple(rule for rule, _, failed, _ in checks if failed)
    for rule, hard, failed, detail in checks:
        if failed and hard:
            return GateResult(Decision.REJECT, rule, detail, mt, failures)
    for rule, _hard, failed, detail in checks:
        if failed:
            return GateResult(Decision.HOLD, rule, detail, mt, failures)
    return GateResult(Decision.PASS, "ALL_RULES_PASSED", "every rule passed", mt, failures)
