// Login and fetch helpers shared by both pages.
"use strict";
const $ = (id) => document.getElementById(id);
const fmtW = (w) => (w === null || w === undefined) ? "–" : (Math.abs(w) >= 1000 ? (w / 1000).toFixed(2) + " kW" : w.toFixed(0) + " W");
const fmt = (x, d = 2) => (x === null || x === undefined) ? "–" : Number(x).toFixed(d);
async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (!r.ok) { const e = new Error(r.status + " " + (await r.text())); e.status = r.status; throw e; }
  return r.json();
}
async function whoAmI() {
  const r = await fetch("/auth/me", { credentials: "same-origin" });
  return r.ok ? r.json() : null;
}
function showLogin(onDone) {
  $("login").classList.remove("hidden");
  $("app").classList.add("hidden");
  $("login-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const r = await fetch("/auth/login", { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: $("user").value, password: $("password").value }) });
    if (!r.ok) { $("login-error").textContent = "Login failed"; return; }
    $("login").classList.add("hidden");
    $("app").classList.remove("hidden");
    onDone(await whoAmI());
  };
}
async function start(main) {
  const me = await whoAmI();
  if (me) { $("login").classList.add("hidden"); $("app").classList.remove("hidden"); main(me); }
  else showLogin(main);
}
