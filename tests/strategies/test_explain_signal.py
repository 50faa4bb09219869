"""``manage.py explain_signal``: every stored Signal recomputes from its ScanRun's inputs and
the retained candles; tampering, unknown ids and pruned candles fail clearly [PL-2]."""

from __future__ import annotations

import json
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import ManagementUtility, call_command
from django.core.management.base import CommandError

from execution import marketdata
from execution.models import Candle
from strategies.explain import compare, recompute
from strategies.models import ScanRun, Signal, StrategyProfile
from strategies.services import effective_profile, update_profile
from tests.factories import staff_user
from traders import tasks
from traders.models import IntentKind
from traders.services import create_trader, process_intents, request_intent
from traders.trading import run_tick

TICKS = 5
T0 = 1_790_000_000.0


@pytest.fixture
def scanned(db, settings):
    """One PAPER trader (CRAZY, entry at 30 so some markets are entered and then held) ticked
    on TICKS bars of the sim exchange, as in tests/integration/test_paper_trading.py."""
    settings.QUANTWEB_SIM_WARMUP_BARS = 2200    # >= FeatureConfig().leader_bars_needed (2160)
    settings.QUANTWEB_SIM_MARKETS = 12
    settings.QUANTWEB_SIM_SEED = 7
    marketdata._view_cache.clear()
    user = staff_user(username="boss")
    profile = StrategyProfile.objects.get(key="CRAZY")
    params = effective_profile(profile).to_dict()
    params.pop("name")
    params.update(entry_threshold=30.0, exit_threshold=15.0)
    update_profile(profile=profile, params=params, user=user, comment="explain test")
    profile.refresh_from_db()
    trader = create_trader(user=user, name="alpha", profile=profile, seed_money=Decimal("10000000"))
    request_intent(user=user, kind=IntentKind.START, trader=trader)
    assert process_intents() == 1
    now = T0
    tasks.collect_market_data(now)
    for _ in range(TICKS):
        now += 60
        tasks.collect_market_data(now)
        assert run_tick(trader.pk, marketdata.latest_bar("sim")).outcome == "ok"
    marketdata._view_cache.clear()
    return trader


def explain(signal_id: int) -> str:
    out = StringIO()
    call_command("explain_signal", str(signal_id), stdout=out)
    return out.getvalue()


def test_every_stored_signal_recomputes_bit_for_bit(scanned):
    signals = list(Signal.objects.filter(trader=scanned).select_related("scan_run__regime", "trader__profile"))
    assert ScanRun.objects.filter(trader=scanned).count() == TICKS
    assert len(signals) >= TICKS
    # The fixture exercises the state a recompute must restore: carried EMA, held markets, an entry.
    assert any(run.inputs["held"] for run in ScanRun.objects.filter(trader=scanned))
    assert any(run.inputs["ema_in"] for run in ScanRun.objects.filter(trader=scanned))
    assert any(s.action == Signal.Action.ENTER for s in signals)
    for signal in signals:
        recomputed = recompute(signal)
        assert recomputed["found"] and recomputed["warnings"] == []
        rows = compare(signal, recomputed)
        fields = {r["field"] for r in rows}
        assert {"final_score", "base_score", "total_score", "direction", "reason_codes", "regime.label",
                "regime.regime_score", "candles_checksum"} <= fields
        assert any(f.startswith("module_scores.") for f in fields)
        assert [r["field"] for r in rows if not r["match"]] == []
        assert [r["field"] for r in rows if r["diff"]] == []       # same machine: bit for bit


def test_command_prints_side_by_side_and_matches(scanned):
    signal = Signal.objects.filter(trader=scanned).order_by("id").last()
    text = explain(signal.pk)
    assert f"signal {signal.pk}: {signal.symbol}" in text
    assert "final_score" in text and "regime.regime_score" in text
    assert "MISMATCH" not in text
    assert text.rstrip().splitlines()[-1].startswith("MATCH: all")
    out = StringIO()
    call_command("explain_signal", str(signal.pk), "--json", stdout=out)
    report = json.loads(out.getvalue())
    assert report["match"] is True and report["signal"] == signal.pk
    final = next(r for r in report["rows"] if r["field"] == "final_score")
    assert final == {"field": "final_score", "stored": signal.final_score, "recomputed": signal.final_score,
                     "match": True, "diff": 0.0}


