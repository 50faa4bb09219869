"""The operator's path through the real platform in Debian's Chromium [issue 7 #8, UI-1..UI-5].

``manage.py run`` serves the pages and runs the worker as separate processes (conftest). The
DASHBOARD is opened in its own tab first and never reloaded; everything the workers do must reach
it over the websocket. Time passes deterministically: ``manage.py dispatch --advance-bars 1``
moves the sim exchange one bar forward and ticks the running trader inline, once per call.
"""

from __future__ import annotations

import csv
import io
import json
import re

import pytest

pytestmark = pytest.mark.browser

EXPECT_TIMEOUT = 20_000   # ms; the worker polls every 0.5 s, the relay every 0.2 s
TICKS = 3
TRADER = "e2e-alpha"


def log_has(kind: str, trader: str | None = None) -> str:
    """JS predicate: the dashboard's action log has a row of ``kind`` (for ``trader``)."""
    return (
        "() => Array.from(document.querySelectorAll('#action-log tbody tr')).some(tr => {"
        f"  const c = tr.children; return c[3] && c[3].textContent === {json.dumps(kind)}"
        + (f" && c[1].textContent === {json.dumps(trader)}" if trader else "") + "; })"
    )


LOG_COUNT_JS = (
    "([kind, live]) => Array.from(document.querySelectorAll('#action-log tbody tr' + (live ? '.fresh' : '')))"
    ".filter(tr => tr.children[3] && tr.children[3].textContent === kind).length"
)


def log_count(page, kind: str, *, live: bool = False) -> int:
    """Rows of ``kind`` in the dashboard's action log; ``live``: only rows pushed over the socket."""
    return page.evaluate(LOG_COUNT_JS, [kind, live])


POINTS_AT_LEAST = "(n) => Number(document.getElementById('profit-chart').dataset.points || 0) >= n"


def chart_points(page) -> int:
    return int(page.get_attribute("#profit-chart", "data-points") or 0)


def confirm(page, button, *, apply: bool) -> None:
    """Click a data-confirm form's button and answer the APPLY / CANCEL dialog."""
    button.click()
    dialog = page.locator("#confirm-dialog")
    dialog.wait_for(state="visible")
    page.click("#confirm-apply" if apply else "#confirm-cancel")
    dialog.wait_for(state="hidden")


