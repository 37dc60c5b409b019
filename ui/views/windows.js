// Counts per window for one key of a window operator: the operator's state answer (its open
// window and the `retain` newest closed ones) as bars, polled every 2 s so the chart follows
// windows as they close.
import { get, pipelinePath } from '../api.js';
import { h, fill, problemBox, dataTable } from '../dom.js';
import { num, time } from '../format.js';
import { barChart } from '../charts.js';

const POLL_MS = 2000;

export function renderWindows(el, pipeline) {
  const ops = pipeline.operators.filter((o) => o.kind === 'window');
  if (!ops.length) {
    fill(el, h('p', {}, 'This pipeline has no window operator.'));
    return () => {};
  }
  const op = h('select', { id: 'win-op' }, ops.map((o) => h('option', { value: o.name }, o.name)));
  const fnSelect = h('select', { id: 'win-fn' });
  const key = h('input', { id: 'win-key', placeholder: '/home', autocomplete: 'off' });
  const slot = h('div', { 'aria-live': 'polite' });
  const chartEl = h('div.chart', { id: 'chart-windows' });
  const table = dataTable(['Start', 'End', 'State', 'Value'], ['Value']);
  let chart = null;
  let timer = null;
  let stopped = false;

  function functions() {
    return ops.find((o) => o.name === op.value)?.functions ?? ['count'];
  }

  function setFunctions() {
    fill(fnSelect, functions().map((f) => h('option', { value: f }, f)));
  }

  let drawn = '';
  function draw(windows) {
    const fn = fnSelect.value || 'count';
    const size = windows.length ? (windows[0].end - windows[0].start) / 1000 : 60;
    // A new chart only when what it shows changes; otherwise its data is replaced.
    const what = JSON.stringify([op.value, fn, key.value, size]);
    if (what !== drawn) {
      chart?.destroy();
      chart = barChart(chartEl, `${fn} per window, key ${key.value}`, fn, fn === 'count' ? 'events' : '', size);
      drawn = what;
    }
    chart.update(windows.map((w) => w.start / 1000), windows.map((w) => w[fn] ?? null));
    table.fill(windows.slice().reverse().map((w) => h('tr', {},
      h('td', {}, time(w.start)), h('td', {}, time(w.end)), h('td', {}, w.closed ? 'closed' : 'open'),
      h('td.n', {}, num(w[fn])))));
  }

  async function poll() {
    clearTimeout(timer);
    if (stopped) return;
    if (key.value) {
      try {
        const path = pipelinePath(pipeline.name, `/operators/${encodeURIComponent(op.value)}/state?key=${encodeURIComponent(key.value)}`);
        const res = await get(path);
        if (stopped) return;
        draw(res.value.windows ?? []);
        fill(slot);
      } catch (e) {
        if (stopped) return;
        fill(slot, e.status === 404 ? h('p.muted', {}, `Key ${key.value} has no window yet.`) : problemBox(e));
        draw([]);
      }
    }
    timer = setTimeout(poll, POLL_MS);
  }

  op.addEventListener('change', () => { setFunctions(); poll(); });
  fnSelect.addEventListener('change', poll);
  setFunctions();
  fill(el,
    h('form.card', { onsubmit: (e) => { e.preventDefault(); poll(); } },
      h('div.cols', {},
        h('div.field', {}, h('label', { for: 'win-op' }, 'Window operator'), op),
        h('div.field', {}, h('label', { for: 'win-fn' }, 'Function'), fnSelect),
        h('div.field', {}, h('label', { for: 'win-key' }, 'Key'), key)),
      h('button', { type: 'submit' }, 'Show')),
    slot, chartEl,
    h('div.scroll', {}, table.table));
  return () => {
    stopped = true;
    clearTimeout(timer);
    chart?.destroy();
  };
}
