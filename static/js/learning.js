// Learning section of the STRATEGY page: live progress of queued / running tuning runs
// (polls GET /api/learning/tuning-runs/<id>/); reloads the page when a run finishes so its
// candidates and model versions appear.
(function () {
  "use strict";
  const POLL_MS = 2000;
  const MAX_POLL_MS = 30000;

  function setField(root, name, text) {
    const el = root.querySelector('[data-field="' + name + '"]');
    if (el) el.textContent = text;
    return el;
  }

  function update(root, run) {
    const bar = root.querySelector('progress[data-field="progress"]');
    if (bar) { bar.max = run.n_trials; bar.value = run.trials_done; }
    setField(root, "trials", run.trials_done + "/" + run.n_trials);
    const status = setField(root, "status", run.status + (run.stalled ? " (stalled)" : ""));
    if (status) status.className = "status-" + run.status.toLowerCase();
    if (run.best && run.best.number !== undefined && run.best.objective !== null && run.best.objective !== undefined) {
      setField(root, "best", "#" + run.best.number + " " + Number(run.best.objective).toFixed(3));
    }
    setField(root, "message", run.message || "");
  }

  function poll(root) {
    let delay = POLL_MS;
    function tick() {
      fetch(root.dataset.poll, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.json(); })
        .then(function (run) {
          update(root, run);
          delay = POLL_MS;
          if (run.status === "DONE" || run.status === "FAILED") { window.location.reload(); return; }
          setTimeout(tick, delay);
        })
        .catch(function () { delay = Math.min(delay * 2, MAX_POLL_MS); setTimeout(tick, delay); });
    }
    setTimeout(tick, POLL_MS);
  }

  document.querySelectorAll("#tuning-runs tr[data-poll]").forEach(poll);
})();
