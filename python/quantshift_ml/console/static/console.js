// QuantShift console: the only script, served by the console (CSP script-src 'self').
"use strict";

function confirmForms() {
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.dataset.confirm)) { event.preventDefault(); }
    });
  });
}

function renderProgress(job) {
  var body = document.querySelector("#progress tbody");
  if (!body) { return; }
  body.textContent = "";
  job.tasks.forEach(function (task) {
    var row = document.createElement("tr");
    [task.play, task.task].forEach(function (text) {
      var cell = document.createElement("td");
      cell.textContent = text;
      row.appendChild(cell);
    });
    var hosts = document.createElement("td");
    Object.keys(task.hosts).sort().forEach(function (host) {
      var span = document.createElement("span");
      span.className = "host-state state-" + task.hosts[host];
      span.textContent = host + ": " + task.hosts[host];
      hosts.appendChild(span);
    });
    row.appendChild(hosts);
    body.appendChild(row);
  });
  var status = document.getElementById("job-status");
  status.textContent = job.status;
  status.className = "status-" + job.status;
  document.getElementById("job-phase").textContent = job.phase;
}

function followJob() {
  var box = document.getElementById("job");
  if (!box || box.dataset.done === "true") { return; }
  var poll = function () {
    fetch("/jobs/" + box.dataset.job + ".json", {credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(function (job) {
        renderProgress(job);
        if (job.done) { window.location.reload(); } else { window.setTimeout(poll, 1000); }
      })
      .catch(function () { window.setTimeout(poll, 3000); });
  };
  window.setTimeout(poll, 500);
}

document.addEventListener("DOMContentLoaded", function () { confirmForms(); followJob(); });
