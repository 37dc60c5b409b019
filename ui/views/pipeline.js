// A pipeline page: a header with its state and delete button, tabs for its views, and the
// overview: counters, events/s and late events over the last minutes (polled status), the spec
// with operators and key counts, and a box to post test events.
import { get, del, post, pipelinePath } from '../api.js';
import { h, fill, problemBox, busy, confirmAction, jsonBlock, dataTable } from '../dom.js';
import { num, rate, time, lag, duration } from '../format.js';
import { timeChart } from '../charts.js';
import { stateBadge } from './pipelines.js';
import { renderState } from './state.js';
import { renderOutput } from './output.js';
import { renderWindows } from './windows.js';
import { renderCheckpoints } from './checkpoints.js';

const POLL_MS = 2000;
const HISTORY_S = 5 * 60;
/** Status samples per pipeline, kept across tab changes: {t (s), events, late}. */
const history = new Map();

const TABS = [
  ['overview', 'Overview', renderOverview],
  ['state', 'State', renderState],
  ['output', 'Output', renderOutput],
  ['windows', 'Windows', renderWindows],
  ['checkpoints', 'Checkpoints', renderCheckpoints],
];

export function renderPipeline(main, name, tab, ctx) {
  const body = h('div');
  const slot = h('div', { 'aria-live': 'polite' });
  const badge = h('span');
  const remove = h('button.danger', { type: 'button', 'data-needs': 'admin' }, 'Delete pipeline');
  remove.addEventListener('click', () => busy(remove, async () => {
    if (!(await confirmAction(`Delete pipeline "${name}"? Its state, WAL and checkpoints go with it.`, 'Delete'))) return;
    try {
      await del(pipelinePath(name));
      location.hash = '#/';
    } catch (e) {
      fill(slot, problemBox(e));
    }
  }));
  const nav = h('nav.tabs', { 'aria-label': 'Pipeline views' }, TABS.map(([id, label]) =>
    h('a', { href: `#/p/${encodeURIComponent(name)}${id === 'overview' ? '' : `/${id}`}`, 'aria-current': id === tab ? 'page' : null }, label)));
  fill(main, h('div.head', {}, h('h1', {}, name, ' ', badge), remove), slot, nav, body);
  ctx.applyScopes(main);
  const view = TABS.find(([id]) => id === tab);
  if (!view) {
    fill(body, h('p', {}, `No view "${tab}".`));
    return () => {};
  }
  let inner = () => {};
  let stopped = false;
  get(pipelinePath(name)).then((pipeline) => {
    if (stopped) return;
    fill(badge, stateBadge(pipeline.status));
    const done = view[2](body, pipeline, { ...ctx, setBadge: (s) => fill(badge, stateBadge(s)) });
    inner = typeof done === 'function' ? done : () => {};
    ctx.applyScopes(main);
  }).catch((e) => fill(slot, problemBox(e)));
  return () => {
    stopped = true;
    inner();
  };
}

function record(name, status) {
  const samples = history.get(name) ?? [];
  samples.push({ t: Date.now() / 1000, events: status.events, late: status.late_events });
  while (samples.length && samples[0].t < samples[samples.length - 1].t - HISTORY_S) samples.shift();
  history.set(name, samples);
  return samples;
}

/** Per-second rates between consecutive samples: [xs, events/s, late/s]. */
export function rates(samples) {
  const xs = [], ev = [], late = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = Math.max(0.001, samples[i].t - samples[i - 1].t);
    xs.push(samples[i].t);
    ev.push(Math.max(0, (samples[i].events - samples[i - 1].events) / dt));
    late.push(Math.max(0, (samples[i].late - samples[i - 1].late) / dt));
  }
  return [xs, ev, late];
}

function stat(label, value) {
  return h('div.stat', {}, h('div.label', {}, label), h('div.value', {}, value));
}

