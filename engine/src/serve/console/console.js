// The web console: polls GET /status every second (throughput and lag charts, the
// cards, the partitions), GET /views every five, and runs the editor's SQL with
// POST /sql. No framework and no build step: this file is served as it is, from
// the binary. Behind `auth:`, the token typed in is kept for this browser tab only
// (sessionStorage) and sent as `Authorization: Bearer`.
"use strict";

const POLL_MS = 1000;
const VIEWS_MS = 5000;
const WINDOW_S = 120;
const MAX_LAG_LINES = 8;
const COLORS = ["#2c6bed", "#1f8a4c", "#c53030", "#b7791f", "#805ad5", "#0987a0", "#d53f8c", "#4a5568"];

const $ = (id) => document.getElementById(id);
const samples = []; // {t (s), read, applied, lags: Map(partition -> lag)}
let token = sessionStorage.getItem("projector.token") || "";
let viewsShown = "";

/** A request to this instance's API: {status, body (parsed JSON or text), headers}. */
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const text = await response.text();
  let body = text;
  try { body = JSON.parse(text); } catch (_) { /* plain text */ }
  if (response.status === 401) askForToken(body);
  return { status: response.status, body, headers: response.headers };
}

function askForToken(body) {
  const message = body && body.error ? body.error.message : "this instance asks for a token";
  $("login-why").textContent = (token ? "That token was refused: " : "") + message;
  $("login").hidden = false;
}

function errorText(body) {
  if (body && body.error) return body.error.code + ": " + body.error.message;
  return typeof body === "string" ? body : JSON.stringify(body);
}

const int = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

function rate(n) {
  if (!isFinite(n)) return "–";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Math.round(n).toLocaleString("en-US");
}

function ago(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return ms + " ms";
  if (ms < 120000) return (ms / 1000).toFixed(1) + " s";
  return Math.round(ms / 60000) + " min";
}

function bytes(n) {
  if (!n) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  const i = Math.min(units.length - 1, Math.floor(Math.log(n) / Math.log(1024)));
  return (n / Math.pow(1024, i)).toFixed(i ? 1 : 0) + " " + units[i];
}

/** The newest rate of `field` in events/s, from the last two samples. */
function newestRate(field) {
  if (samples.length < 2) return NaN;
  const a = samples[samples.length - 2], b = samples[samples.length - 1];
  return Math.max(0, b[field] - a[field]) / Math.max(0.001, b.t - a.t);
}

async function pollStatus() {
  let s;
  try {
    const r = await api("/status");
    if (r.status !== 200) {
      if (r.status !== 401) showProblem("GET /status: " + errorText(r.body));
      return;
    }
    s = r.body;
  } catch (e) {
    $("state").textContent = "unreachable";
    $("state").className = "badge unreachable";
    return;
  }
  showProblem(null);
  $("login").hidden = true;
  $("pipeline").textContent = s.pipeline;
  $("state").textContent = s.state;
  $("state").className = "badge " + s.state;
  $("facts").textContent = "epoch " + int(s.epoch) + " · " + s.workers + " workers · up " + ago(s.uptime_ms)
    + (s.error ? " · " + s.error : "");

  const now = performance.now() / 1000;
  const lags = new Map();
  // Kafka partitions have a lag; files, stdin and the generator have no high watermark.
  for (const p of s.partitions || []) if (p.assigned !== false && p.lag !== null && p.lag !== undefined) lags.set(p.partition, p.lag);
  samples.push({ t: now, read: s.events.read, applied: s.events.applied, lags });
  while (samples.length && samples[0].t < now - WINDOW_S) samples.shift();

  const readRate = newestRate("read"), appliedRate = newestRate("applied");
  $("read").textContent = int(s.events.read);
  $("read-rate").textContent = isFinite(readRate) ? rate(readRate) + " /s" : "";
  $("applied").textContent = int(s.events.applied);
  $("applied-rate").textContent = isFinite(appliedRate) ? rate(appliedRate) + " /s" : "";
  $("dead").textContent = int(s.events.dead_letters);
  $("dups").textContent = int(s.events.duplicates) + " duplicates · " + int(s.events.skipped) + " skipped";
  $("parked").textContent = int(s.parked.keys);
  $("parked-events").textContent = int(s.parked.events) + " events held";
  const c = s.checkpoint || {};
  if (c.epoch) {
    $("checkpoint").textContent = "epoch " + int(c.epoch);
    $("checkpoint-detail").textContent = ago(Date.now() - c.written_ms) + " ago · " + c.duration_ms + " ms · "
      + bytes(c.bytes)
      + ((s.checkpoints_skipped || []).length ? " · " + s.checkpoints_skipped.length + " damaged skipped at restore" : "");
  } else {
    $("checkpoint").textContent = "none yet";
    $("checkpoint-detail").textContent = s.restored_from_epoch ? "restored from epoch " + int(s.restored_from_epoch) : "";
  }
  const rb = s.rebuild;
  if (rb) {
    $("rebuild").textContent = rb.state;
    $("rebuild-detail").textContent = (rb.views || []).map((v) => v.view).join(", ")
      + (rb.lag !== undefined ? " · " + int(rb.lag) + " behind" : "")
      + (rb.eta_s ? " · ~" + rb.eta_s + " s left" : "");
  } else {
    $("rebuild").textContent = "none";
    $("rebuild-detail").textContent = "";
  }

  showPartitions(s.partitions || []);
  drawRates();
  drawLags();
}

