// The bench monitor: renders the state the bench pushes as Server-Sent Events (no framework, no build step).
"use strict";

const UNITS = [["_wh", "Wh"], ["_w", "W"], ["_var", "var"], ["_va", "VA"], ["_v", "V"], ["_a", "A"],
               ["_hz", "Hz"], ["_pu", "pu"], ["_c", "°C"]];

function unit(name) {
  if (name === "soc" || name === "soh") return "%";
  for (const [suffix, u] of UNITS) if (name.endsWith(suffix)) return u;
  return "";
}

function fmt(name, value) {
  if (value === null || value === undefined) return "–";
  if (typeof value !== "number") return String(value);
  if (name === "soc" || name === "soh") return (value * 100).toFixed(1) + " %";
  const u = unit(name);
  const digits = Math.abs(value) >= 100 ? 0 : Math.abs(value) >= 1 ? 2 : 3;
  return value.toFixed(digits) + (u ? " " + u : "");
}

function ms(x) { return x === null || x === undefined ? "–" : x.toFixed(x >= 100 ? 0 : 2) + " ms"; }

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function values(cell, obj, attr) {
  cell.replaceChildren();
  for (const name of Object.keys(obj || {}).sort()) {
    const span = el("span", { class: "q", [attr]: name });
    span.append(el("i", {}, name + " "), document.createTextNode(fmt(name, obj[name])));
    cell.append(span);
  }
}

function simTime(state) {
  if (state.t_s === null || state.t_s === undefined || !state.start) return "–";
  const t = new Date(Date.parse(state.start) + state.t_s * 1000);
  return t.toISOString().replace("T", " ").slice(0, 16) + " UTC (t = " + state.t_s + " s)";
}

function renderTiming(t) {
  const lat = t.lateness || {};
  document.getElementById("lat-n").textContent = t.steps;
  document.getElementById("lat-p50").textContent = ms(lat.p50_ms);
  document.getElementById("lat-p99").textContent = ms(lat.p99_ms);
  document.getElementById("lat-max").textContent = ms(lat.max_ms);
  document.getElementById("lat-tol").textContent = ms(t.tolerance_ms);
  document.getElementById("lat-late").textContent = t.late_steps;
  document.getElementById("lat-skipped").textContent = t.skipped_steps;
  document.getElementById("rtt-write-p99").textContent = ms((t.write_roundtrip || {}).p99_ms);
  const hist = document.getElementById("hist");
  hist.replaceChildren();
  const counts = (t.histogram || {}).counts || [];
  const edges = (t.histogram || {}).edges_ms || [];
  const top = Math.max(1, ...counts);
  counts.forEach((c, i) => {
    const bar = el("div", { title: `≥ ${edges[i]} ms: ${c} steps` });
    bar.style.height = Math.round(70 * c / top) + "px";
    if (edges[i] >= t.tolerance_ms) bar.classList.add("late");
    bar.append(el("span", {}, edges[i] < 1 ? edges[i] * 1000 + "µs" : edges[i] + "ms"));
    hist.append(bar);
  });
}

function renderDevices(devices) {
  const body = document.querySelector("#devices tbody");
  const seen = new Set();
  for (const d of devices) {
    seen.add(d.id);
    let row = body.querySelector(`tr[data-device="${CSS.escape(d.id)}"]`);
    if (!row) {
      row = el("tr", { "data-device": d.id });
      for (const c of ["id", "kind", "state", "meas", "set", "signals", "refused"]) row.append(el("td", { class: c }));
      body.append(row);
    }
    row.querySelector(".id").textContent = d.id + " (" + d.family + ")";
    row.querySelector(".kind").textContent = d.kind + (d.address ? " " + d.address : "");
    const st = row.querySelector(".state");
    st.textContent = d.state + (d.faults ? ` (${d.faults} faults)` : "");
    st.className = "state state-" + d.state;
    values(row.querySelector(".meas"), d.meas, "data-q");
    values(row.querySelector(".set"), d.set, "data-set");
    values(row.querySelector(".signals"), d.signals, "data-signal");
    row.querySelector(".refused").textContent = d.rejected;
  }
  for (const row of body.querySelectorAll("tr")) if (!seen.has(row.dataset.device)) row.remove();
}

function renderEvents(events) {
  const list = document.getElementById("events");
  list.replaceChildren();
  for (const e of [...events].reverse()) {
    list.append(el("li", { "data-kind": e.kind }, `t=${e.t_s} s  ${e.device}  ${e.kind}: ${e.message}`));
  }
}

function renderTraffic(traffic) {
  const body = document.querySelector("#traffic tbody");
  body.replaceChildren();
  for (const m of traffic) {
    const row = el("tr", { "data-topic": m.topic });
    row.append(el("td", {}, m.role), el("td", {}, m.topic), el("td", {}, m.t_s), el("td", {}, m.sender));
    const cell = el("td", {});
    values(cell, m.values, "data-v");
    row.append(cell);
    body.append(row);
  }
  document.getElementById("traffic-panel").hidden = traffic.length === 0;
}

function render(state) {
  document.getElementById("scenario").textContent = state.scenario || "";
  document.getElementById("status").textContent = state.status;
  document.getElementById("sim-time").textContent = simTime(state);
  document.getElementById("progress").textContent = `${state.steps_done} / ${state.steps_total}`;
  document.getElementById("rt").textContent = state.rt_factor + ` (cycle ${ms(state.cycle_ms)})`;
  document.getElementById("msgs").textContent = state.broker_messages;
  document.getElementById("estop").disabled = !["starting", "running"].includes(state.status);
  renderTiming(state.timing || {});
  renderDevices(state.devices || []);
  renderEvents(state.events || []);
  renderTraffic(state.traffic || []);
}

function connect() {
  const conn = document.getElementById("conn");
  const source = new EventSource("/events");
  source.addEventListener("state", (ev) => {
    conn.textContent = "live";
    conn.className = "conn on";
    render(JSON.parse(ev.data));
  });
  source.onerror = () => { conn.textContent = "no live data (reconnecting)"; conn.className = "conn off"; };
}

// who is logged in, and the CSRF token every state-changing request carries (cosim/security/webauth.py)
let session = null;

function showSession(me) {
  session = me;
  document.getElementById("login").hidden = !!me;
  document.getElementById("who").textContent = me ? `${me.user} (${me.role})` : "";
}

document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const reply = await fetch("/auth/login", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: document.getElementById("login-user").value,
                           password: document.getElementById("login-password").value }) });
  const body = await reply.json();
  document.getElementById("login-error").textContent = reply.ok ? "" : body.error;
  if (reply.ok) { showSession(body); connect(); }
});

document.getElementById("estop").addEventListener("click", async () => {
  const button = document.getElementById("estop");
  const out = document.getElementById("estop-result");
  button.disabled = true;
  const reply = await fetch("/api/stop", { method: "POST", headers: { "X-CSRF-Token": session ? session.csrf : "" } });
  const result = await reply.json();
  if (!reply.ok) {
    out.textContent = "Refused: " + result.error;
    button.disabled = false;
    return;
  }
  button.textContent = "Stopped: " + Object.entries(result.safe || {}).map(([d, r]) => `${d} ${r}`).join(", ");
});

(async () => {
  const me = await fetch("/auth/me");
  if (me.ok) { showSession(await me.json()); connect(); } else { showSession(null); }
})();
