// Calls to the broker as the signed-in operator: the session cookie goes
// with every request (same origin only), and the CSRF token of the
// session with every one that changes something.

let csrf = null;
let onSignedOut = () => {};

export function setCsrf(token) { csrf = token; }
export function whenSignedOut(f) { onSignedOut = f; }

export class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

export async function api(method, path, body) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (method !== 'GET' && csrf) headers['X-Writ-CSRF'] = csrf;
  const resp = await fetch(path, {
    method,
    headers,
    credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 204) return null;
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!resp.ok) {
    if (resp.status === 401 && path !== '/ui/api/session') onSignedOut();
    const msg = (data && (data.detail || data.title || data.error_description)) || `${resp.status} ${resp.statusText}`;
    throw new ApiError(resp.status, msg);
  }
  return data;
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body ?? {});

/** A query string of the non-empty fields of `o`. */
export function query(o) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(o)) if (v !== '' && v !== undefined && v !== null) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** A GET whose answer is text (a report rendered as a table). */
export async function getText(path) {
  const resp = await fetch(path, { credentials: 'same-origin', headers: { Accept: 'text/plain' } })
  .catch((e) => { throw new ApiError(0, e.message); });
  const text = await resp.text();
  if (!resp.ok) {
    if (resp.status === 401) onSignedOut();
    let msg = `${resp.status} ${resp.statusText}`;
    try { msg = JSON.parse(text).detail || msg; } catch { /* not JSON */ }
    throw new ApiError(resp.status, msg);
  }
  return text;
}
