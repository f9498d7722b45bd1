// The Technical GUI: every topic's last SenML value and age, device status, message rates per broker role.
"use strict";
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]));
const age = (s) => s === null || s === undefined ? "–" : s < 120 ? s.toFixed(0) + " s" : (s / 60).toFixed(0) + " min";
function render(d) {
  $("end").textContent = d.end ? "(data until " + d.end + ")" : "";
  $("roles").tBodies[0].innerHTML = d.roles.map((r) => `<tr data-role="${esc(r.role)}"><td>${esc(r.role)}</td><td>${esc(r.broker)}</td><td data-key="published">${r.published}</td><td>${r.delivered}</td><td>${r.dead_letters}</td><td data-key="per_hour">${fmt(r.per_hour, 1)}</td></tr>`).join("");
  $("devices").tBodies[0].innerHTML = d.devices.map((v) => `<tr data-device="${esc(v.device)}"><td>${esc(v.device)}</td><td class="${v.available ? "ok" : "alert"}">${v.available ? "yes" : "no"}</td><td data-key="observations">${v.observations}</td><td>${age(v.max_age_s)}</td><td>${v.errors}</td><td>${esc(v.last_error || "")}</td></tr>`).join("");
  $("topics").tBodies[0].innerHTML = d.topics.map((t) => `<tr data-name="${esc(t.name)}"><td>${esc(t.topic)}<br><small>${esc(t.name)}</small></td><td data-key="value" data-value="${t.value ?? ""}">${fmt(t.value, 3)}</td><td>${esc(t.unit)}</td><td>${esc(t.last_t)}</td><td data-key="age" data-value="${t.age_s ?? ""}">${age(t.age_s)}</td></tr>`).join("");
}
async function refresh() {
  try { render(await getJSON("/gui/api/tech")); } catch (e) { $("end").textContent = "Cannot load: " + e.message; }
}
start(async (me) => {
  $("who").textContent = me.user + " (" + me.role + ")";
  await refresh();
  document.body.dataset.ready = "1";
  setInterval(refresh, 5000);
});
