// The Professional GUI: a grid's simulation (DSF-SE API at /se) and what-if studies (/api/studies).
"use strict";
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const META = new Set(["variant", "origin", "status", "error", "targets_met", "wall_s", "run_s"]);
const DONE = new Set(["done", "aborted", "failed", "complete", "interrupted"]);
let csrf = "", gridId = null, layout = null, levels = {}, simTimer = null, studyId = null, studyTimer = null, rows = [];

async function api(method, url, body, raw = false) {
  const headers = {};
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(url, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : (raw ? body : JSON.stringify(body)) });
  const text = await r.text();
  let data = text;
  try { data = text ? JSON.parse(text) : null; } catch (e) { /* not JSON: keep the text */ }
  if (!r.ok) throw new Error((data && data.error) || `${r.status} ${text}`);
  return data;
}
const fmt = (x, d = 3) => (x === null || x === undefined || Number.isNaN(x)) ? "–" : Number(x).toFixed(d);

// ---------------------------------------------------------------- login
async function whoAmI() {
  const r = await fetch("/auth/me", { credentials: "same-origin" });
  return r.ok ? r.json() : null;
}
async function startPage() {
  const me = await whoAmI();
  if (me) return main(me);
  $("login").classList.remove("hidden");
  $("login-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const r = await fetch("/auth/login", { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ user: $("user").value, password: $("password").value }) });
    if (!r.ok) { $("login-error").textContent = "Login failed"; return; }
    $("login").classList.add("hidden");
    main(await whoAmI());
  };
}

