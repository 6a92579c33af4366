// The Faultline dashboard: a small page with no dependencies, served by `faultctl dashboard`.
// Every section renders on its own and shows its error in place, so odd data never blanks the
// page. All text goes in through textContent, never as HTML.
'use strict';

// The token arrives once in the URL's fragment (never sent to a server); it is kept in this
// tab's sessionStorage (this origin and port only) and the address bar is cleaned.
const TOKEN = (() => {
  const m = /(?:^#|&)token=([0-9a-f]{16,})/.exec(location.hash);
  if (m) {
    sessionStorage.setItem('faultline-token', m[1]);
    window.history.replaceState(null, '', location.pathname + '#/fleet');
  }
  return sessionStorage.getItem('faultline-token') || '';
})();
const main = document.getElementById('main');
let session = null;
let cleanups = [];

const canOperate = () => !!session && (session.role === 'operator' || session.role === 'admin');
const canAdmin = () => !!session && session.role === 'admin';

// ---- DOM and API helpers -------------------------------------------------------------------

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = String(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === undefined || kid === null || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

function svg(tag, attrs, ...kids) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  for (const kid of kids.flat(Infinity)) if (kid) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}

async function api(method, path, body) {
  const opts = { method, headers: { 'X-Faultline-Token': TOKEN }, credentials: 'omit' };
  if (method !== 'GET') {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body || {});
  }
  const r = await fetch(path, opts);
  let data;
  try { data = await r.json(); } catch (_) { data = { error: 'HTTP ' + r.status }; }
  if (!r.ok) {
    const e = new Error(data && data.error ? data.error : 'HTTP ' + r.status);
    e.status = r.status;
    throw e;
  }
  return data;
}

function errorBox(e) {
  const msg = e && e.message ? e.message : String(e);
  return h('div', { class: 'error', role: 'alert', 'data-testid': 'error' }, msg);
}

// Builds one section; an exception shows in place instead of taking the page down.
function section(build) {
  const box = h('div');
  try {
    const el = build();
    if (el) box.append(el);
  } catch (e) {
    box.append(errorBox(e));
  }
  return box;
}

function every(ms, fn) {
  const id = setInterval(fn, ms);
  cleanups.push(() => clearInterval(id));
}

const fmtTime = (ms) => (ms > 0 ? new Date(ms).toLocaleTimeString() : '-');
const fmtAge = (ms) => {
  if (!(ms > 0)) return '-';
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 90) return s + ' s';
  if (s < 5400) return Math.round(s / 60) + ' min';
  if (s < 172800) return Math.round(s / 3600) + ' h';
  return Math.round(s / 86400) + ' d';
};
const fmtDur = (ms) => (ms >= 1000 ? (ms / 1000).toFixed(ms >= 10000 ? 0 : 1) + ' s' : Math.round(ms || 0) + ' ms');
const fmtNum = (v) => (typeof v === 'number' && isFinite(v) ? +v.toPrecision(4) + '' : '-');
const pct = (v) => (typeof v === 'number' && isFinite(v) ? (v * 100).toFixed(1) + '%' : '-');
const phaseEl = (p) => h('span', { class: 'phase phase-' + p, 'data-testid': 'phase', text: p || '-' });

function table(headers, rows, attrs) {
  return h('table', attrs || {},
    h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col', text: t })))),
    h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: headers.length, class: 'muted', text: 'none' }))));
}

