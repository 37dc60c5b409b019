// The live output feed: closed sessions and windows as they are emitted (Server-Sent Events read
// with fetch, so that the bearer token is sent). Pause stops the stream; resume continues after
// the last offset shown (Last-Event-ID), so nothing is missed or shown twice.
import { followOutput } from '../api.js';
import { h, fill, problemBox, dataTable } from '../dom.js';
import { num, time, duration } from '../format.js';

const KEEP = 500;

function summary(r) {
  const v = r.value ?? {};
  if (r.type === 'window_closed') {
    const fns = Object.entries(v).filter(([k]) => !['start', 'end', 'closed'].includes(k))
      .map(([k, x]) => `${k} ${num(x)}`).join(', ');
    return [time(v.start), ' – ', time(v.end), `: ${fns}`];
  }
  if (r.type === 'session_closed') {
    return [time(v.start), ` for ${duration(v.duration_ms)}, ${num(v.events)} events`];
  }
  return JSON.stringify(v);
}

export function renderOutput(el, pipeline) {
  const COLUMNS = ['Offset', 'Operator', 'Key', 'Type', 'Value'];
  const table = dataTable(COLUMNS, ['Offset']);
  const list = table.body;
  list.id = 'output-rows';
  const slot = h('div', { 'aria-live': 'polite' });
  const state = h('span.badge', { id: 'output-state', role: 'status' });
  const toggle = h('button', { type: 'button', id: 'output-toggle' });
  let last = null;
  let controller = null;
  let count = 0;

  // Records are drawn once per frame, at most KEEP of them: a feed that starts with a long
  // backlog (the oldest kept record on) does not stall the page.
  let pending = [];
  function add(r) {
    last = r.offset;
    count += 1;
    if (pending.length === 0) requestAnimationFrame(flush);
    pending.push(r);
    // A hidden tab draws no frames: keep only what would be shown.
    if (pending.length > 2 * KEEP) pending = pending.slice(-KEEP);
  }

  function flush() {
    const batch = pending.slice(-KEEP);
    pending = [];
    for (const r of batch) draw(r);
    while (list.children.length > KEEP) list.lastChild.remove();
    fill(counter, `${num(count)} records received`);
  }

  function draw(r) {
    const cells = [h('td.n', {}, num(r.offset)), h('td', {}, r.operator), h('td', {}, r.key), h('td', {}, r.type), h('td', {}, h('span', {}, summary(r)))];
    cells.forEach((c, i) => { c.dataset.label = COLUMNS[i]; });
    list.prepend(h('tr', {}, cells));
  }

  function setState(live) {
    fill(state, live ? 'live' : 'paused');
    state.className = `badge ${live ? 'good' : ''}`;
    fill(toggle, live ? 'Pause' : 'Resume');
  }

  function resume() {
    controller = new AbortController();
    const mine = controller;
    setState(true);
    fill(slot);
    followOutput(pipeline.name, last, add, mine.signal).then(() => {
      if (controller === mine) {
        controller = null;
        setState(false);
      }
    }).catch((e) => {
      if (e.name === 'AbortError') return;
      if (controller === mine) controller = null;
      setState(false);
      fill(slot, problemBox(e));
    });
  }

  function pause() {
    controller?.abort();
    controller = null;
    setState(false);
  }

  toggle.addEventListener('click', () => (controller ? pause() : resume()));
  const counter = h('span.muted');
  fill(el, h('div.row', {}, state, toggle, counter), slot,
    h('div.scroll', {}, table.table));
  resume();
  return pause;
}
