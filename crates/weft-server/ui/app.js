// weft dashboard: plain JavaScript, no build step, nothing loaded from elsewhere.
//
// Objects (instances, deployments, autoscalers) come from the api's watch streams
// (`?watch=true`, newline-delimited JSON read with fetch + ReadableStream); the service graph's
// figures from GET /api/v1/dashboard/graph every 2 s. Rendering is coalesced into one animation
// frame, so a burst of watch events (500 instances at start) costs one render.
//
// The token comes from the URL fragment (#token=…, which browsers never send to the server)
// or a form, is kept in localStorage, and goes out only as `Authorization: Bearer`.
'use strict';

// Page errors, collected for tests (console output is awkward to read over WebDriver).
window.__weftErrors = [];
window.addEventListener('error', (e) => {
  window.__weftErrors.push(String(e.message || e.error || 'error') + (e.filename ? ` (${e.filename}:${e.lineno})` : ''));
});
window.addEventListener('unhandledrejection', (e) => {
  window.__weftErrors.push('unhandled rejection: ' + String(e.reason && e.reason.message || e.reason));
});
{
  const original = console.error.bind(console);
  console.error = (...args) => { window.__weftErrors.push(args.map(String).join(' ')); original(...args); };
}
// Render times (ms), for measurements.
window.__weftPerf = { renders: {}, graphPolls: 0, events: 0 };

const TOKEN_KEY = 'weft.token';
const POLL_MS = 2000;
const HISTORY_MS = 10 * 60 * 1000;
const SVG = 'http://www.w3.org/2000/svg';

const S = {
  token: null,
  generation: 0,            // bumps on sign-out or a refused token: old loops stop
  instances: new Map(),
  deployments: new Map(),
  autoscalers: new Map(),
  observed: [],             // replica changes seen on the deployment watch
  graph: null,
  history: new Map(),       // node id -> [[time ms, p99 ms | null]]
  streams: {},              // plural -> 'live' | message
  graphError: null,
};

// ---- small helpers ----------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const key = (o) => `${o.metadata.namespace || ''}/${o.metadata.name}`;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, v);
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

function fmtRps(v) { return v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2); }
function fmtPct(v) { return v === null || v === undefined ? '–' : (v * 100).toFixed(v >= 0.999 || v < 0.9 ? 1 : 2) + '%'; }
function fmtMs(v) { return v === null || v === undefined ? '–' : v >= 100 ? v.toFixed(0) + 'ms' : v.toFixed(1) + 'ms'; }
function fmtTime(t) {
  const d = new Date(t);
  return isNaN(d) ? String(t) : d.toLocaleTimeString([], { hour12: false });
}

// ---- token --------------------------------------------------------------------------------

function tokenFromFragment() {
  const m = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (!m) return null;
  // Out of the address bar and history at once.
  history.replaceState(null, '', location.pathname + location.search);
  return decodeURIComponent(m[1]);
}

function needToken(message) {
  S.generation++;
  S.token = null;
  $('main').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message || '';
  setStatus('signed out');
  $('token-input').focus();
}

function signIn(token) {
  S.token = token.trim();
  localStorage.setItem(TOKEN_KEY, S.token);
  S.generation++;
  $('login').hidden = true;
  $('main').hidden = false;
  start(S.generation);
}

async function api(path, init) {
  const r = await fetch(path, { ...(init || {}), headers: { Authorization: `Bearer ${S.token}` }, cache: 'no-store' });
  if (r.status === 401) {
    localStorage.removeItem(TOKEN_KEY);
    needToken('The server refused the token (unknown, expired or revoked). Enter another one.');
    throw new Refused();
  }
  return r;
}
class Refused extends Error {}

// ---- watches -------------------------------------------------------------------------------