function kv(pairs) {
  return h('dl', { class: 'kv' }, pairs.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', {}, v)]));
}

// ---- Charts --------------------------------------------------------------------------------

// The threshold a guard's description states ("... above 0.05 for 10s").
function threshold(description) {
  const m = /\b(?:above|below|over|under|>=?|<=?)\s*(-?\d+(?:\.\d+)?(?:e-?\d+)?)/i.exec(description || '');
  return m ? parseFloat(m[1]) : null;
}

function chart(points, opts) {
  const W = opts.width || 560, H = opts.height || 140, pad = 28;
  const ys = points.map((p) => p.v).filter((v) => isFinite(v));
  const markers = opts.markers || [];
  const ts = points.map((p) => p.t).concat(markers.map((m) => m.t));
  const x0 = Math.min(...ts), x1 = Math.max(...ts, x0 + 1);
  let y0 = Math.min(0, ...ys), y1 = Math.max(...ys, y0 + 1e-9);
  // A threshold far above or below the values would flatten them: it is then named, not drawn.
  let lim = opts.threshold;
  const span = y1 - y0 || Math.abs(y1) || 1;
  const drawn = lim !== null && lim !== undefined && lim >= y0 - 3 * span && lim <= y1 + 3 * span;
  if (drawn) { y0 = Math.min(y0, lim); y1 = Math.max(y1, lim); }
  if (y1 === y0) y1 = y0 + 1;
  const X = (t) => pad + ((t - x0) / (x1 - x0)) * (W - 2 * pad);
  const Y = (v) => H - pad - ((v - y0) / (y1 - y0)) * (H - 2 * pad);
  const path = points.filter((p) => isFinite(p.v)).map((p, i) => (i ? 'L' : 'M') + X(p.t).toFixed(1) + ' ' + Y(p.v).toFixed(1)).join(' ');
  const dots = points.length < 3 ? points.filter((p) => isFinite(p.v)).map((p) => svg('circle', { class: 'dot', cx: X(p.t), cy: Y(p.v), r: 2.5 })) : [];
  return svg('svg', { class: 'chart', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': opts.label || 'chart' },
    drawn ? svg('line', { class: 'threshold', x1: pad, x2: W - pad, y1: Y(lim), y2: Y(lim) }) : null,
    !drawn && lim !== null && lim !== undefined ? svg('text', { x: W - pad - 150, y: 12 }, 'threshold ' + fmtNum(lim) + ' (off scale)') : null,
    markers.map((m) => [svg('line', { class: 'marker', x1: X(m.t), x2: X(m.t), y1: pad / 2, y2: H - pad }),
      svg('text', { x: X(m.t) + 2, y: pad / 2 + 8 }, m.label)]),
    path ? svg('path', { class: 'line', d: path }) : null,
    dots,
    svg('text', { x: 2, y: Y(y1) + 4 }, fmtNum(y1)),
    svg('text', { x: 2, y: Y(y0) }, fmtNum(y0)),
    svg('text', { x: pad, y: H - 8 }, fmtTime(x0)),
    svg('text', { x: W - pad - 50, y: H - 8 }, fmtTime(x1)));
}

// One bar per target from applied to reverted (or now), on the experiment's time axis.
function timeline(e) {
  const list = (e.targets || []).filter((t) => t.applied_unix_ms > 0);
  if (!list.length) return h('p', { class: 'muted', text: 'no fault was applied' });
  const W = 560, row = 18, pad = 28, H = pad + row * list.length + 8;
  const end = (t) => (t.reverted_unix_ms > 0 ? t.reverted_unix_ms : Date.now());
  const x0 = Math.min(e.started_unix_ms || Infinity, ...list.map((t) => t.applied_unix_ms));
  const x1 = Math.max(x0 + 1, e.ended_unix_ms || 0, ...list.map(end));
  const X = (t) => 110 + ((t - x0) / (x1 - x0)) * (W - 110 - pad);
  return svg('svg', { class: 'chart', width: W, height: H, viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'faults applied and reverted' },
    list.map((t, i) => [
      svg('text', { x: 4, y: pad + i * row + 10 }, t.agent),
      svg('rect', { class: 'bar state-' + t.state, x: X(t.applied_unix_ms), y: pad + i * row, width: Math.max(2, X(end(t)) - X(t.applied_unix_ms)), height: row - 6 }),
    ]),
    faultMarkers(e).map((m) => svg('text', { x: X(m.t), y: 12 }, m.label)),
    svg('text', { x: 110, y: H - 2 }, fmtTime(x0)),
    svg('text', { x: W - pad - 50, y: H - 2 }, fmtTime(x1)));
}

function spark(values) {
  const W = 80, H = 20, v = values.filter((x) => isFinite(x));
  if (v.length < 2) return h('span', { class: 'muted', text: '' });
  const hi = Math.max(...v, 1e-9);
  const d = v.map((y, i) => (i ? 'L' : 'M') + ((i / (v.length - 1)) * W).toFixed(1) + ' ' + (H - (y / hi) * (H - 2) - 1).toFixed(1)).join(' ');
  return svg('svg', { class: 'spark', width: W, height: H, 'aria-hidden': 'true' }, svg('path', { class: 'line', d }));
}

// ---- Fleet ---------------------------------------------------------------------------------

const agentHistory = new Map();

function fleetPage() {
  const body = h('div'), controls = h('div', { class: 'row' }), status = h('div');
  main.append(h('h1', { text: 'Fleet' }), controls, status, body);
  const load = async () => {
    try {
      const [agents, policy] = await Promise.all([api('GET', '/api/agents'), api('GET', '/api/policy')]);
      status.replaceChildren(policy.halted
        ? h('div', { class: 'error', 'data-testid': 'halted' }, 'Fleet halted: ' + (policy.halted_reason || ''))
        : '');
      controls.replaceChildren(section(() => fleetControls(policy, load)));
      body.replaceChildren(section(() => fleetTable(agents.agents || [])));
    } catch (e) {
      body.replaceChildren(errorBox(e));
    }
  };
  load();
  every(2000, load);
}

function fleetControls(policy, reload) {
  if (!canAdmin()) return null;
  const act = (what) => async () => {
    try {
      if (what === 'halt' && !confirm('Revert every fault on every agent and refuse new experiments?')) return;
      await api('POST', '/api/fleet/' + what, { reason: 'from the dashboard' });
      reload();
    } catch (e) { alert(e.message); }
  };
  return policy.halted
    ? h('button', { class: 'primary', onclick: act('resume'), 'data-testid': 'resume', text: 'Resume' })
    : h('button', { class: 'danger', onclick: act('halt'), 'data-testid': 'halt', text: 'Halt all' });
}

function fleetTable(agents) {
  const rows = agents.map((a) => {
    const t = a.telemetry || {};
    const mem = t.memory_total_bytes > 0 ? t.memory_used_bytes / t.memory_total_bytes : NaN;
    const hist = agentHistory.get(a.node_name) || [];
    if (t.timestamp_unix_ms && (!hist.length || hist[hist.length - 1].at !== t.timestamp_unix_ms)) {
      hist.push({ at: t.timestamp_unix_ms, cpu: t.cpu_busy_ratio, mem });
      if (hist.length > 60) hist.shift();
      agentHistory.set(a.node_name, hist);
    }
    const held = a.held_faults || [];
    return h('tr', { 'data-testid': 'agent-row', 'data-agent': a.node_name },
      h('td', { text: a.node_name }),
      h('td', { class: a.connected ? 'ok' : 'bad', text: a.connected ? 'connected' : 'disconnected' }),
      h('td', {}, Object.entries(a.labels || {}).map(([k, v]) => h('span', { class: 'tag', text: k + '=' + v }))),
      h('td', { title: held.map((f) => (f.spec && f.spec.kind) || '?').join(', '), text: String(held.length) }),
      h('td', {}, pct(t.cpu_busy_ratio), ' ', spark(hist.map((x) => x.cpu))),
      h('td', {}, pct(mem), ' ', spark(hist.map((x) => x.mem))),
      h('td', { text: fmtAge(a.last_seen_unix_ms) }));
  });
  return table(['Agent', 'Status', 'Labels', 'Faults held', 'CPU', 'Memory', 'Last seen'], rows, { 'data-testid': 'agents' });
}

// ---- Experiments ---------------------------------------------------------------------------

const PHASES = ['', 'pending', 'running', 'completed', 'aborted', 'failed', 'interrupted'];

function experimentsPage(params) {
  const phase = params.get('phase') || '';
  const select = h('select', { 'aria-label': 'Phase', 'data-testid': 'phase-filter',
    onchange: (e) => { location.hash = '#/experiments' + (e.target.value ? '?phase=' + e.target.value : ''); } },
  PHASES.map((p) => h('option', { value: p, selected: p === phase, text: p || 'all phases' })));
  const body = h('div');
  main.append(h('h1', { text: 'Experiments' }), h('div', { class: 'row' }, select), body);
  const load = async () => {
    try {
      const r = await api('GET', '/api/experiments' + (phase ? '?phase=' + encodeURIComponent(phase) : ''));
      body.replaceChildren(section(() => table(['Name', 'Phase', 'Verdict', 'Targets', 'Created by', 'Age'],
        (r.experiments || []).map((e) => h('tr', { 'data-testid': 'experiment-row' },
          h('td', {}, h('a', { href: '#/experiment/' + encodeURIComponent(e.name), text: e.name })),
          h('td', {}, phaseEl(e.phase)),
          h('td', { text: e.verdict_reason || '' }),
          h('td', { text: String((e.targets || []).length) }),
          h('td', { text: e.created_by || '' }),
          h('td', { text: fmtAge(e.created_unix_ms) }))))));
    } catch (e) {
      body.replaceChildren(errorBox(e));
    }
  };
  load();
  every(3000, load);
}

// ---- One experiment ------------------------------------------------------------------------

function experimentPage(name) {
  const samples = new Map();
  let current = null;
  const head = h('div'), live = h('div', { 'data-testid': 'live' }), body = h('div');
  main.append(head, live, body);
  const addSamples = (list) => {
    for (const s of list || []) {
      const key = s.guard + '@' + s.at_unix_ms;
      if (!samples.has(key)) samples.set(key, s);
    }
  };
  const render = (msg) => {
    const e = current;
    head.replaceChildren(section(() => experimentHead(e, name)));
    live.replaceChildren(section(() => liveGuards(e, samples, msg)));
    body.replaceChildren(
      section(() => plan(e.plan)),
      section(() => targets(e.targets || [])),
      section(() => guardCharts(e, samples)),
      section(() => logList(e.log || [])),
      section(() => h('div', {}, h('h2', { text: 'Document' }), h('pre', { text: e.document || '' }))));
  };
  api('GET', '/api/experiments/' + encodeURIComponent(name)).then((e) => {
    current = e;
    addSamples(e.guard_timeline);
    render();
    const es = new EventSource('/api/experiments/' + encodeURIComponent(name) + '/watch?token=' + TOKEN);
    cleanups.push(() => es.close());
    es.onmessage = (m) => {
      try {
        const ev = JSON.parse(m.data);
        if (ev.experiment) {
          const keep = current.log && ev.experiment.log && ev.experiment.log.length < current.log.length;
          current = Object.assign({}, current, ev.experiment, keep ? { log: current.log } : {});
        }
        addSamples(ev.latest_guards);
        addSamples(ev.experiment && ev.experiment.guard_timeline);
        render(ev.message);
      } catch (err) {
        live.replaceChildren(errorBox(err));
      }
    };
    es.addEventListener('end', () => es.close());
    es.addEventListener('error', () => {
      if (es.readyState === EventSource.CLOSED) return;
      // The stream ended with the experiment (or the dashboard stopped): refresh once.
      api('GET', '/api/experiments/' + encodeURIComponent(name)).then((e) => { current = e; addSamples(e.guard_timeline); render(); }).catch(() => {});
    });
  }).catch((e) => head.replaceChildren(h('h1', { text: name }), errorBox(e)));
}

function experimentHead(e, name) {
  const running = e.phase === 'running' || e.phase === 'pending';
  const msg = h('div');
  const act = (what, reason) => async () => {
    try {
      await api('POST', `/api/experiments/${encodeURIComponent(name)}/${what}`, reason ? { reason } : {});
      msg.replaceChildren(h('div', { class: 'notice', 'data-testid': 'notice', text: what === 'abort' ? 'Abort sent.' : 'Started.' }));
    } catch (err) {
      msg.replaceChildren(errorBox(err));
    }
  };
  return h('div', {},
    h('h1', {}, e.name || name, ' ', phaseEl(e.phase)),
    h('div', { class: 'row' },
      canOperate() && running ? h('button', { class: 'danger', 'data-testid': 'abort', onclick: act('abort', 'aborted from the dashboard'), text: 'Abort' }) : null,
      canOperate() && e.phase === 'pending' ? h('button', { class: 'primary', 'data-testid': 'start', onclick: act('start'), text: 'Start' }) : null,
      h('a', { href: '#/report/' + encodeURIComponent(e.name || name), text: 'Report' })),
    msg,
    kv([
      ['Verdict', e.verdict_reason || '-'],
      ['Created', `${fmtTime(e.created_unix_ms)} by ${e.created_by || '-'}`],
      ['Started', fmtTime(e.started_unix_ms)],
      ['Ended', fmtTime(e.ended_unix_ms)],
      ['Duration', fmtDur(e.duration_ms)],
      ['Abort', e.abort ? `${e.abort.trigger} by ${e.abort.by}: ${e.abort.reason}` + (e.abort.latency_ms ? ` (all reverted ${e.abort.latency_ms} ms after the trigger)` : '') : '-'],
    ]));
}

function liveGuards(e, samples, msg) {
  const latest = new Map();
  for (const s of samples.values()) {
    const prev = latest.get(s.guard);
    if (!prev || prev.at_unix_ms <= s.at_unix_ms) latest.set(s.guard, s);
  }
  return h('div', {},
    msg ? h('div', { class: 'muted', text: msg }) : null,
    h('h2', { text: 'Guards' }),
    table(['Guard', 'Value', 'Outcome', 'Detail', 'At'], [...latest.values()].map((s) => h('tr', { 'data-testid': 'guard-row' },
      h('td', { text: s.guard }),
      h('td', { 'data-testid': 'guard-value', text: fmtNum(s.value) }),
      h('td', { class: s.breached ? 'bad' : 'ok', text: s.outcome || (s.breached ? 'breached' : 'ok') }),
      h('td', { text: s.error || s.detail || '' }),
      h('td', { text: fmtTime(s.at_unix_ms) })))));
}

function plan(p) {
  if (!p) return null;
  return h('div', {},
    h('h2', { text: 'Plan' }),
    h('p', { class: 'muted', text: p.selection || '' }),
    table(['Selected', 'Target'], (p.selected || []).map((s) => h('tr', { 'data-testid': 'selected-row' },
      h('td', { text: s.agent }), h('td', { text: s.description || '' })))),
    (p.excluded || []).length ? h('h2', { text: 'Excluded' }) : null,
    (p.excluded || []).length ? table(['Agent', 'Target', 'Why'], p.excluded.map((x) => h('tr', {},
      h('td', { text: x.pod ? `${x.pod} (${x.agent})` : x.agent }), h('td', { text: x.description || '' }), h('td', { text: x.reason || '' })))) : null,
    h('p', { class: 'muted', text: 'Faults: ' + (p.faults || []).map((f) => (f && f.kind) || '?').join(', ') }));
}

function targets(list) {
  return h('div', {},
    h('h2', { text: 'Targets and faults' }),
    table(['Agent', 'Fault', 'State', 'Applied', 'Reverted', 'Reason', 'Error'], list.map((t) => h('tr', { 'data-testid': 'target-row' },
      h('td', { text: t.agent }),
      h('td', { class: 'muted', text: t.fault_id }),
      h('td', { class: 'state state-' + t.state, 'data-testid': 'target-state', text: t.state }),
      h('td', { text: fmtTime(t.applied_unix_ms) }),
      h('td', { text: fmtTime(t.reverted_unix_ms) }),
      h('td', { text: t.revert_reason || '' }),
      h('td', { class: 'bad', text: t.error || '' })))));
}

function faultMarkers(e) {
  const applied = (e.targets || []).map((t) => t.applied_unix_ms).filter((x) => x > 0);
  const reverted = (e.targets || []).map((t) => t.reverted_unix_ms).filter((x) => x > 0);
  const m = [];
  if (applied.length) m.push({ t: Math.min(...applied), label: 'applied' });
  if (reverted.length) m.push({ t: Math.max(...reverted), label: 'reverted' });
  if (e.abort && e.abort.triggered_unix_ms > 0) m.push({ t: e.abort.triggered_unix_ms, label: 'abort' });
  return m;
}

function guardCharts(e, samples) {
  const guards = e.guards || [];
  if (!guards.length) return null;
  return h('div', {}, h('h2', { text: 'Guard values' }), guards.map((g) => {
    const pts = [...samples.values()].filter((s) => s.guard === g.name && s.value !== null)
      .map((s) => ({ t: s.at_unix_ms, v: s.value })).sort((a, b) => a.t - b.t);
    return h('div', { 'data-testid': 'guard-chart' },
      h('div', { text: `${g.name} (${g.type}): ${g.description || ''}` }),
      pts.length ? chart(pts, { threshold: threshold(g.description), markers: faultMarkers(e), label: g.name }) : h('p', { class: 'muted', text: 'no values yet' }));
  }));
}

function logList(log) {
  return h('div', {}, h('h2', { text: 'Log' }),
    h('pre', { 'data-testid': 'log', text: log.map((l) => `${fmtTime(l.at_unix_ms)}  ${l.message}`).join('\n') }));
}

// ---- Report --------------------------------------------------------------------------------

function reportPage(name) {
  const body = h('div');
  main.append(h('h1', {}, 'Report: ', h('a', { href: '#/experiment/' + encodeURIComponent(name), text: name })), body);
  Promise.all([api('GET', `/api/experiments/${encodeURIComponent(name)}/report`), api('GET', '/api/experiments/' + encodeURIComponent(name))])
    .then(([r, e]) => {
      const samples = new Map((e.guard_timeline || []).map((s) => [s.guard + '@' + s.at_unix_ms, s]));
      const findings = Array.isArray(e.findings) ? e.findings : [];
      const hyp = e.hypothesis;
      body.replaceChildren(
        section(() => kv([
          ['Phase', phaseEl(e.phase)],
          ['Verdict', e.verdict_reason || '-'],
          ['Abort latency', e.abort && e.abort.latency_ms ? e.abort.latency_ms + ' ms' : '-'],
          ['Hypothesis', hyp ? h('span', { 'data-testid': 'hypothesis', class: hyp.verdict === 'passed' ? 'ok' : (hyp.verdict === 'failed' ? 'bad' : ''), text: `${hyp.verdict || '-'}${hyp.reason ? ': ' + hyp.reason : ''}` }) : '-'],
        ])),
        section(() => findings.length ? h('div', {}, h('h2', { text: 'Findings' }),
          h('ul', { 'data-testid': 'findings' }, findings.map((f) => h('li', { text: typeof f === 'string' ? f : JSON.stringify(f) })))) : null),
        section(() => hyp && (hyp.checks || []).length ? h('div', {}, h('h2', { text: 'Steady-state checks' }),
          table(['Check', 'Held before', 'Before', 'Recovered after'], hyp.checks.map((c) => h('tr', {},
            h('td', { text: c.name }), h('td', { class: c.held_before ? 'ok' : 'bad', text: c.held_before ? 'yes' : 'no' }),
            h('td', { text: c.before_detail || fmtNum(c.before_value) }),
            h('td', { text: c.recovery_ms > 0 ? fmtDur(c.recovery_ms) : (c.last_detail || '-') }))))) : null),
        section(() => (e.impact || []).length ? h('div', {}, h('h2', { text: 'Impact' }),
          table(['Guard or check', 'Before', 'During', 'After', 'First deviation', 'Recovery'], e.impact.map((i) => h('tr', {},
            h('td', { text: `${i.name} (${i.type || i.source || ''})` }), h('td', { text: fmtNum(i.before) }),
            h('td', { class: i.deviated ? 'bad' : '', text: fmtNum(i.during) }), h('td', { text: fmtNum(i.after) }),
            h('td', { text: i.deviated ? fmtDur(i.deviation_ms) + ' after the first fault' : 'none' }),
            h('td', { text: i.recovery_ms > 0 ? fmtDur(i.recovery_ms) + ' after the revert' : '-' }))))) : null),
        section(() => h('div', {}, h('h2', { text: 'Timeline' }), timeline(e))),
        section(() => targets(e.targets || [])),
        section(() => guardCharts(e, samples)),
        section(() => h('div', {}, h('h2', { text: 'Report' }), h('pre', { 'data-testid': 'report-markdown', text: r.markdown || '' }))));
    })
    .catch((err) => body.replaceChildren(errorBox(err)));
}

// ---- Schedules and workflows --------------------------------------------------------------

function schedulesPage() {
  const body = h('div');
  main.append(h('h1', { text: 'Schedules' }), body);
  const act = (name, what) => async () => {
    try { await api('POST', `/api/schedules/${encodeURIComponent(name)}/${what}`, {}); load(); } catch (e) { body.prepend(errorBox(e)); }
  };
  const load = async () => {
    try {
      const r = await api('GET', '/api/schedules');
      body.replaceChildren(section(() => table(['Name', 'Schedule', 'Runs', 'Next fire', 'Last runs', 'Skipped', ''],
        (r.schedules || []).map((s) => h('tr', { 'data-testid': 'schedule-row' },
          h('td', { text: s.name }),
          h('td', { text: `${s.schedule} (${s.time_zone || 'UTC'}, ${s.concurrency_policy || 'Forbid'})` }),
          h('td', { text: `${s.runs_total || 0} ${s.run_kind || ''}` }),
          h('td', { text: s.suspended ? 'suspended' : fmtTime(s.next_fire_unix_ms) }),
          h('td', {}, (s.runs || []).slice(-3).map((run) => h('div', {},
            run.kind === 'workflow' ? h('a', { href: '#/workflow/' + encodeURIComponent(run.name), text: run.name }) : h('a', { href: '#/experiment/' + encodeURIComponent(run.name), text: run.name }),
            ' ', phaseEl(run.phase)))),
          h('td', { text: `${s.skipped_total || 0}` + ((s.skipped || []).length ? ': ' + s.skipped[s.skipped.length - 1].reason : '') }),
          h('td', {}, canOperate() ? [
            s.suspended ? h('button', { onclick: act(s.name, 'resume'), text: 'Resume' }) : h('button', { onclick: act(s.name, 'suspend'), text: 'Suspend' }),
            ' ', h('button', { onclick: act(s.name, 'trigger'), text: 'Run now' })] : null))))));
    } catch (e) {
      body.replaceChildren(errorBox(e));
    }
  };
  load();
  every(3000, load);
}

function workflowsPage() {
  const body = h('div');
  main.append(h('h1', { text: 'Workflows' }), body);
  const load = async () => {
    try {
      const r = await api('GET', '/api/workflows');
      body.replaceChildren(section(() => table(['Name', 'Phase', 'Steps', 'Reason', 'Created by', 'Age'],
        (r.workflows || []).map((w) => h('tr', { 'data-testid': 'workflow-row' },
          h('td', {}, h('a', { href: '#/workflow/' + encodeURIComponent(w.name), text: w.name })),
          h('td', {}, phaseEl(w.phase)),
          h('td', { text: (w.steps || []).map((s) => `${s.name}: ${s.state}`).join(', ') }),
          h('td', { text: w.reason || '' }),
          h('td', { text: w.created_by || '' }),
          h('td', { text: fmtAge(w.created_unix_ms) }))))));
    } catch (e) {
      body.replaceChildren(errorBox(e));
    }
  };
  load();
  every(3000, load);
}

function workflowPage(name) {
  const body = h('div'), msg = h('div');
  main.append(h('h1', { text: 'Workflow ' + name }), msg, body);
  const post = (path, what) => async () => {
    try { await api('POST', path, what === 'abort' ? { reason: 'aborted from the dashboard' } : {}); load(); } catch (e) { msg.replaceChildren(errorBox(e)); }
  };
  const load = async () => {
    try {
      const w = await api('GET', '/api/workflows/' + encodeURIComponent(name));
      const live = w.phase === 'running' || w.phase === 'pending';
      body.replaceChildren(
        section(() => h('div', { class: 'row' }, phaseEl(w.phase), ' ', w.reason || '',
          canOperate() && live ? h('button', { class: 'danger', 'data-testid': 'workflow-abort', onclick: post(`/api/workflows/${encodeURIComponent(name)}/abort`, 'abort'), text: 'Abort workflow' }) : null)),
        section(() => table(['Step', 'Kind', 'State', 'Started', 'Ended', 'Experiment', 'Message', ''], (w.steps || []).map((s) => h('tr', { 'data-testid': 'step-row' },
          h('td', { text: s.parent ? `${s.parent} / ${s.name}` : s.name }),
          h('td', { text: s.kind }),
          h('td', { class: 'state state-' + s.state, text: s.state }),
          h('td', { text: fmtTime(s.started_unix_ms) }),
          h('td', { text: fmtTime(s.ended_unix_ms) }),
          h('td', {}, s.experiment ? h('a', { href: '#/experiment/' + encodeURIComponent(s.experiment), text: s.experiment }) : ''),
          h('td', { text: s.message || '' }),
          h('td', {}, canOperate() && s.state === 'awaiting-approval'
            ? h('button', { class: 'primary', onclick: post(`/api/workflows/${encodeURIComponent(name)}/approve/${encodeURIComponent(s.name)}`), text: 'Approve' }) : null))))),
        section(() => logList(w.log || [])));
    } catch (e) {
      body.replaceChildren(errorBox(e));
    }
  };
  load();
  every(2000, load);
}

// ---- Create --------------------------------------------------------------------------------

const SAMPLE = `apiVersion: faultline.dev/v1
kind: Experiment
metadata:
  name: cpu-burn
spec:
  duration: 2m
  targets:
    agents: {labels: {}}
    mode: one
  faults:
    - {kind: cpu, load: 50, workers: 1}
  guardInterval: 1s
  guards:
    - {name: cpu, telemetry: {metric: cpu_busy_ratio, above: 0.95, for: 5s}}
`;

function createPage() {
  if (!canOperate()) {
    main.append(h('h1', { text: 'Create' }), h('div', { class: 'notice', text: `${session ? session.identity : 'This identity'} may not create experiments.` }));
    return;
  }
  const area = h('textarea', { 'aria-label': 'Experiment document', 'data-testid': 'document', spellcheck: 'false' });
  area.value = SAMPLE;
  const out = h('div', { 'data-testid': 'create-result' });
  const send = (dryRun) => async () => {
    out.replaceChildren(h('p', { class: 'muted', text: dryRun ? 'Planning...' : 'Creating...' }));
    try {
      const r = await api('POST', '/api/experiments', { document: area.value, dryRun, start: !dryRun });
      if (dryRun) out.replaceChildren(section(() => plan(r.plan)));
      else location.hash = '#/experiment/' + encodeURIComponent(r.experiment.name);
    } catch (e) {
      out.replaceChildren(errorBox(e));
    }
  };
  main.append(h('h1', { text: 'Create an experiment' }), area,
    h('div', { class: 'row' },
      h('button', { 'data-testid': 'dry-run', onclick: send(true), text: 'Dry run' }),
      h('button', { class: 'primary', 'data-testid': 'create-start', onclick: send(false), text: 'Create and start' })),
    out);
}

// ---- Audit and policy ----------------------------------------------------------------------

function auditPage() {
  const body = h('div');
  main.append(h('h1', { text: 'Audit log' }), body);
  api('GET', '/api/audit?limit=200').then((r) => body.replaceChildren(section(() => table(['At', 'Identity', 'Action', 'Detail', 'Allowed'],
    (r.entries || []).map((e) => h('tr', {}, h('td', { text: new Date(e.at_unix_ms).toLocaleString() }), h('td', { text: e.identity }),
      h('td', { text: e.action }), h('td', { text: e.detail }), h('td', { class: e.allowed ? 'ok' : 'bad', text: e.allowed ? 'yes' : 'refused' })))))))
    .catch((e) => body.replaceChildren(errorBox(e)));
}

function policyPage() {
  const body = h('div');
  main.append(h('h1', { text: 'Policy' }), body);
  api('GET', '/api/policy').then((p) => body.replaceChildren(section(() => kv([
    ['Fleet under fault at most', fmtNum(p.max_fleet_percent_under_fault) + '%'],
    ['Concurrent experiments at most', String(p.max_concurrent_experiments)],
    ['Longest experiment', fmtDur(p.max_duration_ms)],
    ['Allowed fault kinds', (p.allowed_fault_kinds || []).join(', ') || 'all'],
    ['Protected agent labels', Object.entries(p.protected_agent_labels || {}).map(([k, v]) => k + '=' + v).join(', ') || '-'],
    ['Protected namespaces', (p.protected_namespaces || []).join(', ') || '-'],
    ['Pods per namespace at most', fmtNum(p.max_pod_percent_per_namespace) + '%'],
    ['Agent lease', fmtDur(p.lease_ms)],
    ['Halted', p.halted ? 'yes: ' + (p.halted_reason || '') : 'no'],
  ]))))
    .catch((e) => body.replaceChildren(errorBox(e)));
}

// ---- Router --------------------------------------------------------------------------------

function route() {
  for (const c of cleanups) c();
  cleanups = [];
  main.replaceChildren();
  try {
    const hash = location.hash.replace(/^#\/?/, '') || 'fleet';
    const [pathPart, queryPart] = hash.split('?');
    const [page, arg] = pathPart.split('/').map((s) => (s ? decodeURIComponent(s) : s));
    const params = new URLSearchParams(queryPart || '');
    for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.nav === page);
    switch (page) {
      case 'fleet': fleetPage(); break;
      case 'experiments': experimentsPage(params); break;
      case 'experiment': experimentPage(arg || ''); break;
      case 'report': reportPage(arg || ''); break;
      case 'create': createPage(); break;
      case 'schedules': schedulesPage(); break;
      case 'workflows': workflowsPage(); break;
      case 'workflow': workflowPage(arg || ''); break;
      case 'audit': auditPage(); break;
      case 'policy': policyPage(); break;
      default: main.append(h('h1', { text: 'Not found' }), h('p', {}, h('a', { href: '#/fleet', text: 'Fleet' })));
    }
  } catch (e) {
    main.append(errorBox(e));
  }
  main.focus({ preventScroll: true });
}

if (!TOKEN) main.append(errorBox(new Error('This page needs the token from the URL `faultctl dashboard` printed; open that URL.')));
api('GET', '/api/session').then((s) => {
  session = s;
  document.getElementById('who').textContent = `${s.identity} @ ${s.coordinator}`;
  for (const a of document.querySelectorAll('[data-needs="operate"]')) a.hidden = !canOperate();
}).catch((e) => main.prepend(errorBox(e))).finally(() => {
  window.addEventListener('hashchange', route);
  route();
});
