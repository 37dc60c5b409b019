// The public API, as the dashboard uses it: the bearer token (kept in this tab's session
// storage, never in a URL), JSON and problem+json answers, and the output feed read as
// Server-Sent Events through fetch (EventSource cannot send an Authorization header).

const TOKEN_KEY = 'eddy.token';

/** An error answer (problem+json) or a failure to reach the server. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail ?? `HTTP ${status}`);
    this.status = status;
    this.title = problem?.title;
    this.detail = problem?.detail ?? this.message;
    this.code = problem?.code;
    this.errors = problem?.errors;
  }
}

/** Called on every 401, so the page can ask for a token again. */
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

export const token = {
  get: () => sessionStorage.getItem(TOKEN_KEY),
  set: (t) => sessionStorage.setItem(TOKEN_KEY, t),
  clear: () => sessionStorage.removeItem(TOKEN_KEY),
};

function headers(extra = {}) {
  const out = { Accept: 'application/json', ...extra };
  const t = token.get();
  if (t) out.Authorization = `Bearer ${t}`;
  return out;
}

/** Sends a request; resolves to the parsed answer (null for 204), rejects with ApiError. */
export async function request(method, path, { body, contentType, signal, raw } = {}) {
  const init = { method, headers: headers(), signal };
  if (body !== undefined) {
    init.headers['Content-Type'] = contentType ?? 'application/json';
    init.body = raw ? body : JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, { title: 'Network error', detail: `the server could not be reached (${e.message})` });
  }
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text };
    }
  }
  if (!res.ok) {
    const err = new ApiError(res.status, data);
    if (res.status === 401) onUnauthorized(err);
    throw err;
  }
  return data;
}

export const get = (path, opts) => request('GET', path, opts);
export const post = (path, body, opts) => request('POST', path, { body, ...opts });
export const del = (path, opts) => request('DELETE', path, opts);

/** `/v1/pipelines/<name>…` with the name escaped. */
export function pipelinePath(name, rest = '') {
  return `/v1/pipelines/${encodeURIComponent(name)}${rest}`;
}

/**
 * Follows the output feed of `name` after offset `after` (null: from the oldest kept), calling
 * `onRecord(record)` for each, until `signal` aborts. Resolves when the stream ends.
 */
export async function followOutput(name, after, onRecord, signal) {
  const extra = { Accept: 'text/event-stream' };
  if (after !== null && after !== undefined) extra['Last-Event-ID'] = String(after);
  const res = await fetch(pipelinePath(name, '/output/stream'), { headers: headers(extra), signal });
  if (!res.ok) {
    let problem = null;
    try {
      problem = await res.json();
    } catch { /* not JSON */ }
    const err = new ApiError(res.status, problem);
    if (res.status === 401) onUnauthorized(err);
    throw err;
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    // Events end with a blank line (the server writes \n line ends).
    while ((end = buffer.indexOf('\n\n')) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trimStart());
      if (data.length) onRecord(JSON.parse(data.join('\n')));
    }
  }
}