// Follows `GET /api/v1/{plural}?watch=true` into `store`, reconnecting after errors. A
// reconnect lists again (ADDED per current object, then a BOOKMARK); objects not re-listed by
// that bookmark were deleted meanwhile and are dropped.
async function watch(plural, store, onEvent, gen) {
  let backoff = 500;
  while (gen === S.generation) {
    let resync = new Set();
    try {
      const r = await api(`/api/v1/${plural}?watch=true`);
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      S.streams[plural] = 'live';
      backoff = 500;
      dirty('status');
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done || gen !== S.generation) { reader.cancel().catch(() => {}); break; }
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl).trim();
          buf = buf.slice(nl + 1);
          if (!line) continue;
          const ev = JSON.parse(line);
          window.__weftPerf.events++;
          if (ev.type === 'BOOKMARK') {
            if (resync) {
              for (const k of [...store.keys()]) if (!resync.has(k)) store.delete(k);
              resync = null;
              dirty(plural);
            }
            continue;
          }
          if (ev.type === 'ERROR') throw new Error((ev.object && ev.object.message) || 'watch error');
          const k = key(ev.object);
          const before = store.get(k);
          if (ev.type === 'DELETED') store.delete(k);
          else store.set(k, ev.object);
          if (resync && ev.type === 'ADDED') resync.add(k);
          if (onEvent) onEvent(ev.type, before, ev.object);
          dirty(plural);
        }
      }
      S.streams[plural] = 'reconnecting';
    } catch (e) {
      if (e instanceof Refused || gen !== S.generation) return;
      S.streams[plural] = `${e.message}; retrying`;
    }
    dirty('status');
    await sleep(backoff);
    backoff = Math.min(backoff * 2, 5000);
  }
}

function onDeployment(type, before, after) {
  if (type !== 'MODIFIED' || !before) return;
  const from = before.spec && before.spec.replicas;
  const to = after.spec && after.spec.replicas;
  if (from === to || from === undefined || to === undefined) return;
  S.observed.push({
    time: new Date().toISOString(),
    target: key(after),
    from, to,
    reason: 'spec.replicas changed (weft scale, apply, or an autoscaler)',
    source: 'observed',
  });
  if (S.observed.length > 200) S.observed.shift();
  dirty('timeline');
}

// ---- graph figures -------------------------------------------------------------------------

async function pollGraph(gen) {
  while (gen === S.generation) {
    const started = Date.now();
    try {
      const r = await api('/api/v1/dashboard/graph');
      if (!r.ok) throw new Error(`HTTP ${r.status}`);
      const g = await r.json();
      window.__weftPerf.graphPolls++;
      S.graph = g;
      S.graphError = null;
      const now = Date.now();
      for (const n of g.nodes) {
        if (n.kind !== 'service') continue;
        let h = S.history.get(n.id);
        if (!h) S.history.set(n.id, (h = []));
        h.push([now, n.rps > 0 ? n.p99Ms : null]);
        while (h.length && h[0][0] < now - HISTORY_MS) h.shift();
      }
      dirty('graph'); dirty('latency');
    } catch (e) {
      if (e instanceof Refused) return;
      S.graphError = e.message;
    }
    dirty('status');
    await sleep(Math.max(200, POLL_MS - (Date.now() - started)));
  }
}

// ---- rendering -----------------------------------------------------------------------------

const pending = new Set();
let frame = 0;
function dirty(what) {
  pending.add(what);
  if (!frame) frame = requestAnimationFrame(renderDirty);
}

const RENDER = {
  status: renderStatus,
  instances: renderInstances,
  deployments: () => { renderDeployments(); renderTimeline(); },
  autoscalers: () => { renderDeployments(); renderTimeline(); },
  timeline: renderTimeline,
  graph: renderGraph,
  latency: renderLatency,
};

function renderDirty() {
  frame = 0;
  const work = [...pending];
  pending.clear();
  for (const what of work) {
    const t0 = performance.now();
    RENDER[what]();
    window.__weftPerf.renders[what] = performance.now() - t0;
  }
}

function setStatus(text) { $('status').textContent = text; }