function renderOverview(el, pipeline, ctx) {
  const name = pipeline.name;
  const stats = h('div.stats', { 'aria-live': 'off' });
  const slot = h('div');
  const evChart = h('div.chart', { id: 'chart-events' });
  const lateChart = h('div.chart', { id: 'chart-late' });
  const keys = dataTable(['Operator', 'Kind', 'Keys'], ['Keys']);
  const { status: _s, ...spec } = pipeline;
  fill(el, slot, stats,
    h('div.charts', {}, evChart, lateChart),
    h('div.cols', {},
      h('section.card', {}, h('h2', {}, 'Operators'),
        h('div.scroll', {}, keys.table)),
      h('section.card', {}, h('h2', {}, 'Spec'), jsonBlock(spec))),
    postEvents(name));
  const charts = [
    timeChart(evChart, 'Events per second', [{ label: 'events/s', unit: 'events/s' }]),
    timeChart(lateChart, 'Late events per second', [{ label: 'late/s', unit: 'late events/s' }]),
  ];
  let timer = null;
  let stopped = false;

  function show(status) {
    const samples = record(name, status);
    const [xs, ev, late] = rates(samples);
    const now = Date.now();
    const cp = status.last_checkpoint;
    fill(stats,
      stat('Events', num(status.events)),
      stat('Events/s now', rate(ev.length ? ev[ev.length - 1] : null)),
      stat('Late events', num(status.late_events)),
      stat('Watermark', time(status.watermark)),
      stat('Watermark lag', lag(status.watermark, now)),
      stat('WAL offset', num(status.wal_offset)),
      stat('Last checkpoint', cp ? [`#${cp.id} ${cp.status}, `, time(cp.completed_at ?? cp.started_at), ` (${duration(cp.duration_ms)})`] : '–'));
    if (status.error) fill(slot, problemBox({ title: 'Pipeline failed', detail: status.error }));
    charts[0].update(xs, ev);
    charts[1].update(xs, late);
    keys.fill(pipeline.operators.map((op) => h('tr', {},
      h('th', { scope: 'row' }, op.name), h('td', {}, op.kind), h('td.n', {}, num(status.keys?.[op.name] ?? 0)))));
    ctx.setBadge(status);
  }

  async function poll() {
    try {
      const p = await get(pipelinePath(name));
      if (!stopped) show(p.status);
    } catch (e) {
      if (!stopped) fill(slot, problemBox(e));
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  show(pipeline.status);
  timer = setTimeout(poll, POLL_MS);
  return () => {
    stopped = true;
    clearTimeout(timer);
    charts.forEach((c) => c.destroy());
  };
}

/** The body's content type: one JSON document, else NDJSON (one object per line). */
export function contentTypeOf(text) {
  try {
    JSON.parse(text);
    return 'application/json';
  } catch {
    return 'application/x-ndjson';
  }
}

function postEvents(name) {
  const now = Date.now();
  const sample = [
    { user_id: 'u1', page: '/home', ts: now },
    { user_id: 'u2', page: '/home', ts: now + 1 },
    { user_id: 'u1', page: '/cart', ts: now + 2 },
  ].map((e) => JSON.stringify(e)).join('\n');
  const text = h('textarea', { id: 'events-body', rows: 5, spellcheck: 'false', 'aria-describedby': 'events-help' }, sample);
  const answer = h('div', { 'aria-live': 'polite', id: 'events-answer' });
  const send = h('button', { type: 'submit' }, 'Post events');
  const form = h('form.card', { 'data-needs': 'ingest', onsubmit: (e) => {
    e.preventDefault();
    busy(send, async () => {
      fill(answer);
      try {
        const body = text.value.trim();
        const res = await post(pipelinePath(name, '/events'), body, { raw: true, contentType: contentTypeOf(body) });
        fill(answer, h('p.ok', {}, `Accepted ${num(res.accepted)} events (offsets ${num(res.first_offset)}–${num(res.last_offset)}).`), jsonBlock(res));
      } catch (err) {
        fill(answer, problemBox(err));
      }
    });
  } },
  h('h2', {}, h('label', { for: 'events-body' }, 'Post test events')),
  h('p.muted', { id: 'events-help' }, 'One JSON object, a JSON array, or NDJSON (one object per line).'),
  text, h('div.row', {}, send), answer);
  return form;
}