# chromium_path first: without a browser the test skips before starting any server.
def test_operator_flow(chromium_path, live_platform, context, screenshot):
    plat = live_platform
    page = context.new_page()

    # -- login ------------------------------------------------------------------------------
    page.goto(plat.url + "/")
    assert "/login/" in page.url, "an anonymous visitor must land on the login page"
    screenshot(page, "login")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "browser-test-Pa55word")
    page.click("form[action='/login/'] button[type=submit]")
    page.wait_for_url(plat.url + "/")

    # -- the dashboard, opened before anything happens and never reloaded -------------------
    dash = page
    dash.wait_for_selector("body[data-live='1']", timeout=EXPECT_TIMEOUT)
    dash.evaluate("() => { window.__notReloaded = true; }")
    assert chart_points(dash) == 0

    # -- TRADERS: ADD, with a field error first ---------------------------------------------
    ops = context.new_page()
    ops.goto(plat.url + "/traders/")
    ops.click("#add-trader")
    dialog = ops.locator("#add-dialog")
    dialog.wait_for(state="visible")
    ops.fill("#add-dialog [name=name]", TRADER)
    ops.select_option("#add-dialog [name=profile]", index=0)
    # The seed is an <input type=number>: Chromium does not let a user type "abc" into it, so
    # the bad value a user can actually submit is one below the 5,000 KRW minimum.
    ops.fill("#add-dialog [name=seed_money]", "100")
    ops.click("#create-trader")
    ops.wait_for_load_state()
    dialog.wait_for(state="visible")                          # re-opened with the error in it
    screenshot(ops, "traders_add_error")
    error = dialog.locator(".field-error")
    assert error.count() == 1 and "5000" in error.inner_text().replace(",", ""), error.all_inner_texts()
    assert ops.locator("#traders-table tr[data-trader]").count() == 0
    assert plat.query("select count(*) from traders_trader")[0][0] == 0
    assert ops.input_value("#add-dialog [name=name]") == TRADER  # what was typed is kept
    ops.fill("#add-dialog [name=seed_money]", "1000000")
    ops.click("#create-trader")
    row = ops.locator("#traders-table tr[data-trader]", has_text=TRADER)
    row.wait_for()
    assert not dialog.is_visible()
    assert "created" in ops.locator(".messages").inner_text()
    assert plat.query("select name, mode, status from traders_trader") == [(TRADER, "PAPER", "stopped")]

    # -- run mode PAPER + APPLY, confirmed --------------------------------------------------
    row.locator("select[name=mode]").select_option("PAPER")
    confirm(ops, row.locator("form[action$='/mode/'] button[type=submit]"), apply=True)
    ops.wait_for_selector(".messages li.success:has-text('Set run mode: requested')")
    dash.wait_for_function(log_has("MODE_CHANGED", TRADER), timeout=EXPECT_TIMEOUT)  # the worker applied it

    # -- RUN: CANCEL changes nothing, APPLY starts it ---------------------------------------
    row = ops.locator("#traders-table tr[data-trader]", has_text=TRADER)
    ops.evaluate("() => { window.__samePage = true; }")
    confirm(ops, row.locator("button.run"), apply=False)
    ops.wait_for_timeout(500)
    assert ops.evaluate("() => window.__samePage === true"), "CANCEL must not submit the form"
    assert plat.query("select count(*) from traders_intent where kind = 'START'")[0][0] == 0
    assert log_count(dash, "TRADER_STARTED") == 0
    confirm(ops, row.locator("button.run"), apply=True)
    ops.wait_for_selector(".messages li.success:has-text('Start: requested')")
    assert plat.query("select count(*) from traders_intent where kind = 'START'")[0][0] == 1
    dash.wait_for_function(log_has("TRADER_STARTED", TRADER), timeout=EXPECT_TIMEOUT)

    # -- time passes: one simulated bar per dispatch; the dashboard updates live -------------
    for n in range(1, TICKS + 1):
        result = plat.manage("dispatch", "--advance-bars", "1")
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        plat.dispatch_runs.append(result.stdout.strip())
        assert summary["bars"] >= 1, summary
        # The worker's own schedule may tick a bar first; then ours finds it stale. Either way
        # the bar is ticked exactly once, so the chart has at least one point per bar.
        assert [t["outcome"] for t in summary["ticks"]] in (["ok"], ["stale"]), summary
        dash.wait_for_function(POINTS_AT_LEAST, arg=n, timeout=EXPECT_TIMEOUT)
        dash.wait_for_function(f"() => ({LOG_COUNT_JS})(['TICK', true]) >= {n}", timeout=EXPECT_TIMEOUT)
    # If a minute boundary passed between RUN and the first dispatch, the worker's schedule
    # ticked one wall-clock bar too; every tick there was must be on the chart and in the log.
    ticks = plat.query("select count(*) from traders_equitysnapshot")[0][0]
    assert TICKS <= ticks <= TICKS + 1
    dash.wait_for_function(POINTS_AT_LEAST, arg=ticks, timeout=EXPECT_TIMEOUT)
    assert chart_points(dash) == ticks
    assert re.fullmatch(r"-?\d+(\.\d+)?", dash.get_attribute("#profit-chart", "data-last-return") or "")
    assert log_count(dash, "TICK", live=True) == log_count(dash, "TICK") == ticks
    assert dash.evaluate("() => window.__notReloaded === true"), "the dashboard must never reload"
    assert dash.locator("#chart-legend").inner_text().strip() == TRADER
    # The key metrics were fetched again after the ticks, without a reload.
    dash.wait_for_function("() => Number(document.getElementById('metrics-card').dataset.refreshes || 0) >= 1",
                           timeout=EXPECT_TIMEOUT)
    assert dash.locator("[data-metric=open_positions_count]").inner_text().strip().isdigit()
    screenshot(dash, "dashboard")

    # -- the other pages --------------------------------------------------------------------
    ops.goto(plat.url + "/traders/")
    screenshot(ops, "traders")
    ops.locator("#traders-table tr[data-trader] a", has_text=TRADER).click()
    ops.wait_for_url(re.compile(r"/traders/\d+/$"))
    assert ops.locator("main").get_by_text(TRADER).first.is_visible()
    assert ops.locator("#guard-state").inner_text() in ("ACTIVE", "HALTED", "REDUCING")
    assert ops.locator("#seed-money").inner_text() == "1,000,000"
    screenshot(ops, "trader_detail")
    ops.click("nav.mainnav >> text=STRATEGY")
    ops.wait_for_url(plat.url + "/strategy/")
    screenshot(ops, "strategy")

    # -- STOP, confirmed --------------------------------------------------------------------
    ops.goto(plat.url + "/traders/")
    row = ops.locator("#traders-table tr[data-trader]", has_text=TRADER)
    confirm(ops, row.locator("button.stop"), apply=True)
    ops.wait_for_selector(".messages li.success:has-text('Stop: requested')")
    dash.wait_for_function(log_has("TRADER_STOPPED", TRADER), timeout=EXPECT_TIMEOUT)
    assert plat.query("select status from traders_trader") == [("stopped",)]

    # -- CONFIG: audit log export -----------------------------------------------------------
    ops.click("nav.mainnav >> text=CONFIG")
    ops.wait_for_url(plat.url + "/config/")
    screenshot(ops, "config")
    with ops.expect_download() as info:
        ops.click("#export-audit")
    download = info.value
    assert download.suggested_filename.startswith("quantweb-audit-") and download.suggested_filename.endswith(".csv")
    text = open(download.path(), encoding="utf-8").read()
    assert text.splitlines()[0].startswith("seq,ts,actor,kind,"), text[:200]
    kinds = [r["kind"] for r in csv.DictReader(io.StringIO(text))]
    assert {"INTENT_SET_MODE", "INTENT_START", "INTENT_STOP"} <= set(kinds), kinds

    # -- logout -----------------------------------------------------------------------------
    ops.click("#logout")
    ops.wait_for_url(re.compile(r"/login/"))
    ops.goto(plat.url + "/traders/")
    assert "/login/" in ops.url, "after logout every page asks for login again"