function renderStatus() {
  const parts = [];
  const streams = Object.entries(S.streams);
  const down = streams.filter(([, s]) => s !== 'live');
  parts.push(down.length ? down.map(([p, s]) => `${p}: ${s}`).join(' · ') : streams.length ? 'live' : 'connecting…');
  if (S.graph) parts.push(`figures at ${fmtTime(S.graph.at)} from ${S.graph.scraped - S.graph.failed}/${S.graph.scraped} sidecars`);
  if (S.graphError) parts.push(`graph: ${S.graphError}`);
  setStatus(parts.join(' · '));
}

// Rows keyed by object, updated in place: a change to one instance rewrites one row.
function syncRows(tbody, items, cells) {
  const rows = tbody._rows || (tbody._rows = new Map());
  const seen = new Set();
  let prev = null;
  for (const [k, obj] of items) {
    seen.add(k);
    const values = cells(obj);
    const sig = JSON.stringify(values);
    let row = rows.get(k);
    if (!row) {
      row = el('tr', { 'data-key': k });
      rows.set(k, row);
    }
    if (row._sig !== sig) {
      row._sig = sig;
      row.replaceChildren(...values.map((v) => {
        const [text, cls] = Array.isArray(v) ? v : [v, null];
        return el('td', { class: cls }, text);
      }));
    }
    const want = prev ? prev.nextSibling : tbody.firstChild;
    if (want !== row) tbody.insertBefore(row, want);
    prev = row;
  }
  for (const [k, row] of rows) if (!seen.has(k)) { row.remove(); rows.delete(k); }
}

const sorted = (map) => [...map.entries()].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));

function renderInstances() {
  const tbody = $('instances').tBodies[0];
  syncRows(tbody, sorted(S.instances), (o) => {
    const st = o.status || {};
    const usage = st.usage || {};
    const phase = st.phase || 'Pending';
    const phaseCls = phase === 'Running' ? 'ok' : /Crash|Failed|Unschedulable/.test(phase + (st.reason || '')) ? 'bad' : 'warn';
    return [
      o.metadata.namespace, o.metadata.name, (o.spec || {}).deployment || '', (o.spec || {}).node || '–',
      [phase + (st.reason && st.reason !== phase ? ` (${st.reason})` : ''), phaseCls],
      [st.ready ? 'yes' : 'no', st.ready ? 'ok' : 'warn'],
      [st.restarts || 0, (st.restarts || 0) > 0 ? 'num warn' : 'num'],
      [usage.cpu || '–', 'num'], [usage.memory || '–', 'num'],
    ];
  });
  $('instances-count').textContent = `${S.instances.size}`;
  const p = window.__weftPerf;
  if (!p.instanceRows || p.instanceRows.n !== S.instances.size) p.instanceRows = { n: S.instances.size, at: performance.now() };
}

function autoscalerFor(dep) {
  for (const a of S.autoscalers.values()) {
    const t = (a.spec || {}).target || {};
    if (a.metadata.namespace === dep.metadata.namespace && t.kind === 'Deployment' && t.name === dep.metadata.name) return a;
  }
  return null;
}

function renderDeployments() {
  const tbody = $('deployments').tBodies[0];
  syncRows(tbody, sorted(S.deployments), (d) => {
    const desired = (d.spec || {}).replicas ?? 0;
    const ready = (d.status || {}).readyReplicas ?? 0;
    const a = autoscalerFor(d);
    let as = '–', target = '–';
    if (a) {
      const st = a.status || {};
      as = `${a.spec.minReplicas}–${a.spec.maxReplicas}, wants ${st.desiredReplicas ?? '?'}` + (st.mode ? ` (${st.mode})` : '');
      const m = (st.currentMetrics || []).map((x) => `${x.type} ${+x.current.toFixed(2)} / ${+x.target.toFixed(2)}`);
      target = m.length ? m.join(', ') : 'no figures yet';
    }
    return [d.metadata.namespace, d.metadata.name, [`${ready} / ${desired}`, ready >= desired ? 'ok' : 'warn'], as, target];
  });
}

