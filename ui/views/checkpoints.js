// The checkpoint table, with a trigger button and restore (after confirmation); both admin.
import { get, post, pipelinePath } from '../api.js';
import { h, fill, problemBox, busy, confirmAction, dataTable } from '../dom.js';
import { num, time, duration, bytes } from '../format.js';

const POLL_MS = 5000;

export function renderCheckpoints(el, pipeline, ctx) {
  const name = pipeline.name;
  const rows = dataTable(['ID', 'Trigger', 'Status', 'Started', 'Duration', 'Keys written', 'Bytes', 'Error', ''],
    ['ID', 'Duration', 'Keys written', 'Bytes']);
  rows.body.id = 'checkpoint-rows';
  const slot = h('div', { 'aria-live': 'polite', id: 'checkpoint-answer' });
  const trigger = h('button', { type: 'button', id: 'checkpoint-trigger', 'data-needs': 'admin' }, 'Take checkpoint');
  let timer = null;
  let stopped = false;

  async function restore(button, id) {
    if (!(await confirmAction(`Restore checkpoint #${id}? Events after it are discarded, and newer checkpoints deleted.`, 'Restore'))) return;
    await busy(button, async () => {
      try {
        const res = await post(pipelinePath(name, `/checkpoints/${id}/restore`));
        fill(slot, h('p.ok', {}, `Restored checkpoint #${res.restored}; ${num(res.discarded_events)} events discarded.`));
      } catch (e) {
        fill(slot, problemBox(e));
      }
      await load();
    });
  }

  function row(c) {
    const actions = c.status === 'completed' && ctx.can('admin')
      ? h('button.secondary.small', { type: 'button', onclick: (e) => restore(e.currentTarget, c.id), 'aria-label': `Restore checkpoint ${c.id}` }, 'Restore')
      : '';
    return h('tr', {},
      h('td.n', {}, num(c.id)), h('td', {}, c.trigger),
      h('td', {}, h(`span.badge.${c.status === 'failed' ? 'bad' : c.status === 'completed' ? 'good' : ''}`, {}, c.status)),
      h('td', {}, time(c.started_at)), h('td.n', {}, duration(c.duration_ms)),
      h('td.n', {}, num(c.keys_written)), h('td.n', {}, bytes(c.bytes)),
      h('td', {}, c.error ?? ''), h('td', {}, actions));
  }

  async function load() {
    clearTimeout(timer);
    try {
      const { items } = await get(pipelinePath(name, '/checkpoints'));
      if (stopped) return;
      rows.fill(items.length ? items.map(row) : h('tr', {}, h('td', { colspan: 9 }, 'No checkpoint yet.')));
    } catch (e) {
      if (!stopped) fill(slot, problemBox(e));
    }
    if (!stopped) timer = setTimeout(load, POLL_MS);
  }

  trigger.addEventListener('click', () => busy(trigger, async () => {
    fill(slot, h('p.muted', {}, 'Checkpoint running…'));
    try {
      const c = await post(pipelinePath(name, '/checkpoints'));
      fill(slot, h('p.ok', {}, `Checkpoint #${c.id} ${c.status} in ${duration(c.duration_ms)}.`));
    } catch (e) {
      fill(slot, problemBox(e));
    }
    await load();
  }));

  fill(el, h('div.row', {}, trigger), slot,
    h('div.scroll', {}, rows.table));
  ctx.applyScopes(el);
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
