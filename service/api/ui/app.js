/* childtune dashboard: a single page over the REST API (docs/dashboard.md), as native ES
 * modules (no build step). This is the entry: it reads the contract's enumerations from the
 * API's OpenAPI document, then shows the page the address (#/...) names, one view module each.
 *
 *   lib/     api (fetch with the key), contract (enums from /openapi.json), view (polling),
 *            dom, format, widgets (job and experiment displays), charts (uPlot), state
 *   views/   sign-in, jobs, job (+ job-records, job-events, job-mask), experiments,
 *            experiment, new-job (+ new-job-form)
 */

import { apiKey, forgetKey, onKeyRefused } from './lib/api.js';
import { loadContract } from './lib/contract.js';
import { append, clear, h, heading, main, nav, showBanner } from './lib/dom.js';
import { state } from './lib/state.js';
import { View } from './lib/view.js';
import { renderExperiment } from './views/experiment.js';
import { renderExperiments } from './views/experiments.js';
import { renderJob } from './views/job.js';
import { renderJobs } from './views/jobs.js';
import { renderNewJob } from './views/new-job.js';
import { renderSignIn } from './views/sign-in.js';

function parseHash() {
  const raw = window.location.hash.replace(/^#/, '') || '/jobs';
  const [path, query] = raw.split('?');
  return { parts: path.split('/').filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query || '') };
}

function route() {
  if (state.view) state.view.dispose();
  state.charts = {};
  showBanner(null);
  const view = new View();
  state.view = view;
  clear(main);
  if (!apiKey()) {
    nav.hidden = true;
    renderSignIn(view, route);
    return;
  }
  nav.hidden = false;
  const { parts, params } = parseHash();
  for (const link of nav.querySelectorAll('a[data-nav]')) {
    if (link.dataset.nav === parts[0]) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (parts[0] === 'jobs' && parts.length === 1) renderJobs(view, params);
  else if (parts[0] === 'jobs' && parts.length === 2) renderJob(view, parts[1]);
  else if (parts[0] === 'experiments' && parts.length === 1) renderExperiments(view);
  else if (parts[0] === 'experiments' && parts.length === 2) renderExperiment(view, parts[1]);
  else if (parts[0] === 'new' && parts.length === 1) renderNewJob(view);
  else {
    document.title = 'Not found · childtune';
    append(main, heading('Page not found'), h('p', {}, 'No such page. ', h('a', { href: '#/jobs', text: 'Go to the jobs' }), '.'));
  }
  if (state.navigated) {
    const first = main.querySelector('h1');
    if (first) first.focus();
  }
}

function signOut(message) {
  forgetKey();
  state.flash = message;
  route();
}

/* The OpenAPI document could not be read: say so, and offer to try again. */
function showContractError(err) {
  clear(main);
  const retry = h('button', { type: 'button', text: 'Try again' });
  retry.addEventListener('click', start);
  append(main, heading('Cannot read the API’s description'),
    h('p', { id: 'contract-error' }, `The dashboard reads the job contract’s choices from /openapi.json: ${err.message}.`),
    retry);
}

async function start() {
  try {
    await loadContract();
  } catch (err) {
    showContractError(err);
    return;
  }
  route();
}

onKeyRefused((message) => {
  if (apiKey()) signOut(message);
});
document.getElementById('sign-out').addEventListener('click', () => signOut('Signed out.'));
document.getElementById('skip-link').addEventListener('click', (event) => {
  event.preventDefault();
  main.focus();
});
window.addEventListener('hashchange', () => {
  state.navigated = true;
  route();
});
start();