// ---------------------------------------------------------------- grid and simulation
async function refreshGridList() {
  const grids = await api("GET", "/se/simulation");
  const sel = $("grid-list");
  sel.length = 1;
  for (const g of grids) sel.add(new Option(`${g.name} (${g.buses} buses, ${g.state})`, g.id));
  if (gridId) sel.value = gridId;
}
async function uploadGrid(file) {
  $("grid-info").textContent = `uploading ${file.name} …`;
  try {
    gridId = await api("POST", "/se/simulation", await file.text(), true);
    await showGrid(gridId);
    await refreshGridList();
  } catch (e) { $("grid-info").textContent = "refused: " + e.message; }
}
async function showGrid(id) {
  gridId = id;
  layout = await api("GET", `/se/simulation/${id}/grid`);
  levels = {};
  $("grid-info").textContent = `${layout.name}: ${layout.buses.length} buses, ${layout.branches.length} branches, ${layout.loads} loads (${layout.kind})`;
  $("grid-info").dataset.grid = id;
  $("run").disabled = false;
  $("sim-summary").textContent = ""; $("sim-downloads").textContent = ""; $("critical").textContent = ""; $("sim-plot").innerHTML = "";
  drawGrid();
  const st = await api("GET", `/se/simulation/${id}/state`);
  if (st.state === "done") await showResults();
}
function drawGrid(values = {}) {
  const svg = $("sld");
  svg.innerHTML = "";
  if (!layout) return;
  const dx = 70, dy = 18, pad = 20;
  const maxX = Math.max(...layout.buses.map(b => b.x)), maxY = Math.max(...layout.buses.map(b => b.y));
  svg.setAttribute("width", (maxX + 1) * dx + 140);
  svg.setAttribute("height", (maxY + 1) * dy + 2 * pad);
  const pos = {};
  for (const b of layout.buses) pos[b.name] = [pad + b.x * dx, pad + b.y * dy];
  for (const br of layout.branches) {
    const l = document.createElementNS(SVG, "line");
    const [x1, y1] = pos[br.from], [x2, y2] = pos[br.to];
    Object.entries({ x1, y1, x2, y2 }).forEach(([k, v]) => l.setAttribute(k, v));
    l.setAttribute("class", br.kind);
    const t = document.createElementNS(SVG, "title"); t.textContent = br.name; l.appendChild(t);
    svg.appendChild(l);
  }
  const label = layout.buses.length <= 120;
  for (const b of layout.buses) {
    const c = document.createElementNS(SVG, "circle");
    const level = levels[b.name] || "none";
    c.setAttribute("cx", pos[b.name][0]); c.setAttribute("cy", pos[b.name][1]);
    c.setAttribute("r", b.source ? 6 : (b.load ? 4.5 : 3.5));
    c.setAttribute("class", "bus " + level);
    c.dataset.bus = b.name; c.dataset.level = level;
    const v = values[b.name];
    const t = document.createElementNS(SVG, "title");
    t.textContent = `${b.name} (${b.vn_kv} kV)` + (v ? `: ${fmt(v.v_min_pu)} … ${fmt(v.v_max_pu)} pu, ${fmt(v.deviation_pct, 1)} %` : "");
    c.appendChild(t);
    svg.appendChild(c);
    if (label && (b.source || b.load || b.x === maxX)) {
      const tx = document.createElementNS(SVG, "text");
      tx.setAttribute("x", pos[b.name][0] + 6); tx.setAttribute("y", pos[b.name][1] - 4);
      tx.setAttribute("class", "label"); tx.textContent = b.name;
      svg.appendChild(tx);
    }
  }
}
function runBody() {
  return { sim_duration_in_hours: Number($("duration").value), step_min: Number($("step").value),
    threshold_low: Number($("th-low").value), threshold_medium: Number($("th-medium").value),
    threshold_high: Number($("th-high").value), load_profile: $("load-profile").value,
    load_scale: Number($("load-scale").value) };
}
async function runSimulation() {
  try {
    await api("PUT", `/se/commands/run/${gridId}`, runBody());
  } catch (e) { $("sim-state").textContent = "refused: " + e.message; return; }
  levels = {}; drawGrid(); $("sim-downloads").textContent = "";
  $("abort").disabled = false; $("run").disabled = true;
  pollSimulation();
}
async function pollSimulation() {
  clearTimeout(simTimer);
  const st = await api("GET", `/se/simulation/${gridId}/state`);
  $("sim-progress").value = st.progress;
  $("sim-state").textContent = `${st.state} ${fmt(st.progress, 0)} %` + (st.error ? ` – ${st.error}` : "");
  document.body.dataset.sim = st.state;
  if (!DONE.has(st.state)) { simTimer = setTimeout(pollSimulation, 300); return; }
  $("abort").disabled = true; $("run").disabled = false;
  if (st.state === "done") await showResults();
  refreshGridList();
}
async function abortSimulation() {
  try { await api("PUT", `/se/commands/abort/${gridId}`); } catch (e) { $("sim-state").textContent = e.message; }
}
async function showResults() {
  const r = await api("GET", `/se/simulation/${gridId}`);
  const values = {};
  for (const n of r.nodes) { levels[n.bus] = n.level; values[n.bus] = n; }
  drawGrid(values);
  const s = r.summary;
  $("sim-summary").textContent = `${s.steps} power flows over ${s.hours} h: voltage ${fmt(s.v_min_pu)} … ${fmt(s.v_max_pu)} pu, losses ${fmt(s.losses_kwh, 2)} kWh, transformer peak ${Object.values(r.powers.Transformer).map(v => fmt(v, 1) + " kW").join(", ")}`;
  $("sim-downloads").innerHTML = `Download: <a id="dl-results" href="/se/simulation/${gridId}" download="results-${gridId}.json">results (JSON)</a>`;
  $("critical").textContent = r.critical_nodes.length ? `Critical nodes (> ${r.thresholds.high} %): ${r.critical_nodes.join(", ")}` : "No critical node.";
  document.body.dataset.critical = String(r.critical_nodes.length);
  const t = r.series.t_h;
  Plotly.newPlot("sim-plot", [
    { x: t, y: r.series.v_max_pu, name: "highest phase voltage", mode: "lines" },
    { x: t, y: r.series.v_min_pu, name: "lowest phase voltage", mode: "lines", fill: "tonexty" },
    { x: [t[0], t[t.length - 1]], y: [1 - r.thresholds.high / 100, 1 - r.thresholds.high / 100], name: "−high", mode: "lines", line: { dash: "dot", color: "#d62828" } },
    { x: [t[0], t[t.length - 1]], y: [1 + r.thresholds.high / 100, 1 + r.thresholds.high / 100], name: "+high", mode: "lines", line: { dash: "dot", color: "#d62828" } },
  ], { height: 300, margin: { t: 20, l: 50, r: 10, b: 40 }, xaxis: { title: "h" }, yaxis: { title: "pu" } },
  { displaylogo: false, responsive: true });
}

