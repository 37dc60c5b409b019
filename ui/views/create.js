// Create a pipeline: the spec's fields as a form, one JSON box per operator. A 422 answer names
// fields (`time.field`, `operators[2].gap`); each error is shown next to the input it names.
import { post } from '../api.js';
import { h, fill, problemBox, busy } from '../dom.js';

const EXAMPLE_OPERATORS = [
  { name: 'page_views', kind: 'window', key: '/page', size: '1m', functions: ['count'], retain: 10 },
  { name: 'last_pages', kind: 'last_n', value: '/page', n: 5 },
  { name: 'sessions', kind: 'session', gap: '30m' },
];

/** Where an error of `field` is shown: a top-level input's id, `operators[i]`, or null. */
export function slotFor(field) {
  const op = /^operators\[(\d+)\]/.exec(field);
  if (op) return `op-${op[1]}`;
  const known = ['name', 'key', 'time.field', 'time.format', 'time.max_out_of_orderness',
    'checkpoint_interval', 'retain_checkpoints', 'state_ttl', 'operators'];
  if (known.includes(field)) return field.replace(/\./g, '-');
  if (field.startsWith('time')) return 'time-field';
  return null;
}

function field(id, label, attrs = {}, help = '') {
  const input = h(attrs.tag ?? 'input', { id, name: id, 'aria-describedby': `${id}-err`, ...attrs, tag: null });
  return h('div.field', {}, h('label', { for: id }, label), input,
    help ? h('small.muted', {}, help) : '', h('div.err', { id: `${id}-err`, 'aria-live': 'polite' }));
}

export function renderCreate(main, ctx) {
  const ops = h('div.ops');
  const general = h('div', { 'aria-live': 'polite' });
  let count = 0;

  function addOperator(value) {
    const i = count++;
    const box = h('div.op.card', { 'data-op': i },
      h('label', { for: `op-${i}` }, `Operator ${i + 1} (JSON)`),
      h('textarea', { id: `op-${i}`, rows: 4, spellcheck: 'false', 'aria-describedby': `op-${i}-err` },
        value ? JSON.stringify(value) : '{"name": "", "kind": "latest", "value": "/"}'),
      h('div.err', { id: `op-${i}-err`, 'aria-live': 'polite' }),
      h('button.secondary.small', { type: 'button', onclick: () => box.remove() }, 'Remove'));
    ops.append(box);
  }

  const format = h('select', { id: 'time-format', name: 'time-format', 'aria-describedby': 'time-format-err' },
    ['', 'epoch_ms', 'epoch_s', 'rfc3339'].map((f) => h('option', { value: f }, f || '(processing time)')));
  const submit = h('button', { type: 'submit' }, 'Create pipeline');
  const form = h('form.card', { novalidate: true, onsubmit: (e) => { e.preventDefault(); busy(submit, create); } },
    h('div.grid', {},
      field('name', 'Name', { value: 'clicks', required: true }, '[a-z0-9_-], up to 64'),
      field('key', 'Key pointer', { value: '/user_id', required: true }, 'JSON pointer, e.g. /user_id'),
      field('time-field', 'Time field', { value: '/ts' }, 'empty: processing time'),
      h('div.field', {}, h('label', { for: 'time-format' }, 'Time format'), format, h('div.err', { id: 'time-format-err' })),
      field('time-max_out_of_orderness', 'Max out of orderness', { value: '5s' }, 'duration, e.g. 5s'),
      field('checkpoint_interval', 'Checkpoint interval', { placeholder: '10s' }),
      field('retain_checkpoints', 'Retain checkpoints', { type: 'number', min: 1, placeholder: '5' }),
      field('state_ttl', 'State TTL', { placeholder: 'none' })),
    h('h2', {}, 'Operators'), h('div.err', { id: 'operators-err' }), ops,
    h('div.row', {}, h('button.secondary', { type: 'button', onclick: () => addOperator() }, 'Add operator'), submit),
    general);
  format.value = 'epoch_ms';
  EXAMPLE_OPERATORS.forEach(addOperator);
  fill(main, h('h1', {}, 'New pipeline'), form);
  ctx.applyScopes(main);

  const value = (id) => form.querySelector(`#${id}`).value.trim();

  function clearErrors() {
    form.querySelectorAll('.err').forEach((e) => fill(e));
    form.querySelectorAll('[aria-invalid]').forEach((e) => e.removeAttribute('aria-invalid'));
    fill(general);
  }

  function showError(slotId, text) {
    const slot = slotId && form.querySelector(`#${slotId}-err`);
    if (!slot) return false;
    slot.append(h('div', {}, text));
    form.querySelector(`#${slotId}`)?.setAttribute('aria-invalid', 'true');
    return true;
  }

  function spec() {
    const s = { name: value('name'), key: value('key') };
    if (value('time-field')) {
      s.time = { field: value('time-field') };
      if (value('time-format')) s.time.format = value('time-format');
      if (value('time-max_out_of_orderness')) s.time.max_out_of_orderness = value('time-max_out_of_orderness');
    }
    if (value('checkpoint_interval')) s.checkpoint_interval = value('checkpoint_interval');
    if (value('retain_checkpoints')) s.retain_checkpoints = Number(value('retain_checkpoints'));
    if (value('state_ttl')) s.state_ttl = value('state_ttl');
    s.operators = [];
    let bad = false;
    [...ops.querySelectorAll('textarea')].forEach((t, i) => {
      // Renumbered on every submit, so that errors of operators[i] land on the i-th box.
      t.id = `op-${i}`;
      t.nextElementSibling.id = `op-${i}-err`;
      t.previousElementSibling.setAttribute('for', `op-${i}`);
      t.previousElementSibling.textContent = `Operator ${i + 1} (JSON)`;
      try {
        s.operators.push(JSON.parse(t.value));
      } catch (e) {
        bad = true;
        showError(`op-${i}`, `not JSON: ${e.message}`);
      }
    });
    return bad ? null : s;
  }

  async function create() {
    clearErrors();
    const body = spec();
    if (!body) return;
    try {
      const created = await post('/v1/pipelines', body);
      location.hash = `#/p/${encodeURIComponent(created.name)}`;
    } catch (e) {
      const rest = [];
      for (const err of e.errors ?? []) {
        const slot = slotFor(err.field ?? '');
        const label = slot?.startsWith('op-') ? `${err.field}: ${err.detail}` : err.detail;
        if (!showError(slot, label)) rest.push(err);
      }
      fill(general, problemBox({ ...e, status: e.status, title: e.title, detail: e.detail, errors: rest }));
      form.querySelector('[aria-invalid]')?.focus();
    }
  }
}
