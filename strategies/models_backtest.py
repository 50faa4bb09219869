"""Stored backtest runs [BT-4] (imported by strategies.models)."""
