"""The live dashboard page: self-contained (no CDN, no external fonts), polls
``snapshot.json`` next to its own URL once a second and redraws workers,
queues, per-model figures, generation streams (``metrics.generations``: text
generation and Whisper transcription) and a latency chart (canvas, drawn by
hand)."""
# ruff: noqa: E501  (an HTML/JS page, kept readable rather than wrapped)
from __future__ import annotations

DASHBOARD_HTML = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>webaccel dashboard</title>
<style>
:root { --bg:#0f1419; --panel:#1a2129; --fg:#e6e9ec; --dim:#8a96a3; --ok:#4cc38a;
        --warn:#f0b429; --bad:#ef5b5b; --accent:#5aa9e6; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.4 system-ui, sans-serif; background:var(--bg); color:var(--fg); }
header { display:flex; align-items:baseline; gap:16px; padding:12px 20px; border-bottom:1px solid #263140; }
header h1 { font-size:18px; margin:0; }
#status { color:var(--dim); }
#status.bad { color:var(--bad); }
main { display:grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap:16px; padding:16px 20px; }
section { background:var(--panel); border-radius:8px; padding:12px 14px; }
section.wide { grid-column: 1 / -1; }
section h2 { font-size:14px; margin:0 0 8px; color:var(--dim); text-transform:uppercase; letter-spacing:.05em; }
.kpis { display:grid; grid-template-columns: repeat(3, 1fr); gap:8px; }
.kpi b { display:block; font-size:22px; }
.kpi span { color:var(--dim); font-size:12px; }
table { width:100%; border-collapse:collapse; }
th, td { text-align:left; padding:4px 6px; border-bottom:1px solid #263140; font-variant-numeric: tabular-nums; }
th { color:var(--dim); font-weight:normal; }
.state { padding:1px 6px; border-radius:4px; font-size:12px; background:#263140; }
.state.ready, .state.idle { color:var(--ok); } .state.busy { color:var(--accent); }
.state.lost, .state.failed { color:var(--bad); } .state.launching, .state.draining { color:var(--warn); }
.bar { height:10px; background:#8f7ee6; border-radius:3px; min-width:2px; }
canvas { width:100%; height:220px; display:block; }
.empty { color:var(--dim); font-style:italic; }
</style></head>
<body>
<header><h1>webaccel</h1><span id="status">connecting…</span></header>
<main>
  <section><h2>Totals</h2><div class="kpis" id="kpis"></div></section>
  <section><h2>Recent latency (round trip, ms)</h2><canvas id="chart" width="800" height="220"></canvas></section>
  <section><h2>Workers</h2><div id="workers"></div></section>
  <section><h2>Queues</h2><div id="queues"></div></section>
  <section><h2>Models</h2><div id="models"></div></section>
  <section class="wide"><h2>Generation (text generation, speech to text)</h2><div id="generations"></div></section>
</main>
<script>
"use strict";
const base = location.pathname.replace(/\/+$/, "");
const SNAPSHOT = base + "/snapshot.json";
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;","'":"&#39;"}[c]));
const fmt = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v)) ? "–" : Number(v).toFixed(d);
const list = (v) => Array.isArray(v) ? v.join(", ") : (v && typeof v === "object" ? Object.keys(v).join(", ") : (v ?? ""));

function kpis(m, store) {
  const a = (m && m.aggregate) || {};
  const items = [
    ["inferences", a.inferences ?? 0, ""], ["avg latency", fmt((a.avg_inference_time || 0) * 1000), "ms"],
    ["throughput", fmt(a.avg_throughput), "items/s"], ["p95", fmt(a.p95_ms), "ms"],
    ["errors", a.errors ?? 0, ""], ["pending records", store ? store.pending : "–", ""]];
  document.getElementById("kpis").innerHTML = items.map(([k, v, u]) =>
    `<div class="kpi"><b data-kpi="${esc(k)}">${esc(v)}</b><span>${esc(k)} ${esc(u)}</span></div>`).join("");
}

function workers(ws, quarantined) {
  const el = document.getElementById("workers");
  const q = Object.entries(quarantined || {});
  const out = q.length ? "<table><tr><th>quarantined</th><th>why</th></tr>" +
    q.map(([id, v]) => `<tr data-quarantined="${esc(id)}"><td>${esc(id)}</td><td>${esc(v.reason)}</td></tr>`).join("") +
    "</table>" : "";
  if (!ws.length) { el.innerHTML = '<p class="empty">no workers</p>' + out; return; }
  el.innerHTML = "<table><tr><th>id</th><th>browser</th><th>state</th><th>backends</th><th>models</th><th>in flight</th><th>sessions</th></tr>" +
    ws.map(w => `<tr data-worker="${esc(w.id)}"><td>${esc(w.id)}</td><td>${esc(w.browser)}</td>` +
      `<td><span class="state ${esc(w.state)}">${esc(w.state)}</span></td><td>${esc(list(w.backends))}</td>` +
      `<td>${esc(list(w.models))}</td><td>${esc(w.inflight ?? 0)}</td><td>${esc(w.sessions ?? 0)}</td></tr>`).join("") +
    "</table>" + out;
}

function queues(q) {
  const el = document.getElementById("queues");
  const entries = Object.entries(q || {});
  if (!entries.length) { el.innerHTML = '<p class="empty">no queues</p>'; return; }
  const max = Math.max(1, ...entries.map(([, n]) => n));
  el.innerHTML = "<table>" + entries.map(([m, n]) =>
    `<tr data-queue="${esc(m)}"><td style="width:35%">${esc(m)}</td><td style="width:10%">${esc(n)}</td>` +
    `<td><div class="bar" style="width:${(100 * n / max).toFixed(1)}%"></div></td></tr>`).join("") + "</table>";
}

function models(m) {
  const el = document.getElementById("models");
  const entries = Object.entries((m && m.models) || {});
  if (!entries.length) { el.innerHTML = '<p class="empty">no inferences yet</p>'; return; }
  el.innerHTML = "<table><tr><th>model</th><th>requests</th><th>avg ms</th><th>p95 ms</th><th>items/s</th><th>errors</th></tr>" +
    entries.map(([name, s]) => `<tr data-model="${esc(name)}"><td>${esc(name)}</td><td>${esc(s.inferences)}</td>` +
      `<td>${fmt(s.avg_inference_time * 1000)}</td><td>${fmt(s.p95_ms)}</td><td>${fmt(s.avg_throughput)}</td>` +
      `<td>${esc(s.errors)}</td></tr>`).join("") + "</table>";
}

function generations(m) {
  const el = document.getElementById("generations");
  const entries = Object.entries((m && m.generations && m.generations.models) || {});
  if (!entries.length) { el.innerHTML = '<p class="empty">no generations yet</p>'; return; }
  el.innerHTML = "<table><tr><th>model</th><th>task</th><th>streams</th><th>prompt tok</th><th>completion tok</th>" +
    "<th>TTFT avg ms</th><th>TTFT p50 ms</th><th>tokens/s</th><th>failovers</th><th>errors</th></tr>" +
    entries.map(([name, s]) => `<tr data-generation="${esc(name)}"><td>${esc(name)}</td><td>${esc(s.task)}</td>` +
      `<td>${esc(s.generations)}</td><td>${esc(s.prompt_tokens)}</td><td>${esc(s.completion_tokens)}</td>` +
      `<td>${fmt(s.avg_ttft_ms)}</td><td>${fmt(s.p50_ttft_ms)}</td><td>${fmt(s.avg_tokens_per_s)}</td>` +
      `<td>${esc(s.failovers)}</td><td>${esc(s.errors)}</td></tr>`).join("") + "</table>";
}

const COLORS = ["#5aa9e6", "#4cc38a", "#f0b429", "#c77dff", "#ff8c61", "#7bdff2"];
function chart(recent) {
  const c = document.getElementById("chart"), g = c.getContext("2d");
  const dpr = window.devicePixelRatio || 1;
  const W = c.clientWidth || 800, H = c.clientHeight || 220, L = 48, B = 22, T = 8, R = 8;
  if (c.width !== Math.round(W * dpr)) { c.width = Math.round(W * dpr); c.height = Math.round(H * dpr); }
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, W, H);
  g.font = "12px system-ui, sans-serif"; g.fillStyle = "#8a96a3"; g.strokeStyle = "#263140";
  const pts = recent.filter(r => typeof r.round_trip_ms === "number");
  if (!pts.length) { g.fillText("no inferences yet", L, H / 2); return; }
  const ymax = Math.max(...pts.map(p => p.round_trip_ms)) * 1.1 || 1;
  for (let i = 0; i <= 4; i++) {
    const y = T + (H - T - B) * i / 4;
    g.beginPath(); g.moveTo(L, y); g.lineTo(W - R, y); g.stroke();
    g.fillText(fmt(ymax * (1 - i / 4), ymax < 10 ? 2 : 0), 4, y + 4);
  }
  const keys = [...new Set(pts.map(p => `${p.model}/${p.backend ?? "?"}`))];
  const x = (i) => L + (W - L - R) * (pts.length === 1 ? 0.5 : i / (pts.length - 1));
  const y = (v) => T + (H - T - B) * (1 - v / ymax);
  pts.forEach((p, i) => {
    g.fillStyle = p.ok === false ? "#ef5b5b" : COLORS[keys.indexOf(`${p.model}/${p.backend ?? "?"}`) % COLORS.length];
    g.beginPath(); g.arc(x(i), y(p.round_trip_ms), 2.5, 0, 2 * Math.PI); g.fill();
  });
  keys.slice(0, 6).forEach((k, i) => { g.fillStyle = COLORS[i % COLORS.length]; g.fillText("● " + k, L + 4 + i * 140, H - 6); });
}

async function tick() {
  const status = document.getElementById("status");
  try {
    // The key comes in the URL fragment (/dashboard#key=...): never sent to a server or logged.
    const key = new URLSearchParams(location.hash.slice(1)).get("key");
    const r = await fetch(SNAPSHOT, {cache: "no-store",
                                     headers: key ? {authorization: "Bearer " + key} : {}});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const s = await r.json();
    kpis(s.metrics, s.store); workers(s.workers || [], s.quarantined); queues(s.queues); models(s.metrics); generations(s.metrics); chart(s.recent || []);
    status.textContent = "live · updated " + new Date().toLocaleTimeString() + (s.error ? " · snapshot error: " + s.error : "");
    status.className = s.error ? "bad" : "";
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (e) {
    status.textContent = "disconnected (" + e.message + "), retrying…"; status.className = "bad";
  }
}
tick(); setInterval(tick, 1000);
</script>
</body></html>
"""
