// The web console: polls GET /status every second (throughput and lag charts, the
// cards, the partitions), GET /views every five, and runs the editor's SQL with
// POST /sql?format=rows. No framework and no build step: this file is served as it
// is, from the binary. Paths are relative, so the console also works behind a proxy
// that serves it under a prefix. Behind `auth:`, the token typed in is kept for this
// browser tab only (sessionStorage) and sent as `Authorization: Bearer`.
"use strict";

const POLL_MS = 1000;
const VIEWS_MS = 5000;
const WINDOW_S = 120;
const MAX_LAG_LINES = 8;
const POLL_TIMEOUT_MS = 10000;
const MAX_SHOWN_ROWS = 1000;
const COLORS = ["#2c6bed", "#1f8a4c", "#c53030", "#b7791f", "#805ad5", "#0987a0", "#d53f8c", "#4a5568"];

const $ = (id) => document.getElementById(id);
const samples = []; // {t (s), read, applied, lags: Map(partition -> lag)}
let token = sessionStorage.getItem("projector.token") || "";
let viewsShown = "";
let sqlRun = 0; // the newest query's number: an older answer is not shown over it

/** A request to this instance's API: {status, body (parsed JSON or text), headers}.
 * `timeout` (ms) aborts it; a query has none (the server's own timeout applies). */
async function api(path, options = {}, timeout) {
  const headers = Object.assign({}, options.headers || {});
  if (token) headers.Authorization = "Bearer " + token;
  const init = Object.assign({}, options, { headers });
  if (timeout) init.signal = AbortSignal.timeout(timeout);
  const response = await fetch(path, init);
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
    const r = await api("status", {}, POLL_TIMEOUT_MS);
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
    // The age as the server measures it: this browser's clock may be off.
    $("checkpoint-detail").textContent = ago(s.checkpoint_age_ms) + " ago · " + c.duration_ms + " ms · "
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
        // Whole pixels: a flat line (no lag, no input) is two crisp rows.
        points: s.points.map(([t, v]) => x(t).toFixed(1) + "," + Math.round(y(v))).join(" "),
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
  try { r = await api("views", {}, POLL_TIMEOUT_MS); } catch (_) { return; }
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
      $("sql").value = "SELECT * FROM " + quoted(v.name) + " LIMIT 100";
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

/** `name` as a SQL identifier, whatever it is (`order`, `Mixed`, `a"b`). */
function quoted(name) {
  return '"' + name.replace(/"/g, '""') + '"';
}

async function runSql() {
  const sql = $("sql").value.trim();
  if (!sql) return;
  const run = ++sqlRun;
  $("sql-error").hidden = true;
  $("sql-info").textContent = "running…";
  const started = performance.now();
  let r;
  try {
    r = await api("sql?format=rows", { method: "POST", body: sql, headers: { "Content-Type": "text/plain" } });
  } catch (e) {
    r = { status: 0, body: "the request failed: " + e };
  }
  if (run !== sqlRun) return; // a newer query was started meanwhile
  const ms = Math.round(performance.now() - started);
  const body = r.body;
  if (r.status !== 200 || !body || !Array.isArray(body.columns) || !Array.isArray(body.rows)) {
    $("sql-info").textContent = ms + " ms";
    $("sql-error").textContent = r.status === 200 ? "an answer that is not a result: " + errorText(body) : errorText(body);
    $("sql-error").hidden = false;
    return;
  }
  // Columns and values by position: duplicate and integer-like names stay apart.
  const table = $("results");
  table.tHead.replaceChildren(row(body.columns.map((c) => c.name), true));
  const shown = body.rows.slice(0, MAX_SHOWN_ROWS);
  table.tBodies[0].replaceChildren(...shown.map((values) => row(values)));
  const n = body.rows.length;
  const epoch = r.headers.get("x-projector-epoch");
  $("sql-info").textContent = int(n) + (n === 1 ? " row" : " rows")
    + (n > shown.length ? " (the first " + int(shown.length) + " shown; add a LIMIT)" : "")
    + " · " + ms + " ms" + (epoch ? " · epoch " + epoch : "");
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
    const typed = $("token").value.trim();
    // A header takes visible ASCII only: anything else could never be sent.
    if (!/^[\x21-\x7e]+$/.test(typed)) {
      $("login-why").textContent = "A token is printable ASCII without spaces.";
      return;
    }
    token = typed;
    sessionStorage.setItem("projector.token", token);
    $("login").hidden = true;
    viewsShown = "";
    pollStatus();
    pollViews();
  });
  // Each poll starts a set time after the previous one ended: a slow answer never
  // piles requests up (a browser holds 6 connections to this host, the editor's too).
  const every = (f, ms) => { const next = () => f().finally(() => setTimeout(next, ms)); next(); };
  every(pollStatus, POLL_MS);
  every(pollViews, VIEWS_MS);
});
