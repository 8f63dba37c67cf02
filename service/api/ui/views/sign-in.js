/* Sign-in: the key is checked (GET /v1/jobs?limit=1) before it is kept in sessionStorage. */

import { ApiError, api, storeKey } from '../lib/api.js';
import { append, h, heading, main } from '../lib/dom.js';
import { state } from '../lib/state.js';

/* route: shows the page the address names (once signed in). */
export function renderSignIn(view, route) {
  document.title = 'Sign in · childtune';
  const input = h('input', {
    id: 'api-key', name: 'api-key', type: 'password', autocomplete: 'off', spellcheck: 'false',
    required: true, 'aria-describedby': 'api-key-hint',
  });
  const message = h('p', { id: 'sign-in-message', class: 'form-message', role: 'alert' });
  if (state.flash) message.textContent = state.flash;
  state.flash = null;
  const button = h('button', { type: 'submit', text: 'Sign in' });
  const form = h('form', { class: 'sign-in', novalidate: true },
    h('div', { class: 'field' },
      h('label', { for: 'api-key', text: 'API key' }),
      input,
      h('p', { id: 'api-key-hint', class: 'hint', text: 'The same bearer key as for the REST API and the CLI. Kept in this tab only (sessionStorage) until you sign out or close it.' })),
    message,
    button);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    if (!key) {
      message.textContent = 'Enter an API key.';
      input.setAttribute('aria-invalid', 'true');
      input.focus();
      return;
    }
    button.disabled = true;
    message.textContent = 'Checking the key…';
    try {
      await api('/v1/jobs?limit=1', { key });
      storeKey(key);
      state.navigated = true;
      if (!window.location.hash || window.location.hash === '#/') window.location.hash = '#/jobs'; // routes
      else route();
    } catch (err) {
      if (!view.alive) return;
      button.disabled = false;
      message.textContent = err instanceof ApiError && err.status === 401
        ? `That key was refused: ${err.message}.`
        : `Cannot sign in: ${err.message}`;
      input.setAttribute('aria-invalid', 'true');
      input.focus();
    }
  });
  append(main, h('section', { class: 'narrow' }, heading('Sign in'), form));
  input.focus();
}