function renderTimeline() {
  const items = [];
  for (const a of S.autoscalers.values()) {
    const target = `${a.metadata.namespace}/${((a.spec || {}).target || {}).name || a.metadata.name}`;
    for (const d of (a.status || {}).decisions || []) items.push({ ...d, target, source: 'autoscaler' });
  }
  items.push(...S.observed);
  items.sort((x, y) => (x.time < y.time ? 1 : x.time > y.time ? -1 : 0));
  const ol = $('timeline');
  if (!items.length) { ol.replaceChildren(el('li', { class: 'muted' }, 'No scaling yet.')); return; }
  ol.replaceChildren(...items.slice(0, 200).map((d) => el('li', { 'data-target': d.target, 'data-source': d.source },
    el('time', { datetime: d.time }, fmtTime(d.time)),
    el('span', { class: 'change' }, `${d.target}: ${d.from} → ${d.to}`),
    el('span', { class: 'src' }, d.source),
    d.reason)));
}

// Layered layout: a node's column is the longest call chain leading to it (cycles cut).
function layout(nodes, edges) {
  const depth = new Map(nodes.map((n) => [n.id, 0]));
  for (let i = 0; i < nodes.length; i++) {
    let changed = false;
    for (const e of edges) {
      if (e.from === e.to || !depth.has(e.from) || !depth.has(e.to)) continue;
      const d = depth.get(e.from) + 1;
      if (d > depth.get(e.to) && d < nodes.length) { depth.set(e.to, d); changed = true; }
    }
    if (!changed) break;
  }
  const linked = new Set(edges.flatMap((e) => [e.from, e.to]));
  const columns = [];
  for (const n of nodes) {
    const c = linked.has(n.id) ? depth.get(n.id) : 0;
    (columns[c] || (columns[c] = [])).push(n);
  }
  const pos = new Map();
  const W = 160, H = 54, GX = 220, GY = 30;
  let height = 0;
  columns.forEach((col, c) => {
    (col || []).forEach((n, r) => {
      pos.set(n.id, { x: 20 + c * (W + GX), y: 20 + r * (H + GY), w: W, h: H });
      height = Math.max(height, 20 + (r + 1) * (H + GY));
    });
  });
  return { pos, width: 40 + columns.length * (W + GX) - GX, height: Math.max(height, 80) };
}