function showPartitions(partitions) {
  const body = $("partitions").tBodies[0];
  body.replaceChildren(...partitions.map((p) => row([
    p.partition + (p.assigned === false ? " (not assigned here)" : ""),
    int(p.next_offset), int(p.high_watermark), int(p.lag),
    p.published_epoch === null ? "–" : int(p.published_epoch),
    p.checkpoint_epoch === null ? "–" : int(p.checkpoint_epoch),
    ago(p.checkpoint_age_ms),
  ])));
}

function row(cells, header) {
  const tr = document.createElement("tr");
  for (const value of cells) {
    const cell = document.createElement(header ? "th" : "td");
    if (value === null) { cell.textContent = "NULL"; cell.className = "null"; }
    else cell.textContent = typeof value === "object" ? JSON.stringify(value) : String(value);
    tr.appendChild(cell);
  }
  return tr;
}

/** Rates between consecutive samples of `field`, as [t, events/s]. */
function rateSeries(field) {
  const points = [];
  for (let i = 1; i < samples.length; i++) {
    const a = samples[i - 1], b = samples[i];
    points.push([b.t, Math.max(0, b[field] - a[field]) / Math.max(0.001, b.t - a.t)]);
  }
  return points;
}

function drawRates() {
  chart($("rate-chart"), $("rate-legend"), [
    { name: "read", points: rateSeries("read") },
    { name: "applied", points: rateSeries("applied") },
  ]);
}

function drawLags() {
  const newest = samples.length ? samples[samples.length - 1].lags : new Map();
  // The partitions furthest behind, in a stable order (by name) so colours stay put.
  const names = [...newest.keys()].sort((a, b) => newest.get(b) - newest.get(a)).slice(0, MAX_LAG_LINES).sort();
  chart($("lag-chart"), $("lag-legend"), names.map((name) => ({
    name,
    points: samples.filter((s) => s.lags.has(name)).map((s) => [s.t, s.lags.get(name)]),
  })), newest.size ? "" : "no lag to show: this source has no high watermark (Kafka partitions have one)");
}

const SVG = "http://www.w3.org/2000/svg";
function svgNode(name, attributes) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
  return node;
}

/** The smallest of 1, 2, 5 × 10^k at or above `n` (so axis labels are round). */
function niceCeil(n) {
  const step = Math.pow(10, Math.floor(Math.log10(n)));
  for (const f of [1, 2, 5, 10]) if (f * step >= n) return f * step;
  return 10 * step;
}

/** Draws `series` ({name, points: [[t, y]]}) over the seconds sampled so far, at most
 * WINDOW_S; `empty` is said in the middle when there is nothing to draw. */
