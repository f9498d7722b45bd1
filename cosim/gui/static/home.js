// The Residential GUI: one household's power flow now, energy per day and month, bill, plan and alerts.
"use strict";
let current = null;
function setW(id, w, invert) {
  const el = $(id);
  const v = (w === null || w === undefined) ? null : (invert ? -w : w);
  el.textContent = fmtW(v);
  el.dataset.value = v === null ? "" : String(v);
}
function render(d) {
  $("site").textContent = d.site;
  const n = d.now || {};
  setW("pv-now", n.pv_w, true);      // production shown positive
  setW("grid-now", n.grid_w, false); // + import, − export
  setW("batt-now", n.batt_w, false); // + charging
  setW("load-now", n.load_w, false);
  $("soc-now").textContent = n.soc === null || n.soc === undefined ? "" : (100 * n.soc).toFixed(0) + " %";
  $("soc-now").dataset.value = n.soc ?? "";
  $("flow-text").textContent = n.grid_w === null ? "" : (n.grid_w >= 0 ? "Importing " : "Exporting ") + fmtW(Math.abs(n.grid_w)) + (n.t ? " at " + n.t : "");
  $("updated").textContent = n.t ? "data until " + n.t : "";
  const today = d.days.length ? d.days[d.days.length - 1] : null;
  const tiles = today ? [["pv_kwh", "Solar", "kWh"], ["load_kwh", "Consumption", "kWh"], ["import_kwh", "Imported", "kWh"],
    ["export_kwh", "Exported", "kWh"], ["self_consumption_ratio", "Self-consumption", "%"], ["bill_eur", "Bill", "€"], ["saved_eur", "Storage saved", "€"]] : [];
  $("today").innerHTML = "";
  for (const [key, label, unit] of tiles) {
    if (!(key in today)) continue;
    const v = today[key];
    const div = document.createElement("div");
    div.className = "tile";
    div.innerHTML = `<span>${label}</span><b data-key="${key}" data-value="${v ?? ""}">${unit === "%" ? (v === null ? "–" : (100 * v).toFixed(0) + " %") : fmt(v) + " " + unit}</b>`;
    $("today").appendChild(div);
  }
  const rows = (list, cols) => list.map((r) => `<tr data-period="${r.period}"><td>${r.period}</td>` + cols.map((c) =>
    `<td data-key="${c}" data-value="${r[c] ?? ""}">${c === "self_consumption_ratio" ? (r[c] === null ? "–" : (100 * r[c]).toFixed(0) + " %") : fmt(r[c])}</td>`).join("") + "</tr>").join("");
  $("history").tBodies[0].innerHTML = rows(d.days, ["pv_kwh", "load_kwh", "import_kwh", "export_kwh", "self_consumption_ratio", "bill_eur", "saved_eur"]);
  $("months").tBodies[0].innerHTML = rows(d.months, ["pv_kwh", "import_kwh", "export_kwh", "bill_eur", "saved_eur"]);
  $("plan").textContent = d.plan.length ? "" : "No plan published for this household.";
  if (d.plan.length) $("plan").innerHTML = "<table><tr><th>Time</th><th>Battery</th></tr>" + d.plan.map((p) => `<tr><td>${p.t}</td><td>${fmtW(p.batt_w)}</td></tr>`).join("") + "</table>";
  $("alerts").innerHTML = d.alerts.length ? d.alerts.map((a) => `<div class="alert" data-kind="${a.kind}">${a.text}</div>`).join("") : '<span class="ok" id="no-alerts">No alerts</span>';
}
async function refresh() {
  if (!current) return;
  try { render(await getJSON("/gui/api/home?site=" + encodeURIComponent(current))); }
  catch (e) { $("alerts").textContent = "Cannot load: " + e.message; }
}
start(async (me) => {
  $("who").textContent = me.user + " (" + me.role + ")";
  const sites = me.site ? [me.site] : await getJSON("/gui/api/sites");
  const sel = $("site-select");
  sel.innerHTML = sites.map((s) => `<option>${s}</option>`).join("");
  const wanted = new URLSearchParams(location.search).get("site");
  current = (wanted && sites.includes(wanted)) ? wanted : sites[0];
  sel.value = current;
  sel.onchange = () => { current = sel.value; refresh(); };
  await refresh();
  document.body.dataset.ready = "1";
  setInterval(refresh, 5000);
});
