"""The pure decision core of a trader's tick (no Django, no I/O, no clock) [SPEC 4, BT-1].

``tick.run_core`` decides in which order the engines are called with which inputs; the live
worker (``traders.trading``) and the backtester (``strategies.engine.backtest.pipeline``) both
drive it, each through its own port (database rows and the paper broker, or in-memory books and
the fill model).
"""
