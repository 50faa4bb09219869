"""Classifier evaluation against a recorded true regime (pure; used by ``regime_eval``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from regime.engine.types import RegimeLabel

ALL_LABELS: tuple[str, ...] = tuple(str(label) for label in RegimeLabel)


@dataclass(frozen=True, slots=True)
class Evaluation:
    """``confusion[i][j]`` counts bars whose true label is ``labels[i]`` and predicted ``labels[j]``.
    Precision / recall are None for a label that was never predicted / never true."""

    labels: tuple[str, ...]
    n: int
    accuracy: float
    precision: dict[str, float | None]
    recall: dict[str, float | None]
    support: dict[str, int]
    confusion: list[list[int]]

    def as_dict(self) -> dict[str, object]:
        return {
            "n": self.n, "accuracy": self.accuracy, "labels": list(self.labels),
            "precision": self.precision, "recall": self.recall, "support": self.support,
            "confusion": self.confusion,
        }


def evaluate(predicted: np.ndarray | Sequence[str], true: np.ndarray | Sequence[str],
             mask: np.ndarray | None = None, labels: Sequence[str] = ALL_LABELS) -> Evaluation:
    """Accuracy, per-label precision / recall and the confusion matrix.

    ``mask`` (bool ``[bars]``) selects the bars to score, e.g. to drop the warm-up.
    """
    p = np.asarray(predicted).astype(str)
    t = np.asarray(true).astype(str)
    if p.shape != t.shape or p.ndim != 1:
        raise ValueError(f"predicted {p.shape} and true {t.shape} must be equal 1-D shapes")
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != p.shape:
            raise ValueError("mask shape differs from the labels")
        p, t = p[mask], t[mask]
    labels = tuple(labels)
    unknown = (set(np.unique(p)) | set(np.unique(t))) - set(labels)
    if unknown:
        raise ValueError(f"unknown labels {sorted(unknown)}")
    k = len(labels)
    lookup = {lab: i for i, lab in enumerate(labels)}
    pi = np.array([lookup[x] for x in p], dtype=np.int64) if len(p) else np.zeros(0, np.int64)
    ti = np.array([lookup[x] for x in t], dtype=np.int64) if len(t) else np.zeros(0, np.int64)
    conf = np.bincount(ti * k + pi, minlength=k * k).reshape(k, k)
    n = int(len(p))
    diag = np.diag(conf)
    col, row = conf.sum(axis=0), conf.sum(axis=1)
    precision = {lab: (float(diag[i] / col[i]) if col[i] else None) for i, lab in enumerate(labels)}
    recall = {lab: (float(diag[i] / row[i]) if row[i] else None) for i, lab in enumerate(labels)}
    return Evaluation(
        labels=labels, n=n, accuracy=float(diag.sum() / n) if n else 0.0,
        precision=precision, recall=recall, support={lab: int(row[i]) for i, lab in enumerate(labels)},
        confusion=conf.tolist(),
    )
