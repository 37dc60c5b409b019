// The pipelines view: every pipeline with its live counters, polled every 2 s; events/s is the
// difference of `events` between two polls.
import { get } from '../api.js';
import { h, fill, problemBox, dataTable, repeat } from '../dom.js';
import { num, rate, time, lag } from '../format.js';

const POLL_MS = 2000;

/** `status.state`, "running" while the server does not report it yet. */
export function stateOf(status) {
  return status?.state ?? 'running';
}

export function stateBadge(status) {
  const state = stateOf(status);
  return h(`span.badge.${state === 'failed' ? 'bad' : 'good'}`, { title: status?.error ?? '' }, state);
}

function sumKeys(keys) {
  return Object.values(keys ?? {}).reduce((a, b) => a + b, 0);
}

export function renderPipelines(main, ctx) {
  const table = dataTable(['Name', 'State', 'Events', 'Events/s', 'Late', 'Watermark', 'Lag', 'Keys', 'Last checkpoint'],
    ['Events', 'Events/s', 'Late', 'Lag', 'Keys']);
  const slot = h('div', { 'aria-live': 'polite' });
  fill(main,
    h('div.head', {}, h('h1', {}, 'Pipelines'),
      h('a.button', { href: '#/new', 'data-needs': 'admin' }, 'New pipeline')),
    slot,
    h('div.scroll', {}, table.table));
  ctx.applyScopes(main);
  const previous = new Map();
  return repeat(POLL_MS, async () => {
    try {
      const { items } = await get('/v1/pipelines');
      const now = Date.now();
      const rows = items.map((p) => {
        const s = p.status;
        const before = previous.get(p.name);
        const perSecond = before ? ((s.events - before.events) * 1000) / Math.max(1, now - before.at) : null;
        previous.set(p.name, { events: s.events, at: now });
        const cp = s.last_checkpoint;
        return h('tr', {},
          h('th', { scope: 'row' }, h('a', { href: `#/p/${encodeURIComponent(p.name)}` }, p.name)),
          h('td', {}, stateBadge(s)),
          h('td.n', {}, num(s.events)),
          h('td.n', {}, rate(perSecond)),
          h('td.n', {}, num(s.late_events)),
          h('td', {}, time(s.watermark)),
          h('td.n', {}, lag(s.watermark, now)),
          h('td.n', {}, num(sumKeys(s.keys))),
          // One span: on a narrow window the cell is a flex row of label and value.
          h('td', {}, h('span', {}, cp ? [`#${cp.id} ${cp.status} `, time(cp.completed_at ?? cp.started_at)] : '–')));
      });
      table.fill(rows.length ? rows : h('tr', {}, h('td', { colspan: 9 }, 'No pipeline yet.')));
      fill(slot);
    } catch (e) {
      fill(slot, problemBox(e));
    }
  });
}
