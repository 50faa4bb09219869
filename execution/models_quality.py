"""Data-quality records of the market data collectors [EX-5] (imported by execution.models)."""
