// Backtests: progress of queued/running runs (polls GET /api/backtests/<id>/), the form's
// strategy/source-dependent fields, and the equity / drawdown charts of a result page.
(function () {
  "use strict";
  const POLL_MS = 2000;
  const MAX_POLL_MS = 30000;

  function pct(x) { return (x === null || x === undefined) ? "—" : (x * 100).toFixed(2) + "%"; }
  function num(x) { return (x === null || x === undefined) ? "—" : Number(x).toFixed(2); }

  function setField(root, name, text) {
    const el = root.querySelector('[data-field="' + name + '"]');
    if (el) el.textContent = text;
    return el;
  }

  function update(root, run) {
    const bar = root.querySelector('progress[data-field="progress"]');
    if (bar) bar.value = run.progress;
    setField(root, "percent", Math.round(run.progress * 100) + "%");
    const status = setField(root, "status", run.status + (run.stalled ? " (stalled)" : ""));
    if (status) status.className = "bt-status status-" + run.status.toLowerCase();
    root.dataset.status = run.status;
    if (run.summary) {
      setField(root, "total_return", pct(run.summary.total_return));
      setField(root, "sharpe", num(run.summary.sharpe));
      setField(root, "max_drawdown", pct(run.summary.max_drawdown));
      setField(root, "trades", run.summary.trades === null ? "—" : String(run.summary.trades));
    }
  }

  function poll(root) {
    let delay = POLL_MS;
    function tick() {
      fetch(root.dataset.poll, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.json(); })
        .then(function (run) {
          update(root, run);
          delay = POLL_MS;
          if (run.status === "DONE" || run.status === "FAILED") {
            if (root.dataset.reload) window.location.reload();
            return;
          }
          setTimeout(tick, delay);
        })
        .catch(function () { delay = Math.min(delay * 2, MAX_POLL_MS); setTimeout(tick, delay); });
    }
    setTimeout(tick, POLL_MS);
  }

  function formFields(form) {
    const strategy = form.querySelector("#bt-strategy");
    function apply() {
      const opt = strategy.options[strategy.selectedIndex];
      const sources = (opt.dataset.sources || "files").split(",");
      const options = (opt.dataset.options || "").split(",");
      const simRadio = form.querySelector('input[name="source"][value="sim"]');
      const filesRadio = form.querySelector('input[name="source"][value="files"]');
      const simAllowed = sources.indexOf("sim") >= 0;
      form.querySelectorAll('[data-bt-source="sim"]').forEach(function (el) { el.hidden = !simAllowed; });
      if (!simAllowed && simRadio.checked) filesRadio.checked = true;
      const source = simRadio.checked ? "sim" : "files";
      form.querySelectorAll("[data-bt-for-source]").forEach(function (el) { toggle(el, el.dataset.btForSource === source); });
      form.querySelectorAll("[data-bt-strategy]").forEach(function (el) { toggle(el, el.dataset.btStrategy === opt.value); });
      form.querySelectorAll("[data-bt-option]").forEach(function (el) { toggle(el, options.indexOf(el.dataset.btOption) >= 0); });
      // Files of a timeframe the strategy cannot run on are greyed out (the server refuses them too).
      const timeframes = (opt.dataset.timeframes || "").split(",").filter(Boolean);
      form.querySelectorAll("#bt-data-files option").forEach(function (o) {
        o.disabled = timeframes.length > 0 && timeframes.indexOf(o.dataset.tf) < 0;
        if (o.disabled) o.selected = false;
      });
    }
    function toggle(el, on) {
      el.hidden = !on;
      el.querySelectorAll("input, select").forEach(function (i) { i.disabled = !on; });
    }
    strategy.addEventListener("change", apply);
    form.querySelectorAll('input[name="source"]').forEach(function (r) { r.addEventListener("change", apply); });
    apply();
  }

  function charts() {
    const holder = document.getElementById("backtest-chart-data");
    const eqEl = document.getElementById("bt-equity-chart");
    if (!holder || !eqEl || !window.LightweightCharts) return;
    const data = JSON.parse(holder.textContent);
    function chart(el, height) {
      return LightweightCharts.createChart(el, {
        height: height,
        layout: { background: { color: "#ffffff" }, textColor: "#333" },
        rightPriceScale: { borderVisible: false },
        timeScale: { timeVisible: true, secondsVisible: false },
        grid: { vertLines: { color: "#f0f0f0" }, horzLines: { color: "#f0f0f0" } },
      });
    }
    function points(rows) {
      const out = [];
      let last = -Infinity;
      rows.forEach(function (r) { if (r[0] > last) { out.push({ time: r[0], value: r[1] }); last = r[0]; } });
      return out;
    }
    const eq = chart(eqEl, 300);
    eq.addSeries(LightweightCharts.LineSeries, { color: "#2962ff", lineWidth: 2, title: "equity" }).setData(points(data.equity));
    eq.timeScale().fitContent();
    const ddEl = document.getElementById("bt-drawdown-chart");
    if (ddEl && data.drawdown.length) {
      const dd = chart(ddEl, 150);
      dd.addSeries(LightweightCharts.AreaSeries, { lineColor: "#f44336", topColor: "rgba(244,67,54,0.05)", bottomColor: "rgba(244,67,54,0.4)", title: "drawdown %" }).setData(points(data.drawdown));
      dd.timeScale().fitContent();
    }
    eqEl.dataset.points = String(data.equity.length);
  }

  function init() {
    document.querySelectorAll("[data-poll]").forEach(poll);
    const form = document.getElementById("backtest-form");
    if (form) formFields(form);
    charts();
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
