"""Microstructure (MICRO): top-of-book order flow imbalance and microprice lean.

Needs order-book snapshots (oldest first) for a market; without them the market scores 0 with
reason ``MICRO_NO_BOOK``. Rule (long; short is the mirror):

1. OFI: the sum of Cont-Kukanov-Stoikov order flow imbalance over the given snapshots,
   divided by the mean top-of-book size (bid + ask) / 2, is >= ``min_ofi`` (0.5).
2. Microprice lean: (microprice - mid) / half-spread >= ``min_lean`` (0.2), i.e. the
   size-weighted mid leans toward the ask.

Score when both hold: ``40 + 0.3 * linear(OFI, 0.5, 3) + 0.3 * linear(lean, 0.2, 0.8)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from strategies.engine import indicators as ind
from strategies.engine.modules.base import ScanContext, linear, output
from strategies.engine.types import ModuleOutput


@dataclass(frozen=True, slots=True)
class Microstructure:
    name: str = "MICRO"
    min_ofi: float = 0.5
    min_lean: float = 0.2

    def score(self, ctx: ScanContext) -> ModuleOutput:
        n_mk = ctx.n_markets
        bk = ctx.books
        if bk is None or not bk.has_book.any():
            z = np.zeros(n_mk)
            return output(self.name, z, z, [("MICRO_NO_BOOK", np.ones(n_mk, bool))], {}, ctx.can_short)
        e = ind.order_flow_imbalance(bk.bid_px, bk.bid_qty, bk.ask_px, bk.ask_qty)
        with np.errstate(invalid="ignore", divide="ignore"):
            top = (bk.bid_qty + bk.ask_qty) / 2.0
            n_top = np.isfinite(top).sum(axis=1)
            depth = np.where(n_top > 0, np.nansum(top, axis=1) / np.maximum(n_top, 1), np.nan)
            n_e = np.isfinite(e).sum(axis=1)
            ofi = np.where(n_e > 0, np.nansum(e, axis=1), np.nan) / depth
            mp = ind.microprice(bk.bid_px[:, -1], bk.bid_qty[:, -1], bk.ask_px[:, -1], bk.ask_qty[:, -1])
            mid = (bk.bid_px[:, -1] + bk.ask_px[:, -1]) / 2.0
            half = (bk.ask_px[:, -1] - bk.bid_px[:, -1]) / 2.0
            lean = np.where(half > 0, (mp - mid) / half, 0.0)
            long_ok = bk.has_book & (ofi >= self.min_ofi) & (lean >= self.min_lean)
            short_ok = bk.has_book & (ofi <= -self.min_ofi) & (lean <= -self.min_lean)
        long_score = np.where(long_ok, 40 + 0.3 * linear(ofi, self.min_ofi, 3.0) + 0.3 * linear(lean, self.min_lean, 0.8), 0)
        short_score = np.where(short_ok, 40 + 0.3 * linear(-ofi, self.min_ofi, 3.0)
                               + 0.3 * linear(-lean, self.min_lean, 0.8), 0)
        flags = [
            ("MICRO_NO_BOOK", ~bk.has_book), ("MICRO_BUY_PRESSURE", bk.has_book & (ofi >= self.min_ofi)),
            ("MICRO_SELL_PRESSURE", bk.has_book & (ofi <= -self.min_ofi)),
            ("MICRO_CONFIRMED", long_ok | short_ok),
        ]
        return output(self.name, long_score, short_score, flags, {"ofi": ofi, "microprice_lean": lean},
                      ctx.can_short)