// ---------------------------------------------------------------- studies
async function template(scenario) {
  const info = await api("GET", `/api/scenarios/${encodeURIComponent(scenario)}`);
  const strategies = info.variants.length
    ? `  - {name: strategy, key: variant, values: [${info.variants.slice(0, 2).join(", ")}]}   # its variants: ${info.variants.join(", ")}\n` : "";
  const devices = info.devices.map(d => `${d.id} (${d.family})`).join(", ");
  return `name: ${scenario.replace(/\.ya?ml$/, "")}_study
scenario: {path: ${scenario}}
until: 1h                      # the simulated period of every variant (the scenario's: ${info.duration})
# devices: ${devices}
axes:                          # one column each in the table (docs/studies.md: key paths, ranges, cases)
${strategies}  - {name: seed, key: seed, values: [1, 2]}
kpis: [grid.v_minutes_outside_10pct, total.v_max_pu, grid.losses_kwh]
targets:
  - {name: v10, kpi: grid.v_minutes_outside_10pct, max: 0, label: every node within ±10 %}
`;
}
async function launchStudy() {
  $("study-error").textContent = "";
  try {
    const st = await api("POST", "/api/studies", { study: $("study-text").value });
    studyId = st.id;
  } catch (e) { $("study-error").textContent = "refused: " + e.message; return; }
  $("cancel").disabled = false; $("launch").disabled = true; $("downloads").innerHTML = "";
  pollStudy();
}
async function pollStudy() {
  clearTimeout(studyTimer);
  const st = await api("GET", `/api/studies/${studyId}`);
  $("study-progress").value = st.progress;
  $("study-state").textContent = `${st.name}: ${st.state}, ${st.done} done, ${st.failed} failed` + (st.cancelled ? `, ${st.cancelled} cancelled` : "") + ` of ${st.total}` + (st.eta_s ? `, about ${Math.round(st.eta_s)} s left` : "");
  rows = await api("GET", `/api/studies/${studyId}/table`);
  showTable();
  document.body.dataset.study = st.state;  // after the table: a finished state means the final table is shown
  if (st.error) $("study-error").textContent = st.error;
  if (!DONE.has(st.state)) { studyTimer = setTimeout(pollStudy, 500); return; }
  $("cancel").disabled = true; $("launch").disabled = false;
  const base = `/api/studies/${studyId}`;
  $("downloads").innerHTML = `Download: <a id="dl-csv" href="${base}/table?format=csv">CSV</a> · <a id="dl-parquet" href="${base}/table?format=parquet">Parquet</a> · <a id="dl-report" href="${base}/report" target="_blank">report</a>`;
}
function columns() {
  const cols = [];
  for (const r of rows) for (const k of Object.keys(r)) if (!cols.includes(k)) cols.push(k);
  return cols;
}
function showTable() {
  const cols = columns();
  const head = $("study-table").tHead, body = $("study-table").tBodies[0];
  head.innerHTML = "<tr>" + cols.map(c => `<th>${c}</th>`).join("") + "</tr>";
  body.innerHTML = "";
  for (const r of rows) {
    const tr = body.insertRow();
    for (const c of cols) {
      const v = r[c], td = tr.insertCell();
      td.textContent = typeof v === "number" ? (Number.isInteger(v) ? v : v.toPrecision(4)) : (v === null || v === undefined ? "" : String(v));
    }
  }
  const distinct = (c) => new Set(rows.map(r => String(r[c]))).size;
  const axes = cols.filter(c => !c.includes(".") && !META.has(c)).sort((a, b) => distinct(b) - distinct(a));  // varied first
  const kpis = cols.filter(c => c.includes(".") && !c.startsWith("target.") && rows.some(r => typeof r[c] === "number"));
  fillSelect($("axis"), axes); fillSelect($("kpi"), kpis);
  plotStudy();
}
function fillSelect(sel, names) {
  const keep = sel.value;
  if ([...sel.options].map(o => o.value).join() === names.join()) return;
  sel.length = 0;
  for (const n of names) sel.add(new Option(n, n));
  if (names.includes(keep)) sel.value = keep;
}
function plotStudy() {
  const axis = $("axis").value, kpi = $("kpi").value;
  if (!axis || !kpi || !rows.length) { $("study-plot").innerHTML = ""; return; }
  const others = columns().filter(c => !c.includes(".") && !META.has(c) && c !== axis);
  const groups = {};
  for (const r of rows) {
    if (r.status !== "complete") continue;
    const g = others.map(o => `${o}=${r[o]}`).join(", ") || kpi;
    (groups[g] = groups[g] || []).push(r);
  }
  const traces = Object.entries(groups).map(([g, rs]) => {
    rs.sort((a, b) => (a[axis] > b[axis]) - (a[axis] < b[axis]));
    return { x: rs.map(r => r[axis]), y: rs.map(r => r[kpi]), name: g, mode: "lines+markers" };
  });
  Plotly.react("study-plot", traces, { height: 320, margin: { t: 20, l: 60, r: 10, b: 40 },
    xaxis: { title: axis }, yaxis: { title: kpi } }, { displaylogo: false, responsive: true });
}

// ---------------------------------------------------------------- wiring
async function main(me) {
  csrf = me.csrf;
  $("who").textContent = `${me.user} (${me.role})`;
  $("app").classList.remove("hidden");
  $("grid-file").onchange = (ev) => ev.target.files.length && uploadGrid(ev.target.files[0]);
  $("grid-list").onchange = (ev) => ev.target.value && showGrid(ev.target.value);
  $("run").onclick = runSimulation;
  $("abort").onclick = abortSimulation;
  $("template").onclick = async () => {
    try { $("study-text").value = await template($("scenario").value); }
    catch (e) { $("study-error").textContent = e.message; }
  };
  $("launch").onclick = launchStudy;
  $("cancel").onclick = () => api("POST", `/api/studies/${studyId}/cancel`).catch(e => { $("study-error").textContent = e.message; });
  $("kpi").onchange = plotStudy; $("axis").onchange = plotStudy;
  const scenarios = await api("GET", "/api/scenarios");
  for (const s of scenarios) $("scenario").add(new Option(s, s));
  await refreshGridList();
  document.body.dataset.ready = "1";
}
startPage();