function renderGraph() {
  const box = $('graph');
  const g = S.graph;
  if (!g || !g.nodes.length) {
    box.replaceChildren(svg('svg', { viewBox: '0 0 400 60', height: 60 }, svg('text', { x: 10, y: 35, class: 'empty' }, g ? 'No services yet.' : 'Loading…')));
    return;
  }
  const { pos, width, height } = layout(g.nodes, g.edges);
  const root = svg('svg', { viewBox: `0 0 ${Math.max(width, 400)} ${height}`, height, role: 'img', 'aria-label': 'service graph' });
  root.append(svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' },
    svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#8c95a8' }))));
  for (const e of g.edges) {
    const a = pos.get(e.from), b = pos.get(e.to);
    if (!a || !b) continue;
    const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2;
    const back = x2 <= x1;
    const d = back
      ? `M ${a.x + a.w / 2} ${a.y + a.h} C ${a.x + a.w / 2} ${a.y + a.h + 40}, ${b.x + b.w / 2} ${b.y + b.h + 40}, ${b.x + b.w / 2} ${b.y + b.h}`
      : `M ${x1} ${y1} C ${x1 + 50} ${y1}, ${x2 - 50} ${y2}, ${x2} ${y2}`;
    const live = e.rps > 0;
    const failing = e.successRate !== null && e.successRate < 0.99;
    const label = live ? `${fmtRps(e.rps)} rps · ${fmtPct(e.successRate)} · p99 ${fmtMs(e.p99Ms)}` : 'idle';
    const mx = back ? (a.x + b.x + a.w) / 2 : (x1 + x2) / 2;
    const my = back ? Math.max(a.y, b.y) + a.h + 34 : (y1 + y2) / 2 - 6;
    root.append(svg('g', { class: `edge${live ? ' live' : ''}${failing ? ' failing' : ''}`, 'data-from': e.from, 'data-to': e.to, 'data-rps': e.rps.toFixed(3) },
      svg('path', { d, 'marker-end': 'url(#arrow)' }),
      svg('text', { x: mx, y: my, 'text-anchor': 'middle', class: 'edge-label' }, label)));
  }
  for (const n of g.nodes) {
    const p = pos.get(n.id);
    const sub = n.kind === 'ingress' ? 'outside the mesh'
      : `${n.ready}/${n.instances} ready · ${fmtRps(n.rps)} rps`;
    const title = n.kind === 'ingress' ? 'ingress' : (n.namespace === 'default' ? n.name : `${n.name}.${n.namespace}`);
    root.append(svg('g', { class: `node ${n.kind}${n.rps > 0 ? '' : ' idle'}`, 'data-node': n.id, transform: `translate(${p.x},${p.y})` },
      svg('title', {}, `${n.id}: ${fmtRps(n.rps)} rps served, success ${fmtPct(n.successRate)}, p99 ${fmtMs(n.p99Ms)}`),
      svg('rect', { width: p.w, height: p.h, rx: 6 }),
      svg('text', { x: 10, y: 21, class: 'name' }, title),
      svg('text', { x: 10, y: 40, class: 'sub' }, sub)));
  }
  box.replaceChildren(root);
  $('graph-meta').textContent = g.windowSeconds > 0 ? `over the last ${g.windowSeconds.toFixed(1)} s` : 'first figures in a moment';
}

function spark(points, w, h) {
  const now = Date.now();
  const vals = points.map((p) => p[1]).filter((v) => v !== null);
  const max = Math.max(1, ...vals);
  let d = '', pen = false;
  for (const [t, v] of points) {
    if (v === null) { pen = false; continue; }
    const x = (w * (t - (now - HISTORY_MS))) / HISTORY_MS;
    const y = h - 2 - ((h - 4) * v) / max;
    d += `${pen ? 'L' : 'M'}${x.toFixed(1)} ${y.toFixed(1)} `;
    pen = true;
  }
  return svg('svg', { width: w, height: h, viewBox: `0 0 ${w} ${h}` },
    svg('line', { x1: 0, x2: w, y1: h - 1, y2: h - 1, stroke: '#d8dce5' }),
    svg('path', { d: d.trim() || 'M0 0' }));
}

function renderLatency() {
  const box = $('latency');
  const ids = [...S.history.keys()].sort();
  if (!ids.length) { box.replaceChildren(el('span', { class: 'muted' }, 'No figures yet.')); return; }
  box.replaceChildren(...ids.map((id) => {
    const h = S.history.get(id);
    const last = [...h].reverse().find((p) => p[1] !== null);
    const max = Math.max(0, ...h.map((p) => p[1] || 0));
    return el('div', { class: 'spark', 'data-service': id },
      el('div', { class: 'label' }, `${id} · p99 ${last ? fmtMs(last[1]) : '–'} (max ${fmtMs(max || null)})`),
      spark(h, 220, 40));
  }));
}

// ---- start ---------------------------------------------------------------------------------

function start(gen) {
  S.instances.clear(); S.deployments.clear(); S.autoscalers.clear();
  S.streams = {};
  for (const what of Object.keys(RENDER)) dirty(what);
  watch('instances', S.instances, null, gen);
  watch('deployments', S.deployments, onDeployment, gen);
  watch('autoscalers', S.autoscalers, null, gen);
  pollGraph(gen);
}

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = $('token-input').value;
    if (t.trim()) { $('token-input').value = ''; signIn(t); }
  });
  $('forget').addEventListener('click', () => { localStorage.removeItem(TOKEN_KEY); needToken(''); });
  const token = tokenFromFragment() || localStorage.getItem(TOKEN_KEY);
  if (token) signIn(token); else needToken('');
});
