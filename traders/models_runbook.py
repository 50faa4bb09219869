"""Runbook records: the daily self-test and its results [AL-3] (imported by traders.models)."""