def test_tampered_score_is_a_mismatch_and_exits_non_zero(scanned, capsys):
    signal = Signal.objects.filter(trader=scanned).order_by("id").last()
    Signal.objects.filter(pk=signal.pk).update(final_score=signal.final_score + 0.5)
    out = StringIO()
    with pytest.raises(CommandError, match=r"MISMATCH: 1 of \d+ values differ: final_score$"):
        call_command("explain_signal", str(signal.pk), stdout=out)
    line = next(x for x in out.getvalue().splitlines() if x.startswith("final_score"))
    assert "MISMATCH (diff 0.5)" in line
    with pytest.raises(SystemExit) as exc:
        ManagementUtility(["manage.py", "explain_signal", str(signal.pk)]).execute()
    assert exc.value.code == 1
    assert "MISMATCH" in capsys.readouterr().err


def test_changed_candles_show_as_a_checksum_mismatch(scanned):
    signal = Signal.objects.filter(trader=scanned).order_by("id").last()
    run = signal.scan_run
    bar = Candle.objects.get(exchange="sim", symbol=signal.symbol, ts=run.inputs["last_ts"])
    bar.volume = bar.volume * 2   # a late correction of the last bar's volume
    bar.save()
    rows = {r["field"]: r for r in compare(signal)}
    assert rows["candles_checksum"]["match"] is False
    with pytest.raises(CommandError, match="candles_checksum"):
        explain(signal.pk)


def test_unknown_signal_is_a_clear_error(db):
    with pytest.raises(CommandError, match=r"^signal 987654 does not exist$"):
        explain(987654)


def test_pruned_candles_name_the_retention(scanned):
    signal = Signal.objects.filter(trader=scanned).order_by("id").first()
    first_ts = signal.scan_run.inputs["first_ts"]
    # Two days later the collector's retention has removed every bar the scan read.
    tasks.collect_market_data(T0 + 60 * TICKS + 2 * 86400)
    assert not Candle.objects.filter(exchange="sim", ts__lte=first_ts).exists()
    with pytest.raises(CommandError) as exc:
        explain(signal.pk)
    message = str(exc.value)
    assert message.startswith(f"signal {signal.pk} cannot be recomputed: the candles of this scan are no longer stored")
    assert "candle retention (execution.marketdata.prune keeps KEEP_BARS=2880" in message


def test_scans_stored_before_flags_and_checksum_still_recompute(scanned):
    """Older ScanRuns lack ``markets`` and ``candles_checksum``: today's flags are used, with a warning."""
    signal = Signal.objects.filter(trader=scanned).order_by("id").last()
    run = signal.scan_run
    run.inputs = {k: v for k, v in run.inputs.items() if k not in ("markets", "candles_checksum")}
    run.save(update_fields=["inputs"])
    signal.refresh_from_db()
    recomputed = recompute(signal)
    assert recomputed["warnings"] == ["market flags (caution, can_short) were not stored with this scan; today's are used"]
    rows = compare(signal, recomputed)
    assert "candles_checksum" not in {r["field"] for r in rows}
    assert all(r["match"] for r in rows)


def test_ai_mode_scan_recomputes_after_the_live_model_changes(db, settings):
    """AI MODE runs with the live model's parameters; the scan stores the effective profile, so
    a later model change does not change the explanation."""
    from strategies import learning
    from strategies.models import ModelVersion

    settings.QUANTWEB_SIM_WARMUP_BARS, settings.QUANTWEB_SIM_MARKETS, settings.QUANTWEB_SIM_SEED = 1600, 12, 7
    marketdata._view_cache.clear()
    user = staff_user(username="boss")
    live = learning.create_model_version(
        name="m1", params={"entry_threshold": 30.0, "exit_threshold": 15.0, "risk_multiplier": 1.3},
        gate={"decision": "PASS", "rule": "ALL_RULES_PASSED", "metrics": {}})
    learning.validate_model(live)
    learning.deploy_to_paper(live, actor=user)   # a PAPER AI MODE trader runs the paper model
    trader = create_trader(user=user, name="ai", profile=StrategyProfile.objects.get(key="AI_MODE"),
                           seed_money=Decimal("10000000"))
    request_intent(user=user, kind=IntentKind.START, trader=trader)
    process_intents()
    now = T0
    tasks.collect_market_data(now)
    for _ in range(3):
        now += 60
        tasks.collect_market_data(now)
        assert run_tick(trader.pk, marketdata.latest_bar("sim")).outcome == "ok"
    stored = trader.scan_runs.first().inputs["effective_profile"]
    assert stored["risk_multiplier"] == 1.3 and stored["name"] == "AI_MODE"
    ModelVersion.objects.filter(pk=live.pk).update(params={"entry_threshold": 90.0, "exit_threshold": 10.0,
                                                           "risk_multiplier": 0.5})
    signals = list(Signal.objects.filter(trader=trader))
    assert signals
    for signal in signals:
        assert all(row["match"] for row in compare(signal)), signal.pk
