// The state browser: one key of an operator, or the keys under a prefix, a page at a time
// (the server's `next_cursor`; earlier cursors are kept for "Previous").
import { get, pipelinePath } from '../api.js';
import { h, fill, problemBox, busy, jsonBlock } from '../dom.js';
import { num } from '../format.js';

const PAGE = 20;

export function renderState(el, pipeline) {
  const name = pipeline.name;
  const op = h('select', { id: 'state-op' }, pipeline.operators.map((o) => h('option', { value: o.name }, `${o.name} (${o.kind})`)));
  const key = h('input', { id: 'state-key', placeholder: 'u1', autocomplete: 'off' });
  const prefix = h('input', { id: 'state-prefix', placeholder: '(every key)', autocomplete: 'off' });
  const out = h('div', { id: 'state-answer', 'aria-live': 'polite' });
  const getBtn = h('button', { type: 'submit' }, 'Get key');
  const listBtn = h('button', { type: 'submit' }, 'List keys');
  const base = () => pipelinePath(name, `/operators/${encodeURIComponent(op.value)}/state`);
  let cursors = [];

  async function one() {
    fill(out);
    try {
      const res = await get(`${base()}?key=${encodeURIComponent(key.value)}`);
      fill(out, h('h3', {}, `Key ${res.key}`), jsonBlock(res.value));
    } catch (e) {
      fill(out, problemBox(e));
    }
  }

  async function page(index) {
    const cursor = cursors[index];
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (prefix.value) q.set('prefix', prefix.value);
    if (cursor) q.set('cursor', cursor);
    try {
      const res = await get(`${base()}?${q}`);
      cursors = cursors.slice(0, index + 1);
      if (res.next_cursor) cursors.push(res.next_cursor);
      const prev = h('button.secondary', { type: 'button', disabled: index === 0, onclick: (e) => busy(e.currentTarget, () => page(index - 1)) }, 'Previous');
      const next = h('button.secondary', { type: 'button', disabled: !res.next_cursor, onclick: (e) => busy(e.currentTarget, () => page(index + 1)) }, 'Next');
      fill(out,
        h('p.muted', {}, `Page ${num(index + 1)}: ${num(res.items.length)} keys${prefix.value ? ` with prefix “${prefix.value}”` : ''}.`),
        res.items.length ? h('dl.state', {}, res.items.flatMap((item) => [h('dt', {}, item.key), h('dd', {}, jsonBlock(item.value))])) : h('p', {}, 'No key has state.'),
        h('div.row', {}, prev, next));
    } catch (e) {
      fill(out, problemBox(e));
    }
  }

  fill(el,
    h('div.card', {},
      h('div.field', {}, h('label', { for: 'state-op' }, 'Operator'), op),
      h('div.cols', {},
        h('form', { onsubmit: (e) => { e.preventDefault(); busy(getBtn, one); } },
          h('div.field', {}, h('label', { for: 'state-key' }, 'Key'), key), getBtn),
        h('form', { onsubmit: (e) => { e.preventDefault(); cursors = []; busy(listBtn, () => page(0)); } },
          h('div.field', {}, h('label', { for: 'state-prefix' }, 'Key prefix'), prefix), listBtn))),
    out);
}
