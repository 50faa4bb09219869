"""django-q2 entry points of the learning layer: thin, take ids, call ``strategies.learning``.

* ``learning_cycle`` (schedule ``quantweb-learning``, every 5 minutes): labels, bandit, lifecycle
  promotions and the hourly drift check, each step isolated so one failing does not stop the
  others.
* ``label_feature_snapshots``: the labeller alone.
* ``run_tuning(run_id)``: one tuning run, enqueued on the slow queue by ``start_tuning``.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def label_feature_snapshots() -> dict:
    from strategies.learning import label_features

    return label_features()


def learning_cycle() -> dict:
    from strategies import learning

    out: dict = {}
    for name, step in (("labels", learning.label_features), ("bandit", learning.update_bandit),
                       ("promoted", learning.promote_eligible), ("drift", learning.check_drift)):
        try:
            out[name] = step()
        except Exception as exc:  # one failing step must not stop the others
            logger.exception("learning cycle step %s failed", name)
            out[name] = f"error: {type(exc).__name__}: {exc}"[:300]
    return out


def run_tuning(run_id: int) -> dict:
    from strategies.learning import run_tuning as run

    return run(run_id)
