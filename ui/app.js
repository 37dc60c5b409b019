// The dashboard: asks for a token when the server wants one, learns its scopes from
// GET /v1/token, and routes `#/…` addresses to views. Each view returns a cleanup function
// that stops its polling and streams when the address changes.
import { ApiError, get, token, setUnauthorizedHandler } from './api.js';
import { h, fill, problemBox } from './dom.js';
import { renderPipelines } from './views/pipelines.js';
import { renderCreate } from './views/create.js';
import { renderPipeline } from './views/pipeline.js';
import { renderCluster } from './views/cluster.js';

const main = document.getElementById('main');
let access = null;
let cleanup = () => {};

/** Whether the caller has `scope` (admin has all). */
function can(scope) {
  return Boolean(access?.scopes.includes(scope));
}

function showWho() {
  const who = document.getElementById('who');
  if (!access || access.access === 'open') {
    fill(who, access ? h('span.badge', { title: 'no tokens file: access is open' }, 'open access') : '');
    return;
  }
  fill(who, h('span', {}, `${access.name} (${access.scopes.join(', ')})`), ' ',
    h('button.secondary.small', { type: 'button', onclick: logout }, 'Sign out'));
}

function logout() {
  token.clear();
  access = null;
  start();
}

/** Hides what the token's scopes do not allow (elements marked data-needs="<scope>"). */
function applyScopes(root = document) {
  for (const el of root.querySelectorAll('[data-needs]')) el.hidden = !can(el.dataset.needs);
}

function askForToken(message) {
  cleanup();
  cleanup = () => {};
  access = null;
  showWho();
  applyScopes();
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', required: true, 'aria-describedby': 'token-help' });
  const slot = h('div');
  const form = h('form.card.narrow', {
    onsubmit: (e) => {
      e.preventDefault();
      token.set(input.value.trim());
      start();
    },
  },
  h('h1', {}, 'Sign in'),
  h('p', { id: 'token-help' }, 'This server has a tokens file: enter an API token (made with ',
    h('code', {}, 'eddy token new'), '). It stays in this tab only.'),
  message ? problemBox(message) : '',
  h('label', { for: 'token' }, 'Token'), input, slot,
  h('div.row', {}, h('button', { type: 'submit' }, 'Sign in')));
  fill(main, form);
  input.focus();
}

function route() {
  cleanup();
  cleanup = () => {};
  if (!access) return;
  const path = location.hash.replace(/^#/, '') || '/';
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const ctx = { can, applyScopes };
  let done;
  if (parts.length === 0) done = renderPipelines(main, ctx);
  else if (parts[0] === 'new') done = renderCreate(main, ctx);
  else if (parts[0] === 'cluster') done = renderCluster(main, ctx);
  else if (parts[0] === 'p' && parts[1]) done = renderPipeline(main, parts[1], parts[2] ?? 'overview', ctx);
  else {
    fill(main, h('h1', {}, 'Not found'), h('p', {}, 'No view at ', h('code', {}, path), '. ', h('a', { href: '#/' }, 'Pipelines')));
  }
  cleanup = typeof done === 'function' ? done : () => {};
  applyScopes();
  document.title = `eddy · ${parts.length ? parts.join(' / ').replace(/^p \/ /, '') : 'pipelines'}`;
}

async function start() {
  const presented = token.get();
  try {
    access = await get('/v1/token');
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      // No token yet is no error; an unknown one is shown as the 401 it is.
      token.clear();
      askForToken(presented ? e : null);
      return;
    }
    fill(main, problemBox(e));
    // Starting (recovery not done) or briefly unreachable: try again, the page stays usable.
    if (e instanceof ApiError && (e.status === 503 || e.status === 0)) setTimeout(start, 2000);
    return;
  }
  showWho();
  route();
}

// A 401 after sign-in (the token was removed from the file): ask again, saying why.
setUnauthorizedHandler((err) => {
  if (!access) return;
  token.clear();
  askForToken(err);
});
window.addEventListener('hashchange', route);
start();
