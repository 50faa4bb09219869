// Dialogs: every form with data-confirm asks APPLY / CANCEL first; ADD buttons open <dialog>s.
(function () {
  "use strict";
  const confirmDialog = document.getElementById("confirm-dialog");
  document.addEventListener("submit", function (ev) {
    const form = ev.target;
    if (!form.dataset || !form.dataset.confirm || form.dataset.confirmed === "1") return;
    ev.preventDefault();
    document.getElementById("confirm-text").textContent = form.dataset.confirm;
    confirmDialog.returnValue = "";
    confirmDialog.showModal();
    confirmDialog.addEventListener("close", function onClose() {
      confirmDialog.removeEventListener("close", onClose);
      if (confirmDialog.returnValue === "apply") {
        form.dataset.confirmed = "1";
        form.requestSubmit ? form.requestSubmit() : form.submit();
      }
    });
  }, true);
  document.querySelectorAll("[data-open-dialog]").forEach(function (btn) {
    btn.addEventListener("click", function () { document.getElementById(btn.dataset.openDialog).showModal(); });
  });
  document.querySelectorAll("[data-close-dialog]").forEach(function (btn) {
    btn.addEventListener("click", function () { btn.closest("dialog").close(); });
  });
  document.querySelectorAll("dialog[data-open-on-load]").forEach(function (d) { d.showModal(); });
})();
