/* The API client: every request sends the key the user signed in with (kept in this tab's
 * sessionStorage only) as `Authorization: Bearer`, stays on this origin, and is aborted when
 * its view goes. An error answer {"error": {"code", "message", "field"}} becomes an ApiError;
 * a 401 for the stored key signs out (the handler set with onKeyRefused). */

import { state } from './state.js';

const KEY_STORE = 'childtune.apiKey';

export class ApiError extends Error {
  constructor(status, error) {
    super(error.message || `HTTP ${status}`);
    this.status = status;
    this.code = error.code;
    this.field = error.field || null;
  }
}

export function apiKey() {
  return window.sessionStorage.getItem(KEY_STORE);
}

export function storeKey(key) {
  window.sessionStorage.setItem(KEY_STORE, key);
}

export function forgetKey() {
  window.sessionStorage.removeItem(KEY_STORE);
}

let keyRefused = () => {};

/* fn(message) runs when the API refuses the stored key. */
export function onKeyRefused(fn) {
  keyRefused = fn;
}

async function readError(res) {
  try {
    const body = await res.json();
    if (body && body.error) return body.error;
  } catch (e) {
    /* not JSON */
  }
  return { code: `http_${res.status}`, message: `${res.status} ${res.statusText}`.trim(), field: null };
}

/* fetch with the key. options: method, json (a body sent as JSON), body, key (another key to
 * try: a 401 for it does not sign out). Resolves to the Response of a 2xx answer. */
export async function api(path, options) {
  const opts = options || {};
  const headers = { Authorization: `Bearer ${opts.key || apiKey() || ''}` };
  let body = opts.body;
  if (opts.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.json);
  }
  const view = state.view;
  const res = await fetch(path, {
    method: opts.method || 'GET',
    headers,
    body,
    cache: 'no-store',
    credentials: 'omit',
    signal: view ? view.controller.signal : undefined,
  });
  if (res.status === 401 && !opts.key) {
    const error = await readError(res);
    keyRefused(`Signed out: the API refused the key (${error.message}). Sign in again.`);
    throw new ApiError(401, error);
  }
  if (!res.ok) throw new ApiError(res.status, await readError(res));
  return res;
}

export async function getJSON(path) {
  return (await api(path)).json();
}

/* Fetch an answer that needs the key (an archive, a plot) as a Blob. */
export async function getBlob(path) {
  return (await api(path)).blob();
}
