// Live updates over /ws/live/: action log rows and equity points, de-duplicated by id,
// reconnecting with back-off and replaying what was missed (?after=...).
window.quantweb = (function () {
  "use strict";
  const COLORS = ["#2962ff", "#e91e63", "#00a86b", "#ff9800", "#9c27b0", "#00bcd4", "#795548", "#607d8b", "#cddc39", "#f44336"];
  const state = { lastEvent: 0, lastEquity: 0, seenEvents: new Set() };
  const ids = JSON.parse((document.getElementById("last-ids") || { textContent: "{}" }).textContent);
  state.lastEvent = ids.event || 0;
  state.lastEquity = ids.equity || 0;

  function connect(query, handlers) {
    const status = document.getElementById("live-status");
    let delay = 500;
    function open() {
      const proto = location.protocol === "https:" ? "wss" : "ws";
      const params = new URLSearchParams(query);
      params.set("after", state.lastEvent);
      params.set("after_equity", state.lastEquity);
      const ws = new WebSocket(proto + "://" + location.host + "/ws/live/?" + params.toString());
      ws.onopen = function () { delay = 500; if (status) status.classList.add("on"); document.body.dataset.live = "1"; };
      ws.onclose = function () {
        if (status) status.classList.remove("on");
        document.body.dataset.live = "0";
        setTimeout(open, delay);
        delay = Math.min(delay * 2, 15000);
      };
      ws.onmessage = function (msg) {
        const data = JSON.parse(msg.data);
        if (data.stream === "event") {
          if (state.seenEvents.has(data.id) || data.id <= (handlers.initialEvent || 0)) return;
          state.seenEvents.add(data.id);
          state.lastEvent = Math.max(state.lastEvent, data.id);
          handlers.event && handlers.event(data);
        } else if (data.stream === "regime") {
          handlers.regime && handlers.regime(data);
        } else if (data.stream === "equity") {
          if (data.id <= state.lastEquity && handlers.initialEquityDone) return;
          state.lastEquity = Math.max(state.lastEquity, data.id);
          handlers.equity && handlers.equity(data);
        }
      };
    }
    handlers.initialEvent = state.lastEvent;
    handlers.initialEquityDone = true;
    open();
  }

  function prependLog(e, traderName) {
    const body = document.querySelector("#action-log tbody");
    if (!body || body.querySelector('tr[data-id="' + e.id + '"]')) return;
    const tr = document.createElement("tr");
    tr.dataset.id = e.id;
    tr.className = "lvl-" + e.level + " fresh";
    const t = new Date(e.ts);
    const pad = function (n) { return String(n).padStart(2, "0"); };
    const when = pad(t.getUTCMonth() + 1) + "-" + pad(t.getUTCDate()) + " " + pad(t.getUTCHours()) + ":" + pad(t.getUTCMinutes()) + ":" + pad(t.getUTCSeconds());
    [when, traderName || e.trader || "—", e.level, e.kind, e.message].forEach(function (text) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    });
    body.insertBefore(tr, body.firstChild);
    while (body.children.length > 200) body.removeChild(body.lastChild);
  }

  function baseChart(el, height) {
    return LightweightCharts.createChart(el, {
      height: height || 320,
      layout: { background: { color: "#ffffff" }, textColor: "#333" },
      rightPriceScale: { borderVisible: false },
      timeScale: { timeVisible: true, secondsVisible: false },
      grid: { vertLines: { color: "#f0f0f0" }, horzLines: { color: "#f0f0f0" } },
    });
  }

  function toPoints(rows) {
    const out = [];
    let last = -1;
    rows.forEach(function (r) { if (r[0] > last) { out.push({ time: r[0], value: r[1] }); last = r[0]; } });
    return out;
  }

  function bump(id, delta) {
    const el = document.getElementById(id);
    if (el) el.textContent = String(Math.max(0, Number(el.textContent || 0) + delta));
  }

  function updateCounts(e) {
    const mode = (e.data && (e.data.mode || e.data.to)) || "PAPER";
    const key = function (m) { return m === "LIVE" ? "count-live" : "count-paper"; };
    if (e.kind === "TRADER_CREATED") { bump("count-total", 1); bump(key(mode), 1); }
    else if (e.kind === "TRADER_REMOVED") { bump("count-total", -1); bump(key(mode), -1); }
    else if (e.kind === "MODE_CHANGED" && e.data && e.data.from !== e.data.to) { bump(key(e.data.from), -1); bump(key(e.data.to), 1); }
  }

  function updateRegime(r) {
    const label = document.getElementById("regime-label");
    if (!label) return;
    label.textContent = r.label;
    label.className = "big regime-" + r.label;
    const score = document.getElementById("regime-score");
    if (score) score.textContent = Math.round(r.regime_score);
    const inputs = document.getElementById("regime-inputs");
    if (inputs) {
      inputs.innerHTML = "";
      Object.keys(r.inputs || {}).forEach(function (k) {
        const tr = document.createElement("tr");
        const th = document.createElement("th"); th.textContent = k;
        const td = document.createElement("td");
        const v = r.inputs[k];
        td.textContent = v === null ? "—" : Number(v).toFixed(4);
        tr.appendChild(th); tr.appendChild(td); inputs.appendChild(tr);
      });
    }
    const meta = document.getElementById("regime-meta");
    if (meta) meta.hidden = false;
    const conf = document.getElementById("regime-confidence");
    if (conf) conf.textContent = Number(r.confidence).toFixed(2);
  }

  // Key metrics: /api/metrics/ after the workers changed something (a tick's equity point, an
  // order or position event), at most once a second, and every ``refreshSeconds`` regardless.
  function liveMetrics(refreshSeconds) {
    const card = document.getElementById("metrics-card");
    if (!card) return { soon: function () {} };
    let pending = null;
    let inflight = false;
    function show(value, format) {
      if (value === null || value === undefined) return "—";
      if (format === "pct") return Number(value).toFixed(2) + "%";
      if (format === "rate") return Math.round(Number(value) * 100) + "%";
      if (format === "num") return Number(value).toFixed(2);
      return String(value);
    }
    function apply(data) {
      const overall = data.overall || {};
      card.querySelectorAll("[data-metric]").forEach(function (el) {
        const text = show(overall[el.dataset.metric], el.dataset.format);
        if (el.textContent !== text) {
          el.textContent = text;
          el.classList.remove("updated"); void el.offsetWidth; el.classList.add("updated");
        }
      });
      const alarms = document.getElementById("metric-alarms");
      if (alarms) {
        alarms.innerHTML = "";
        (data.alarms || []).forEach(function (a) {
          const li = document.createElement("li");
          li.className = "error";
          li.textContent = a.trader + ": " + a.code + " — " + a.detail;
          alarms.appendChild(li);
        });
      }
      const updated = document.getElementById("metrics-updated");
      if (updated && data.generated_at) updated.textContent = String(data.generated_at).slice(11, 19);
      card.dataset.refreshes = String(Number(card.dataset.refreshes || 0) + 1);
    }
    function fetchNow() {
      if (inflight) return;
      inflight = true;
      fetch("/api/metrics/", { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error("metrics " + r.status); return r.json(); })
        .then(apply)
        .catch(function () { card.dataset.stale = "1"; })
        .finally(function () { inflight = false; });
    }
    setInterval(fetchNow, Math.max(5, refreshSeconds || 15) * 1000);
    return {
      soon: function () {
        if (pending) return;
        pending = setTimeout(function () { pending = null; fetchNow(); }, 1000);
      },
    };
  }

  const METRIC_EVENTS = /^(TICK|ORDER|POSITION|TRADE|FILL|GUARD|TRADER_|MODE_|KILL|EMERGENCY|LIQUIDATION)/;

  function dashboard() {
    const card = document.getElementById("metrics-card");
    const metrics = liveMetrics(card ? Number(card.dataset.refreshSeconds) : 15);
    const chartData = JSON.parse(document.getElementById("chart-data").textContent);
    const chart = baseChart(document.getElementById("profit-chart"));
    const series = {};
    const names = {};
    const legend = document.getElementById("chart-legend");
    function ensureSeries(id, name) {
      if (series[id]) return series[id];
      const color = COLORS[Object.keys(series).length % COLORS.length];
      series[id] = chart.addSeries(LightweightCharts.LineSeries, { color: color, lineWidth: 2, title: name || ("#" + id) });
      series[id].lastTime = 0;
      names[id] = name;
      const item = document.createElement("span");
      item.innerHTML = '<i style="background:' + color + '"></i>';
      item.appendChild(document.createTextNode(name || ("#" + id)));
      legend.appendChild(item);
      return series[id];
    }
    chartData.traders.forEach(function (t) {
      const s = ensureSeries(t.id, t.name);
      const pts = toPoints(chartData.series[t.id] || []);
      s.setData(pts);
      if (pts.length) s.lastTime = pts[pts.length - 1].time;
    });
    document.getElementById("profit-chart").dataset.points = String(
      chartData.traders.reduce(function (n, t) { return n + (chartData.series[t.id] || []).length; }, 0));
    connect({}, {
      event: function (e) {
        // A trader added after the page rendered: learn its name before its first equity point.
        if (e.trader_id && e.trader && !names[e.trader_id]) names[e.trader_id] = e.trader;
        updateCounts(e);
        prependLog(e);
        if (METRIC_EVENTS.test(e.kind || "")) metrics.soon();
      },
      regime: updateRegime,
      equity: function (p) {
        const s = ensureSeries(p.trader_id, names[p.trader_id]);
        if (p.ts < s.lastTime) return;
        s.update({ time: p.ts, value: p.return_pct });
        s.lastTime = p.ts;
        const el = document.getElementById("profit-chart");
        el.dataset.points = String(Number(el.dataset.points || 0) + 1);
        el.dataset.lastReturn = String(p.return_pct);
        metrics.soon();
      },
    });
  }

  function tradersPage() {
    connect({}, {
      equity: function (p) {
        const cell = document.querySelector('[data-profit="' + p.trader_id + '"]');
        if (cell) cell.textContent = p.return_pct.toFixed(2) + "%";
      },
      event: function () {},
    });
  }

  // The guard card follows trips, clears and resets without a reload.
  function refreshGuard(traderId) {
    fetch("/api/traders/" + traderId + "/guard/", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error("guard " + r.status); return r.json(); })
      .then(function (g) {
        document.querySelectorAll(".guard-state").forEach(function (el) {
          el.textContent = g.trading_state;
          el.className = "guard-state state-" + g.trading_state;
        });
        const card = document.getElementById("guard");
        if (!card) return;
        let table = document.getElementById("guard-trips");
        const clear = document.getElementById("guard-clear");
        if (!g.trips.length) {
          if (table) table.remove();
          if (!clear) {
            const p = document.createElement("p");
            p.id = "guard-clear"; p.className = "muted"; p.textContent = "No trip: the guard allows new entries.";
            card.querySelector("h2").after(p);
          }
          return;
        }
        if (clear) clear.remove();
        if (!table) {
          table = document.createElement("table");
          table.id = "guard-trips"; table.className = "table";
          table.innerHTML = "<thead><tr><th>trip</th><th>severity</th><th>detail</th><th>since (UTC)</th><th>clears</th></tr></thead><tbody></tbody>";
          card.querySelector("h2").after(table);
        }
        const body = table.querySelector("tbody");
        body.innerHTML = "";
        g.trips.forEach(function (t) {
          const tr = document.createElement("tr");
          tr.dataset.code = t.code;
          const since = t.since ? t.since.slice(0, 16).replace("T", " ") : "";
          const clears = (t.needs_manual_reset ? "needs a manual reset: " : "") + t.clears +
            (t.clears_at ? " (" + t.clears_at.slice(0, 16).replace("T", " ") + ")" : "");
          [t.code, t.severity, t.detail, since, clears].forEach(function (text) {
            const td = document.createElement("td"); td.textContent = text; tr.appendChild(td);
          });
          body.appendChild(tr);
        });
      })
      .catch(function () {});
  }

  function traderDetail(traderId) {
    const data = JSON.parse(document.getElementById("chart-data").textContent);
    const eq = baseChart(document.getElementById("equity-chart"), 280);
    const eqSeries = eq.addSeries(LightweightCharts.LineSeries, { color: COLORS[0], lineWidth: 2, title: "equity" });
    eqSeries.setData(toPoints(data.equity));
    const dd = baseChart(document.getElementById("drawdown-chart"), 140);
    const ddSeries = dd.addSeries(LightweightCharts.AreaSeries, { lineColor: "#f44336", topColor: "rgba(244,67,54,0.05)", bottomColor: "rgba(244,67,54,0.4)", title: "drawdown %" });
    ddSeries.setData(toPoints(data.drawdown));
    let peak = data.equity.reduce(function (m, r) { return Math.max(m, r[1]); }, 0);
    let lastTime = data.equity.length ? data.equity[data.equity.length - 1][0] : 0;
    connect({ trader: traderId }, {
      event: function (e) {
        prependLog(e);
        if (/^GUARD_/.test(e.kind || "")) refreshGuard(traderId);
      },
      equity: function (p) {
        if (p.ts < lastTime) return;
        const v = Number(p.equity);
        peak = Math.max(peak, v);
        eqSeries.update({ time: p.ts, value: v });
        ddSeries.update({ time: p.ts, value: peak ? (v / peak - 1) * 100 : 0 });
        lastTime = p.ts;
        const el = document.getElementById("equity");
        if (el) el.textContent = Math.round(v).toLocaleString();
      },
    });
  }

  return { dashboard: dashboard, tradersPage: tradersPage, traderDetail: traderDetail };
})();
