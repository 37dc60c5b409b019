// Small DOM helpers: element building, problem display, and a confirmation dialog.

/** h('tag.class', {attr: value, onclick: fn}, ...children): an element. */
export function h(spec, attrs = {}, ...children) {
  const [tag, ...classes] = spec.split('.');
  const el = document.createElement(tag || 'div');
  if (classes.length) el.className = classes.join(' ');
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replaces the children of `el`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** An element showing an error where the action was: status, detail, and listed errors. */
export function problemBox(err) {
  const box = h('div.problem', { role: 'alert' });
  const status = err.status ? `${err.status} ${err.title ?? ''}`.trim() : 'Request failed';
  box.append(h('strong', {}, status), ': ', err.detail ?? err.message ?? String(err));
  if (Array.isArray(err.errors) && err.errors.length) {
    box.append(h('ul', {}, err.errors.map((e) =>
      h('li', {}, e.field ?? (e.index !== undefined ? `event ${e.index}` : ''), e.field || e.index !== undefined ? ': ' : '', e.detail))));
  }
  return box;
}

/** Puts the outcome of an action into `slot`: a problem, or nothing. */
export function showProblem(slot, err) {
  fill(slot, err ? problemBox(err) : '');
}

/** Asks for confirmation in the page's dialog (never window.confirm, which blocks the tab). */
export function confirmAction(text, okLabel = 'Confirm') {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  document.getElementById('confirm-ok').textContent = okLabel;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
  });
}

/** Runs `action` with `button` disabled and marked busy, so nothing is sent twice. */
export async function busy(button, action) {
  button.disabled = true;
  button.setAttribute('aria-busy', 'true');
  try {
    return await action();
  } finally {
    button.disabled = false;
    button.removeAttribute('aria-busy');
  }
}

/** Formatted JSON in a <pre>. */
export function jsonBlock(value) {
  return h('pre.json', { tabindex: '0' }, JSON.stringify(value, null, 2));
}

/**
 * A data table whose header cells label each row's cells (data-label), so that on a narrow
 * window every row reads as a small card instead of scrolling sideways. Columns named in
 * `numeric` are right-aligned. Returns {table, body, fill(rows)}.
 */
export function dataTable(columns, numeric = []) {
  const body = h('tbody');
  const table = h('table.data.stack', {},
    h('thead', {}, h('tr', {}, columns.map((c) => h(numeric.includes(c) ? 'th.n' : 'th', { scope: 'col' }, c)))), body);
  return {
    table,
    body,
    fill(rows) {
      fill(body, rows);
      for (const tr of body.rows) {
        [...tr.cells].forEach((cell, i) => {
          if (columns[i] && cell.colSpan === 1) cell.dataset.label = columns[i];
        });
      }
    },
  };
}

/** Runs `step` now, then again `ms` after each run ends, until the returned stop is called.
 * `step` handles its own errors (shows them where its view is). */
export function repeat(ms, step) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    await step();
    if (!stopped) timer = setTimeout(run, ms);
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
