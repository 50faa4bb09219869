"""Leader-Follower (LF): the leader moved, a market that usually follows it has not yet.

Rule (long when the leader rose; short when it fell), on the module timeframe:

1. Leader move: the leader's return over the last ``move_bars`` (3) bars is at least
   ``min_leader_move`` (0.4 %) in absolute value.
2. Follower: over the ``beta_bars`` (48) bars before that, the market's bar returns correlate
   with the leader's at >= ``min_corr`` (0.5); beta = cov / var(leader).
3. Lag: the market's own return over the same last bars covers less than ``max_catch_up``
   (50 %) of the expected move beta x leader move.

Score when all hold: ``40 + 0.3 * linear(corr, 0.5, 0.9) + 0.3 * linear(remaining share of
the expected move, 0.5, 1)``; the leader itself scores 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strategies.engine.modules.base import ScanContext, linear, output
from strategies.engine.types import ModuleOutput


@dataclass(frozen=True, slots=True)
class LeaderFollower:
    name: str = "LF"
    move_bars: int = 3
    beta_bars: int = 48
    min_leader_move: float = 0.004
    min_corr: float = 0.5
    max_catch_up: float = 0.5

    def score(self, ctx: ScanContext) -> ModuleOutput:
        c = ctx.bars.close
        n_mk, n = c.shape
        k, w = self.move_bars, self.beta_bars
        li = ctx.leader_index
        if n < k + w + 1:
            z = np.zeros(n_mk)
            return output(self.name, z, z, [("LF_WARMUP", np.ones(n_mk, bool))], {}, ctx.can_short)
        with np.errstate(invalid="ignore", divide="ignore"):
            move = c[:, -1] / c[:, -1 - k] - 1.0
            r = c[:, -k - w:-k] / c[:, -k - w - 1:-k - 1] - 1.0        # [markets x w] history
            rl = r[li]
            rc = r - np.nanmean(r, axis=1, keepdims=True)
            lc = rl - rl.mean()
            cov = (rc * lc).mean(axis=1)
            var_l = (lc * lc).mean()
            corr = cov / np.sqrt((rc * rc).mean(axis=1) * var_l)
            beta = cov / var_l
            lead_move = move[li]
            expected = beta * lead_move
            caught = np.where(expected != 0, move / expected, np.nan)
        leader_moved = np.full(n_mk, abs(lead_move) >= self.min_leader_move)
        follows = (corr >= self.min_corr) & (beta > 0)
        lagging = caught < self.max_catch_up
        ok = leader_moved & follows & lagging
        ok[li] = False
        s = np.where(ok, 40 + 0.3 * linear(corr, self.min_corr, 0.9) + 0.3 * linear(1 - caught, 0.5, 1.0), 0.0)
        up = lead_move > 0
        long_score = s if up else np.zeros(n_mk)
        short_score = np.zeros(n_mk) if up else s
        is_leader = np.zeros(n_mk, bool)
        is_leader[li] = True
        flags = [
            ("LF_IS_LEADER", is_leader), ("LF_LEADER_MOVED", leader_moved), ("LF_LEADER_QUIET", ~leader_moved),
            ("LF_FOLLOWER", follows), ("LF_LAGGING", ok),
        ]
        raw = {"corr": corr, "beta": beta, "move": move, "leader_move": np.full(n_mk, lead_move),
               "caught_up": caught}
        return output(self.name, long_score, short_score, flags, raw, ctx.can_short)