function chart(svg, legend, series, empty) {
  const width = svg.clientWidth || 600, height = svg.clientHeight || 180;
  const left = 56, right = 8, top = 8, bottom = 18;
  svg.setAttribute("viewBox", "0 0 " + width + " " + height);
  const now = samples.length ? samples[samples.length - 1].t : 0;
  const span = samples.length > 1 ? Math.max(1, now - samples[0].t) : WINDOW_S;
  let max = 1;
  for (const s of series) for (const [, y] of s.points) max = Math.max(max, y);
  max = niceCeil(max * 1.05);
  const x = (t) => left + (width - left - right) * (1 - (now - t) / span);
  const y = (v) => top + (height - top - bottom) * (1 - v / max);
  const nodes = [];
  for (const f of [0, 0.5, 1]) {
    nodes.push(svgNode("line", { class: "axis", x1: left, x2: width - right, y1: y(max * f), y2: y(max * f) }));
    const label = svgNode("text", { x: left - 6, y: y(max * f) + 3, "text-anchor": "end" });
    label.textContent = rate(max * f);
    nodes.push(label);
  }
  const age = svgNode("text", { x: left, y: height - 4 });
  age.textContent = "−" + Math.round(span) + " s";
  const nowLabel = svgNode("text", { x: width - right, y: height - 4, "text-anchor": "end" });
  nowLabel.textContent = "now";
  nodes.push(age, nowLabel);
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    if (s.points.length > 1) {
      nodes.push(svgNode("polyline", {
        stroke: color,
        "data-series": s.name,
        points: s.points.map(([t, v]) => x(t).toFixed(1) + "," + y(v).toFixed(1)).join(" "),
      }));
    }
  });
  if (empty) {
    const note = svgNode("text", { x: width / 2, y: height / 2, "text-anchor": "middle" });
    note.textContent = empty;
    nodes.push(note);
  }
  svg.replaceChildren(...nodes);
  legend.replaceChildren(...series.map((s, i) => {
    const span = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = COLORS[i % COLORS.length];
    span.append(swatch, s.name);
    return span;
  }));
}

async function pollViews() {
  let r;
  try { r = await api("/views"); } catch (_) { return; }
  if (r.status !== 200) return;
  const text = JSON.stringify(r.body);
  if (text === viewsShown) return;
  viewsShown = text;
  $("views").replaceChildren(...r.body.map((v) => {
    const li = document.createElement("li");
    const link = document.createElement("a");
    link.textContent = v.name;
    link.title = "query it";
    link.addEventListener("click", () => {
      $("sql").value = "SELECT * FROM " + v.name + " LIMIT 100";
      runSql();
    });
    const kind = document.createElement("span");
    kind.className = "muted";
    kind.textContent = " " + v.kind + (v.rows === null ? "" : " · " + int(v.rows) + " rows");
    const cols = document.createElement("div");
    cols.className = "cols";
    cols.textContent = v.columns.map((c) => c.name + " " + c.type + (c.nullable ? "" : " not null")).join(", ");
    li.append(link, kind, cols);
    return li;
  }));
}

async function runSql() {
  const sql = $("sql").value.trim();
  if (!sql) return;
  $("run").disabled = true;
  $("sql-error").hidden = true;
  $("sql-info").textContent = "running…";
  const started = performance.now();
  try {
    const r = await api("/sql", { method: "POST", body: sql, headers: { "Content-Type": "text/plain" } });
    const ms = Math.round(performance.now() - started);
    if (r.status !== 200) {
      $("sql-info").textContent = ms + " ms";
      $("sql-error").textContent = errorText(r.body);
      $("sql-error").hidden = false;
      return;
    }
    const rows = Array.isArray(r.body) ? r.body : [];
    const columns = rows.length ? Object.keys(rows[0]) : [];
    const table = $("results");
    table.tHead.replaceChildren(row(columns, true));
    table.tBodies[0].replaceChildren(...rows.map((obj) => row(columns.map((c) => obj[c]))));
    const epoch = r.headers.get("x-projector-epoch");
    $("sql-info").textContent = int(rows.length) + (rows.length === 1 ? " row · " : " rows · ") + ms + " ms" + (epoch ? " · epoch " + epoch : "");
  } catch (e) {
    $("sql-error").textContent = "the request failed: " + e;
    $("sql-error").hidden = false;
    $("sql-info").textContent = "";
  } finally {
    $("run").disabled = false;
  }
}

function showProblem(text) {
  $("problem").hidden = !text;
  $("problem").textContent = text || "";
}

document.addEventListener("DOMContentLoaded", () => {
  $("sql-form").addEventListener("submit", (e) => { e.preventDefault(); runSql(); });
  $("sql").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runSql(); }
  });
  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    token = $("token").value.trim();
    sessionStorage.setItem("projector.token", token);
    $("login").hidden = true;
    viewsShown = "";
    pollStatus();
    pollViews();
  });
  pollStatus();
  pollViews();
  setInterval(pollStatus, POLL_MS);
  setInterval(pollViews, VIEWS_MS);
});
