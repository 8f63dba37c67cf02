/* childtune dashboard: a single page over the REST API (docs/dashboard.md).
 *
 * Plain ES2017, no build step, no requests outside this origin. Every API call sends the
 * key the user signed in with (kept in sessionStorage only) as `Authorization: Bearer`.
 * Live pages poll; metrics and events are read by cursor, so each record is fetched once.
 */
'use strict';

(function () {
  const KEY_STORE = 'childtune.apiKey';
  const POLL_MS = 2500;
  const PAGE = 1000; // records per metrics/events request
  const FINAL = new Set(['succeeded', 'failed', 'cancelled']);
  const STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
  const MODES = ['vanilla', 'childtuning-d', 'childtuning-f', 'update-dropout'];
  const PRESETS = ['glue/rte', 'glue/mrpc', 'glue/cola', 'glue/sts-b', 'glue/sst-2', 'instruct/sst-2'];
  const TASK_TYPES = ['classification', 'regression', 'causal-lm'];
  // Distinct colours, and a dash pattern each, so curves differ without colour too.
  const PALETTE = ['#1f5f8b', '#c0392b', '#2e7d32', '#8e44ad', '#b9770e', '#00838f', '#6d4c41', '#455a64'];
  const DASHES = [[], [8, 4], [2, 3], [10, 3, 2, 3], [4, 4], [12, 6], [1, 4], [6, 2, 2, 2]];

  // Tick spacings of the step axis: whole steps only.
  const STEP_INCRS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6];

  const main = document.getElementById('main');
  const nav = document.getElementById('nav');
  const banner = document.getElementById('banner');
  const announcer = document.getElementById('announce');

  // What the browser tests read (tests/e2e/test_dashboard.py): the current charts and view.
  const state = { view: null, charts: {}, flash: null, navigated: false };
  window.dashboard = state;

  // ------------------------------------------------------------------ small helpers

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'class') el.className = value;
      else if (name === 'text') el.textContent = value;
      else if (name.startsWith('on') && typeof value === 'function') el.addEventListener(name.slice(2), value);
      else el.setAttribute(name, value === true ? '' : String(value));
    }
    append(el, ...children);
    return el;
  }

  function append(el, ...children) {
    for (const child of [].concat(...children.map((c) => (Array.isArray(c) ? c.flat(Infinity) : [c])))) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  function announce(text) {
    announcer.textContent = '';
    window.setTimeout(() => { announcer.textContent = text; }, 50);
  }

  function fmtNum(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return '—';
    if (typeof value !== 'number') return String(value);
    if (value !== 0 && (Math.abs(value) < 1e-3 || Math.abs(value) >= 1e5)) return value.toExponential(2);
    const text = value.toFixed(digits === undefined ? 4 : digits);
    return text.includes('.') ? text.replace(/0+$/, '').replace(/\.$/, '') : text;
  }

  function fmtPct(fraction) {
    return fraction === null || fraction === undefined ? '—' : `${(100 * fraction).toFixed(1)}%`;
  }

  function fmtInt(value) {
    return value === null || value === undefined ? '—' : Number(value).toLocaleString('en');
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) return '—';
    const units = ['B', 'KB', 'MB', 'GB', 'TB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  }

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—';
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
    return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  }

  function fmtTime(unix, withDate) {
    if (!unix) return '—';
    const d = new Date(unix * 1000);
    return withDate ? d.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'medium' }) : d.toLocaleTimeString();
  }

  function timeEl(unix, withDate) {
    // withDate: the date too, unless it is today
    if (!unix) return '—';
    const date = withDate && new Date(unix * 1000).toDateString() !== new Date().toDateString();
    return h('time', { datetime: new Date(unix * 1000).toISOString(), text: fmtTime(unix, date) });
  }

  function metricName(key) {
    return (key || 'metric').replace(/^eval_/, '');
  }

  // As the API's higher_is_better (service/core/contract/vocabulary.py): losses, perplexity and
  // error measures are better lower; every other score higher.
  function lowerIsBetter(key) {
    const k = metricName(key).toLowerCase();
    return k.endsWith('loss') || k === 'perplexity' || ['mse', 'mae', 'rmse'].includes(k) || /_(mse|mae|rmse)$/.test(k);
  }

  function fmtMetric(record) {
    if (!record) return '—';
    return `${metricName(record.main_metric)} ${fmtNum(record.main_value)} (step ${record.step})`;
  }

  function metricCell(record) {
    if (!record) return '—';
    return h('span', { class: 'metric' }, `${metricName(record.main_metric)} ${fmtNum(record.main_value)}`,
      h('span', { class: 'muted small', text: ` step ${record.step}` }));
  }

  function statusBadge(status, extra) {
    return h('span', { class: `status status-${status}` }, status, extra ? ` · ${extra}` : null);
  }

  function methodText(spec) {
    const ct = (spec && spec.childtuning) || {};
    const mode = ct.mode || 'childtuning-d';
    return mode === 'vanilla' ? mode : `${mode} (p ${fmtNum(ct.reserve_p)})`;
  }

  function datasetText(spec) {
    const data = (spec && spec.dataset) || {};
    if (data.preset) return data.preset;
    if (!data.train_file) return '—';
    return data.task_type === 'causal-lm' ? `file ${data.train_file} (causal-lm)` : `file ${data.train_file}`;
  }

  function etaSeconds(job) {
    const p = job.progress || {};
    if (job.status !== 'running' || !p.total_steps || !p.step || !job.started_at) return null;
    const elapsed = Date.now() / 1000 - job.started_at;
    const fraction = p.step / p.total_steps;
    return elapsed * (1 - fraction) / fraction;
  }

  function timing(job, rate) {
    if (job.status === 'running') {
      const p = job.progress || {};
      const eta = rate && p.total_steps ? (p.total_steps - p.step) / rate : etaSeconds(job);
      return eta === null ? 'estimating…' : `about ${fmtDuration(eta)} left`;
    }
    if (FINAL.has(job.status) && job.started_at && job.finished_at) {
      return `took ${fmtDuration(job.finished_at - job.started_at)}`;
    }
    return job.status === 'queued' ? 'waiting for a worker' : '—';
  }

  function progressCell(job) {
    const p = job.progress || {};
    const label = p.total_steps ? `${p.step} / ${p.total_steps}` : `${p.step || 0} / ?`;
    const bar = h('progress', { max: p.total_steps || 1, 'aria-label': `steps ${label}` });
    if (p.total_steps) bar.value = p.step;
    else bar.removeAttribute('value'); // indeterminate until the total is known
    return h('span', { class: 'progress' }, bar, h('span', { class: 'progress-text', text: label }));
  }

  function tableWrap(label, table) {
    // A scrolling region for narrow windows, reachable with the keyboard.
    return h('div', { class: 'table-wrap', role: 'region', 'aria-label': label, tabindex: '0' }, table);
  }

  // ------------------------------------------------------------------ the API

  class ApiError extends Error {
    constructor(status, error) {
      super(error.message || `HTTP ${status}`);
      this.status = status;
      this.code = error.code;
      this.field = error.field || null;
    }
  }

  function apiKey() {
    return window.sessionStorage.getItem(KEY_STORE);
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

  async function api(path, options) {
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
      signOut(`Signed out: the API refused the key (${error.message}). Sign in again.`);
      throw new ApiError(401, error);
    }
    if (!res.ok) throw new ApiError(res.status, await readError(res));
    return res;
  }

  async function getJSON(path) {
    return (await api(path)).json();
  }

  function showBanner(text) {
    banner.hidden = !text;
    banner.textContent = text || '';
  }

  // ------------------------------------------------------------------ views

  class View {
    constructor() {
      this.alive = true;
      this.controller = new AbortController();
      this.timers = new Set();
      this.cleanups = [];
    }

    /* Run fn now and then every ms after it finishes, until it returns false or the view goes. */
    poll(ms, fn) {
      const tick = async () => {
        if (!this.alive) return;
        let again = true;
        try {
          again = (await fn()) !== false;
          showBanner(null);
        } catch (err) {
          if (!this.alive || err.name === 'AbortError') return;
          if (err instanceof ApiError) {
            if (err.status === 401) return;
            showBanner(`The API answered ${err.status}: ${err.message}. Retrying…`);
          } else {
            showBanner(`Cannot reach the API (${err.message}). Retrying…`);
          }
        }
        if (again && this.alive) {
          const timer = window.setTimeout(() => { this.timers.delete(timer); tick(); }, ms);
          this.timers.add(timer);
        }
      };
      return tick();
    }

    dispose() {
      this.alive = false;
      for (const timer of this.timers) window.clearTimeout(timer);
      this.controller.abort();
      for (const fn of this.cleanups) {
        try { fn(); } catch (e) { /* already gone */ }
      }
    }
  }

  function heading(text, ...rest) {
    return h('h1', { tabindex: '-1' }, text, ...rest);
  }

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
      renderSignIn(view);
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
    if (!apiKey()) return;
    window.sessionStorage.removeItem(KEY_STORE);
    state.flash = message;
    route();
  }

  // ------------------------------------------------------------------ sign-in

  function renderSignIn(view) {
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
        window.sessionStorage.setItem(KEY_STORE, key);
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

  // ------------------------------------------------------------------ jobs list

  function renderJobs(view, params) {
    document.title = 'Jobs · childtune';
    const page = { cursor: null, previous: [], next: null };
    const refresh = () => view.refresh && view.refresh();
    let status = STATUSES.includes(params.get('status')) ? params.get('status') : '';
    const select = h('select', { id: 'status-filter' },
      h('option', { value: '', text: 'all' }),
      STATUSES.map((s) => h('option', { value: s, selected: s === status, text: s })));
    select.addEventListener('change', () => {
      // In place: the focus stays on the select; the address keeps the filter for a reload.
      status = select.value;
      page.cursor = null;
      page.previous = [];
      window.history.replaceState(null, '', status ? `#/jobs?status=${status}` : '#/jobs');
      refresh();
    });
    const updated = h('span', { class: 'muted', id: 'jobs-updated' });
    const tbody = h('tbody');
    const table = h('table', { id: 'jobs-table' },
      h('caption', { class: 'visually-hidden', text: 'Your jobs, newest first' }),
      h('thead', {}, h('tr', {}, ['Job', 'Status', 'Method', 'Model', 'Dataset', 'Progress', 'Time', 'Best', 'Final', 'Created']
        .map((t) => h('th', { scope: 'col', text: t })))),
      tbody);
    const newer = h('button', { type: 'button', class: 'secondary', text: '← Newer' });
    const older = h('button', { type: 'button', class: 'secondary', text: 'Older →' });
    newer.addEventListener('click', () => { page.cursor = page.previous.pop() || null; refresh(); });
    older.addEventListener('click', () => { page.previous.push(page.cursor); page.cursor = page.next; refresh(); });

    append(main,
      heading('Jobs'),
      h('div', { class: 'toolbar' },
        h('div', { class: 'inline-field' }, h('label', { for: 'status-filter', text: 'Status' }), select),
        h('a', { href: '#/new', class: 'button', text: 'New job' }),
        updated),
      tableWrap('Jobs', table),
      h('nav', { class: 'pager', 'aria-label': 'Pages of jobs' }, newer, older));

    let shown = null;
    const load = async () => {
      const query = new URLSearchParams({ limit: '20' });
      if (status) query.set('status', status);
      if (page.cursor) query.set('cursor', page.cursor);
      const asked = `${status}|${page.cursor}`;
      const answer = await getJSON(`/v1/jobs?${query}`);
      if (!view.alive) return false;
      if (asked !== `${status}|${page.cursor}`) return true; // the filter or page changed meanwhile
      page.next = answer.next_cursor;
      newer.disabled = page.previous.length === 0 && !page.cursor;
      older.disabled = !page.next;
      const rows = answer.data.map(jobRow);
      const signature = [status].concat(rows.map((r) => r.dataset.signature)).join('\n');
      if (signature !== shown) replaceRows(tbody, rows, answer.data.length ? null : emptyJobsRow(status));
      shown = signature;
      updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
      return true;
    };
    let loading = null;
    let again = false;
    view.refresh = () => {
      // Filter and pager: load now; the polling loop carries on with the new page.
      if (loading) { again = true; return; }
      loading = load().catch(() => {}).finally(() => {
        loading = null;
        if (again && view.alive) { again = false; view.refresh(); }
      });
    };
    view.poll(POLL_MS, load);
  }

  function emptyJobsRow(status) {
    return h('tr', {}, h('td', { colspan: '10' },
      status ? `No ${status} jobs. ` : 'No jobs yet. ', h('a', { href: '#/new', text: 'Submit one' }), '.'));
  }

  function jobRow(job) {
    const phase = job.status === 'running' ? job.phase : job.status === 'queued' && job.phase === 'waiting' ? 'waiting' : null;
    const cells = [
      h('td', {}, h('a', { href: `#/jobs/${encodeURIComponent(job.id)}` }, h('code', { text: job.id }))),
      h('td', {}, statusBadge(job.status, job.cancel_requested && !FINAL.has(job.status) ? 'cancelling' : phase)),
      h('td', { text: methodText(job.spec) }),
      h('td', { class: 'wrap', text: job.spec.model || '—' }),
      h('td', { text: datasetText(job.spec) }),
      h('td', {}, progressCell(job)),
      h('td', { text: timing(job) }),
      h('td', {}, metricCell(job.best_metrics)),
      h('td', {}, metricCell(job.final_metrics)),
      h('td', {}, timeEl(job.created_at, true)),
    ];
    const row = h('tr', { 'data-id': job.id }, cells);
    row.dataset.signature = cells.map((c) => c.textContent).join('|');
    return row;
  }

  function replaceRows(tbody, rows, empty) {
    // Keep keyboard focus on the same row's link across a refresh.
    const active = document.activeElement;
    const focusedRow = active && tbody.contains(active) ? active.closest('tr') : null;
    const focusedId = focusedRow ? focusedRow.dataset.id : null;
    clear(tbody);
    append(tbody, rows.length ? rows : [empty]);
    if (focusedId) {
      const again = tbody.querySelector(`tr[data-id="${CSS.escape(focusedId)}"] a`);
      if (again) again.focus();
    }
  }

  // ------------------------------------------------------------------ charts

  function makeChart(view, el, name, yLabel, series) {
    const width = () => Math.max(260, Math.floor(el.clientWidth || 600));
    const options = {
      width: width(),
      height: 240,
      scales: { x: { time: false } },
      axes: [{ label: 'step', incrs: STEP_INCRS }, { label: yLabel, size: 60 }],
      series: [{ label: 'step' }].concat(series.map((s, i) => ({
        label: s.label,
        stroke: PALETTE[i % PALETTE.length],
        dash: DASHES[i % DASHES.length],
        width: 2,
        spanGaps: true,
        points: { size: 5 },
      }))),
    };
    const data = [[]].concat(series.map(() => []));
    const chart = new window.uPlot(options, data, el);
    const observer = new ResizeObserver(() => chart.setSize({ width: width(), height: 240 }));
    observer.observe(el);
    view.cleanups.push(() => { observer.disconnect(); chart.destroy(); });
    state.charts[name] = chart;
    return chart;
  }

  // ------------------------------------------------------------------ one job

  function renderJob(view, jobId) {
    document.title = `${jobId} · childtune`;
    const wrap = h('div', { class: 'job' });
    append(main, h('p', { class: 'back' }, h('a', { href: '#/jobs', text: '← Jobs' })), wrap);
    const loading = h('p', { class: 'muted', text: 'Loading…' });
    append(wrap, heading('Job ', h('code', { text: jobId })), loading);

    const cursors = { metrics: '0', events: '0' };
    const loss = { x: [], y: [] };
    const evals = { x: [], y: [], metric: null, last: null };
    const samples = []; // every samples event (causal-lm), in order
    let samplesChoice = null; // index of the evaluation picked; null: follow the latest
    let parts = null;
    let ticks = 0;
    let sawFisher = false;
    let mask = 'none'; // none | summary (shown, audit to come) | done

    const build = (job) => {
      loading.remove();
      const facts = h('dl', { class: 'facts' });
      const cancel = h('button', { type: 'button', id: 'cancel-job', class: 'danger', text: 'Cancel job' });
      const actionMessage = h('p', { class: 'form-message', role: 'status', id: 'job-action-message' });
      cancel.addEventListener('click', async () => {
        cancel.disabled = true;
        actionMessage.textContent = 'Asking the API to cancel…';
        try {
          const answer = await (await api(`/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { method: 'POST' })).json();
          actionMessage.textContent = answer.status === 'cancelled' ? 'Cancelled.' : 'Cancel requested: the ranks stop within seconds.';
          update(answer);
        } catch (err) {
          if (!view.alive) return;
          cancel.disabled = false;
          actionMessage.textContent = `Not cancelled: ${err.message}`;
        }
      });
      const actions = h('div', { class: 'actions' }, cancel, actionMessage);
      const errorSection = h('section', { id: 'job-error', class: 'error-box', hidden: true, 'aria-labelledby': 'job-error-h' },
        h('h2', { id: 'job-error-h', text: 'Error' }), h('pre', { class: 'error-text' }));
      const lossEl = h('div', { class: 'chart', id: 'chart-loss', role: 'img', 'aria-label': 'Training loss by step' });
      const evalEl = h('div', { class: 'chart', id: 'chart-eval', role: 'img', 'aria-label': 'Evaluation metric by step' });
      const lossNote = h('p', { class: 'chart-note', id: 'loss-note', text: 'No training records yet.' });
      const evalNote = h('p', { class: 'chart-note', id: 'eval-note', text: 'No evaluation yet.' });
      const evalTitle = h('h2', { id: 'eval-h', text: 'Evaluation metric' });
      const timeline = h('ol', { class: 'timeline', id: 'timeline' });
      const ckptBody = h('tbody');
      const ckptMessage = h('p', { class: 'form-message', role: 'status', id: 'download-message' });
      // causal-lm: the model's greedy answers to the first evaluation prompts, per evaluation.
      const samplesTitle = h('h2', { id: 'samples-h', text: 'Samples' });
      const samplesPick = h('select', { id: 'samples-step' });
      const samplesPicker = h('div', { class: 'inline-field', hidden: true },
        h('label', { for: 'samples-step', text: 'Evaluation at' }), samplesPick);
      const samplesBody = h('tbody');
      const samplesSection = h('section', { id: 'samples', hidden: true, 'aria-labelledby': 'samples-h' },
        samplesTitle,
        h('div', { class: 'toolbar' }, samplesPicker,
          h('p', { class: 'hint', text: 'The model’s greedy answers to the first evaluation prompts.' })),
        tableWrap('Samples', h('table', { id: 'samples-table' },
          h('thead', {}, h('tr', {}, ['#', 'Prompt', 'Answer', 'Reference'].map((t) => h('th', { scope: 'col', text: t })))),
          samplesBody)));
      samplesPick.addEventListener('change', () => {
        const i = Number(samplesPick.value);
        samplesChoice = i === samples.length - 1 ? null : i;
        showSamples();
      });
      const mask = h('section', { id: 'mask', hidden: true, 'aria-labelledby': 'mask-h' },
        h('h2', { id: 'mask-h', text: 'Child network (ChildTuning-D mask)' }), h('div', { class: 'mask-body' }));
      append(wrap,
        h('section', { class: 'summary', 'aria-label': 'Summary' }, facts, actions),
        errorSection,
        h('div', { class: 'charts' },
          h('section', { 'aria-labelledby': 'loss-h' }, h('h2', { id: 'loss-h', text: 'Training loss' }), lossEl, lossNote),
          h('section', { 'aria-labelledby': 'eval-h' }, evalTitle, evalEl, evalNote)),
        samplesSection,
        h('div', { class: 'columns' },
          h('section', { 'aria-labelledby': 'timeline-h' }, h('h2', { id: 'timeline-h', text: 'Timeline' }), timeline),
          h('section', { 'aria-labelledby': 'ckpt-h' },
            h('h2', { id: 'ckpt-h', text: 'Checkpoints' }),
            tableWrap('Checkpoints', h('table', { id: 'checkpoints' },
              h('thead', {}, h('tr', {}, ['Name', 'Kind', 'Step', 'Size', 'Files', ''].map((t) => h('th', { scope: 'col', text: t })))),
              ckptBody)),
            ckptMessage)),
        mask,
        h('section', { 'aria-labelledby': 'spec-h' }, h('h2', { id: 'spec-h', text: 'Spec' }),
          h('pre', { class: 'spec', id: 'spec', tabindex: '0' }, h('code', { text: JSON.stringify(job.spec, null, 2) }))));
      const lossChart = makeChart(view, lossEl, 'loss', 'loss', [{ label: 'train loss' }]);
      return {
        facts, actions, cancel, errorSection, lossChart, evalChart: null, lossNote, evalNote, evalTitle, lossEl, evalEl, timeline, ckptBody, ckptMessage, mask,
        samplesSection, samplesTitle, samplesPick, samplesPicker, samplesBody,
      };
    };

    const update = (job) => {
      const rows = [
        ['Status', statusBadge(job.status, job.cancel_requested && !FINAL.has(job.status) ? 'cancelling' : null)],
        ['Phase', (!FINAL.has(job.status) && job.phase) || '—'],
        ['Progress', progressCell(job)],
        ['Time', timing(job, rate())],
        ['Method', methodText(job.spec)],
        ['Model', job.spec.model],
        ['Dataset', datasetText(job.spec)],
        ['Ranks', `${(job.spec.resources || {}).num_ranks || 1} on ${(job.spec.resources || {}).device || 'auto'} (queue ${job.queue})`],
        ['Worker', job.worker || '—'],
        ['Attempts', String(job.attempts)],
        ['Created', timeEl(job.created_at, true)],
        ['Started', timeEl(job.started_at, true)],
        ['Finished', timeEl(job.finished_at, true)],
        ['Best', fmtMetric(job.best_metrics)],
        ['Final', fmtMetric(job.final_metrics)],
      ];
      if (job.experiment_id) {
        rows.push(['Experiment', h('a', { href: `#/experiments/${encodeURIComponent(job.experiment_id)}` }, h('code', { text: job.experiment_id }))]);
      }
      clear(parts.facts);
      for (const [name, value] of rows) {
        append(parts.facts, h('div', { 'data-fact': name.toLowerCase() }, h('dt', { text: name }), h('dd', {}, value)));
      }
      parts.cancel.hidden = FINAL.has(job.status);
      const said = parts.actions.querySelector('[role="status"]');
      if (job.status === 'cancelled' && said.textContent.startsWith('Cancel requested')) said.textContent = 'Cancelled.';
      parts.actions.hidden = FINAL.has(job.status) && !parts.actions.querySelector('[role="status"]').textContent;
      if (job.cancel_requested) parts.cancel.disabled = true;
      parts.errorSection.hidden = !job.error;
      parts.errorSection.querySelector('pre').textContent = job.error || '';
    };

    // Training steps per second, from the first and the latest train record's times.
    const trainTimes = { first: null, last: null };
    const rate = () => {
      const { first, last } = trainTimes;
      return first && last && last.step > first.step && last.time > first.time
        ? (last.step - first.step) / (last.time - first.time) : null;
    };

    const addMetrics = (records) => {
      const changed = { loss: false, eval: false };
      for (const r of records) {
        if (r.kind === 'train' && typeof r.loss === 'number') {
          loss.x.push(r.step);
          loss.y.push(r.loss);
          if (r.time) {
            trainTimes.last = { step: r.step, time: r.time };
            if (!trainTimes.first) trainTimes.first = trainTimes.last;
          }
          changed.loss = true;
        } else if (r.kind === 'eval' && r.main_metric) {
          evals.x.push(r.step);
          evals.y.push(typeof r.main_value === 'number' ? r.main_value : null);
          evals.metric = r.main_metric;
          evals.last = r;
          changed.eval = true;
        }
      }
      if (changed.loss) {
        parts.lossChart.setData([loss.x, loss.y]);
        const last = loss.x.length - 1;
        const text = `${loss.x.length} training records; latest loss ${fmtNum(loss.y[last])} at step ${loss.x[last]}.`;
        parts.lossNote.textContent = text;
        parts.lossEl.setAttribute('aria-label', `Training loss by step. ${text}`);
      }
      if (changed.eval) {
        const name = metricName(evals.metric);
        parts.evalTitle.textContent = `Evaluation: ${name}${lowerIsBetter(evals.metric) ? ' (lower is better)' : ''}`;
        if (!parts.evalChart) parts.evalChart = makeChart(view, parts.evalEl, 'eval', name, [{ label: name }]);
        parts.evalChart.setData([evals.x, evals.y]);
        const last = evals.x.length - 1;
        // The latest record's other eval_ numbers (loss; token accuracy and tokens of causal-lm).
        const others = Object.entries(evals.last)
          .filter(([k, v]) => k.startsWith('eval_') && k !== evals.metric && typeof v === 'number')
          .map(([k, v]) => `${metricName(k)} ${fmtNum(v)}`);
        const text = `${evals.x.length} evaluation${evals.x.length === 1 ? '' : 's'}; latest ${name} ${fmtNum(evals.y[last])} at step ${evals.x[last]}`
          + (others.length ? ` (${others.join(', ')}).` : '.');
        parts.evalNote.textContent = text;
        parts.evalEl.setAttribute('aria-label', `Evaluation ${name} by step. ${text}`);
      }
    };

    const sampleStepText = (e) => (e.step === 0 ? 'before training (step 0)' : `at step ${e.step}`);
    // One samples event as the table's rows (texts as text nodes: never parsed as HTML).
    const showSamples = () => {
      if (!samples.length) return;
      const i = samplesChoice === null ? samples.length - 1 : samplesChoice;
      const e = samples[i];
      parts.samplesTitle.textContent = `Samples ${sampleStepText(e)}`;
      parts.samplesPick.value = String(i);
      parts.samplesPicker.hidden = samples.length < 2;
      // Line breaks shown as ⏎ (an answer of blank lines stays visible and short).
      const text = (value, cls) => (value === '' || value === null || value === undefined
        ? h('td', { class: cls }, h('span', { class: 'muted', text: '(empty)' }))
        : h('td', { class: cls, text: String(value).replace(/\r\n|\r|\n/g, '⏎') }));
      const rows = (e.samples || []).map((sample, k) => h('tr', {},
        h('th', { scope: 'row', text: String(k + 1) }),
        text(sample.prompt, 'sample-text'), text(sample.answer, 'sample-text sample-answer'), text(sample.reference, 'sample-text')));
      clear(parts.samplesBody);
      append(parts.samplesBody, rows.length ? rows : h('tr', {}, h('td', { colspan: '4', text: 'No samples.' })));
      parts.samplesSection.hidden = false;
    };

    let firstEventTime = null;
    const addEvents = (records) => {
      let newSamples = false;
      for (const e of records) {
        if (e.type === 'progress') continue; // the Fisher pass's ticks: the phase shows it
        if (e.type === 'fisher') sawFisher = true;
        if (e.type === 'samples') {
          samples.push(e);
          parts.samplesPick.append(h('option', { value: String(samples.length - 1), text: sampleStepText(e) }));
          newSamples = true;
        }
        if (firstEventTime === null && e.time) firstEventTime = e.time;
        const offset = e.time && firstEventTime !== null ? ` (+${fmtDuration(e.time - firstEventTime)})` : '';
        parts.timeline.append(h('li', { class: e.type === 'phase' ? 'phase' : `event-${e.type}` },
          timeEl(e.time), h('span', { class: 'offset', text: offset }), ' ', h('span', { class: 'what', text: describeEvent(e) })));
      }
      if (newSamples) showSamples();
    };

    const drain = async (which, add) => {
      for (;;) {
        const page = await getJSON(`/v1/jobs/${encodeURIComponent(jobId)}/${which}?after=${encodeURIComponent(cursors[which])}&limit=${PAGE}`);
        if (!view.alive) return;
        cursors[which] = page.next_cursor;
        add(page.data);
        if (page.data.length < PAGE) return;
      }
    };

    const loadCheckpoints = async () => {
      const answer = await getJSON(`/v1/jobs/${encodeURIComponent(jobId)}/checkpoints`);
      if (!view.alive) return;
      clear(parts.ckptBody);
      if (!answer.data.length) {
        append(parts.ckptBody, h('tr', {}, h('td', { colspan: '6', text: 'None yet.' })));
      }
      for (const ckpt of answer.data) {
        const button = h('button', {
          type: 'button', class: 'secondary', 'data-checkpoint': ckpt.name, 'aria-label': `Download ${ckpt.name}`, text: 'Download',
        });
        button.addEventListener('click', () => downloadArchive(view, jobId, ckpt, button, parts.ckptMessage));
        append(parts.ckptBody, h('tr', {},
          h('td', {}, h('code', { text: ckpt.name })), h('td', { text: ckpt.kind }), h('td', { text: ckpt.step === null ? '—' : String(ckpt.step) }),
          h('td', { text: fmtBytes(ckpt.size_bytes) }), h('td', { text: String(ckpt.num_files) }), h('td', {}, button)));
      }
    };

    const loadMask = async (job) => {
      try {
        const summary = await getJSON(`/v1/jobs/${encodeURIComponent(jobId)}/mask`);
        if (!view.alive) return;
        renderMask(parts.mask.querySelector('.mask-body'), summary);
        mask = FINAL.has(job.status) ? 'done' : 'summary';
      } catch (err) {
        if (!(err instanceof ApiError) || err.status !== 404) throw err;
        const body = clear(parts.mask.querySelector('.mask-body'));
        append(body, h('p', { class: 'muted', text: FINAL.has(job.status) ? err.message : 'Not computed yet: the Fisher pass selects the child network before training.' }));
        if (FINAL.has(job.status)) mask = 'done';
      }
      parts.mask.hidden = false;
    };

    view.poll(2000, async () => {
      let job;
      try {
        job = await getJSON(`/v1/jobs/${encodeURIComponent(jobId)}`);
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          document.title = 'Job not found · childtune';
          clear(wrap);
          append(wrap, heading('Job not found'),
            h('p', { id: 'not-found' }, 'No job ', h('code', { text: jobId }), ' belongs to this API key. ', h('a', { href: '#/jobs', text: 'Back to your jobs' }), '.'));
          if (state.navigated) wrap.querySelector('h1').focus();
          return false;
        }
        throw err;
      }
      if (!view.alive) return false;
      if (!parts) parts = build(job);
      const finished = FINAL.has(job.status);
      // The job first, then its streams: a finished job's streams are complete once read after.
      await drain('metrics', addMetrics);
      await drain('events', addEvents);
      if (!view.alive) return false;
      update(job);
      if (ticks % 4 === 0 || finished) await loadCheckpoints();
      const dMode = ((job.spec.childtuning || {}).mode || 'childtuning-d') === 'childtuning-d';
      if (dMode && (ticks === 0 || (sawFisher && mask === 'none') || (finished && mask !== 'done'))) await loadMask(job);
      ticks += 1;
      if (finished) announce(`Job ${job.status}.`);
      return !finished;
    });
  }

  // One split of a causal-lm job's data event: `train 80 of 81 rows (2 truncated, 1 dropped)`.
  function dataSplitText(name, c) {
    if (!c) return `${name} —`;
    const rows = c.kept === c.rows || c.rows === undefined ? `${fmtInt(c.kept)} rows` : `${fmtInt(c.kept)} of ${fmtInt(c.rows)} rows`;
    const dropped = (c.dropped_overlong || 0) + (c.dropped_no_target || 0);
    const notes = [c.truncated ? `${fmtInt(c.truncated)} truncated` : null, dropped ? `${fmtInt(dropped)} dropped` : null].filter(Boolean);
    return `${name} ${rows}${notes.length ? ` (${notes.join(', ')})` : ''}`;
  }

  function describeEvent(e) {
    switch (e.type) {
      case 'started':
        return `started: ${e.world_size} rank(s), ZeRO ${e.zero_stage}, ${e.precision} on ${e.device}, ${e.total_steps} steps`
          + (e.resumed_from ? `, resumed from step ${e.resumed_from}` : '');
      case 'phase': return `phase: ${e.phase}`;
      case 'fisher': return `Fisher pass: kept ${fmtPct(e.kept_fraction)} of ${fmtInt(e.num_elements)} elements`;
      case 'checkpoint': return `checkpoint ${e.name} at step ${e.step}`;
      case 'best': return `new best ${metricName(e.main_metric)} ${fmtNum(e.main_value)} at step ${e.step}`;
      case 'data':
        return `data: ${dataSplitText('train', e.train)}, ${dataSplitText('eval', e.eval)}, max ${e.max_seq_length} tokens`
          + ` (overlong: ${e.overlong}), chat template ${e.chat_template ? 'on' : 'off'}`;
      case 'samples': {
        const n = (e.samples || []).length;
        return `samples ${e.step === 0 ? 'before training (step 0)' : `at step ${e.step}`}: ${n} answer${n === 1 ? '' : 's'}`;
      }
      case 'early_stopped': return `early stop at step ${e.step} (best step ${e.best_step})`;
      case 'resumed': return `resumed from step ${e.from_step}`;
      case 'model': return `saved ${e.which} (step ${e.step})`;
      case 'audit': return `audit: changed ${fmtPct(e.changed_fraction)}, ${fmtInt(e.changed_outside)} outside the child`;
      case 'delta': return `delta written: ${fmtBytes(e.delta_bytes)} (model ${fmtBytes(e.model_bytes)})`;
      case 'error': return `error${e.step !== null && e.step !== undefined ? ` at step ${e.step}` : ''}: ${e.message}`;
      case 'finished': return `finished: ${e.status} at step ${e.step}${e.error ? ` (${e.error})` : ''}`;
      default: return e.type;
    }
  }

  async function downloadArchive(view, jobId, ckpt, button, message) {
    // The archive route needs the bearer header, which a plain link cannot send.
    button.disabled = true;
    message.textContent = `Downloading ${ckpt.name}…`;
    try {
      const blob = await (await api(ckpt.archive_url)).blob();
      const url = URL.createObjectURL(blob);
      const link = h('a', { href: url, download: `${jobId}-${ckpt.name}.tar`, hidden: true });
      document.body.append(link);
      link.click();
      link.remove();
      window.setTimeout(() => URL.revokeObjectURL(url), 60000);
      message.textContent = `Downloaded ${ckpt.name} (${fmtBytes(blob.size)}).`;
    } catch (err) {
      if (view.alive) message.textContent = `Download failed: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  }

  function maskGroup(name) {
    const layer = /(?:^|\.)layers?\.(\d+)\./.exec(name);
    if (layer) return { key: `layer ${layer[1]}`, order: 1 + Number(layer[1]) };
    if (/embeddings?/.test(name)) return { key: 'embeddings', order: 0 };
    return { key: 'head', order: 1e9 };
  }

  function renderMask(body, summary) {
    clear(body);
    const params = summary.params || {};
    const audit = summary.audit || null;
    const auditRows = (audit && audit.params) || {};
    const groups = new Map();
    for (const [name, info] of Object.entries(params)) {
      const { key, order } = maskGroup(name);
      const g = groups.get(key) || { key, order, names: 0, kept: 0, numel: 0, changed: 0, outside: 0, audited: false };
      g.names += 1;
      g.kept += info.kept || 0;
      g.numel += info.numel || 0;
      const row = auditRows[name];
      if (row) {
        g.audited = true;
        g.changed += row.changed || 0;
        g.outside += row.changed_outside || 0;
      }
      groups.set(key, g);
    }
    const sorted = Array.from(groups.values()).sort((a, b) => a.order - b.order);
    append(body, h('p', {},
      `Mode ${summary.mode}, reserve_p ${fmtNum(summary.reserve_p)}: kept ${fmtPct(summary.kept_fraction)} `
      + `of ${fmtInt(summary.num_elements)} elements (threshold ${fmtNum(summary.threshold)}).`));
    const head = ['Group', 'Tensors', 'Kept', 'Elements', 'Kept fraction'];
    if (audit) head.push('Changed', 'Changed outside the child');
    const rows = sorted.map((g) => {
      const fraction = g.numel ? g.kept / g.numel : 0;
      const bar = h('span', { class: 'bar', 'aria-hidden': 'true' }, h('span', { class: 'bar-fill' }));
      bar.firstChild.style.width = `${(100 * fraction).toFixed(1)}%`;
      const cells = [
        h('th', { scope: 'row', text: g.key }), h('td', { text: String(g.names) }), h('td', { text: fmtInt(g.kept) }),
        h('td', { text: fmtInt(g.numel) }), h('td', { class: 'bar-cell' }, bar, h('span', { text: fmtPct(fraction) })),
      ];
      if (audit) {
        cells.push(h('td', { text: g.audited ? `${fmtInt(g.changed)} (${fmtPct(g.numel ? g.changed / g.numel : 0)})` : '—' }));
        cells.push(h('td', { text: g.audited ? fmtInt(g.outside) : '—' }));
      }
      return h('tr', { 'data-group': g.key }, cells);
    });
    append(body, tableWrap('Kept fraction per layer', h('table', { id: 'mask-table' },
      h('caption', { text: 'Kept fraction per layer (tensors grouped by layer.N, embeddings, head)' }),
      h('thead', {}, h('tr', {}, head.map((t) => h('th', { scope: 'col', text: t })))),
      h('tbody', {}, rows))));
    if (audit) {
      const verdict = audit.child_only ? 'only the child moved' : 'elements outside the child moved (weight decay or a non-strict run)';
      append(body, h('p', { id: 'mask-audit' },
        `Audit of the final weights: changed ${fmtPct(audit.changed_fraction)}, kept ${fmtPct(audit.kept_fraction)}, `
        + `${fmtInt(audit.changed_outside)} changed outside the child: ${verdict}.`));
    } else {
      append(body, h('p', { class: 'muted', id: 'mask-audit', text: 'Audit of the weights: written when the job finishes.' }));
    }
  }

  // ------------------------------------------------------------------ experiments

  function countsText(counts) {
    const order = ['running', 'waiting', 'queued', 'succeeded', 'failed', 'cancelled'];
    const parts = order.filter((k) => counts && counts[k]).map((k) => `${counts[k]} ${k}`);
    return parts.length ? parts.join(' · ') : '—';
  }

  function renderExperiments(view) {
    document.title = 'Experiments · childtune';
    const tbody = h('tbody');
    const page = { cursor: null, previous: [], next: null };
    const newer = h('button', { type: 'button', class: 'secondary', text: '← Newer' });
    const older = h('button', { type: 'button', class: 'secondary', text: 'Older →' });
    append(main,
      heading('Experiments'),
      h('p', { class: 'hint' }, 'Grids of jobs compared over seeds; submit one with ', h('code', { text: 'childtune experiment submit grid.yaml' }), ' or POST /v1/experiments (docs/experiments.md).'),
      tableWrap('Experiments', h('table', { id: 'experiments-table' },
        h('thead', {}, h('tr', {}, ['Experiment', 'Name', 'Status', 'Jobs', 'Metric', 'Best cell', 'Created'].map((t) => h('th', { scope: 'col', text: t })))),
        tbody)),
      h('nav', { class: 'pager', 'aria-label': 'Pages of experiments' }, newer, older));
    let busy = null;
    const load = async () => {
      const query = new URLSearchParams({ limit: '20' });
      if (page.cursor) query.set('cursor', page.cursor);
      const asked = page.cursor;
      const answer = await getJSON(`/v1/experiments?${query}`);
      if (!view.alive) return false;
      if (asked !== page.cursor) return true; // paged meanwhile
      page.next = answer.next_cursor;
      newer.disabled = !page.cursor;
      older.disabled = !page.next;
      const rows = answer.data.map((e) => h('tr', { 'data-id': e.id },
        h('td', {}, h('a', { href: `#/experiments/${encodeURIComponent(e.id)}` }, h('code', { text: e.id }))),
        h('td', { text: e.name || '—' }),
        h('td', {}, statusBadge(e.status)),
        h('td', { text: countsText(e.counts) }),
        h('td', { text: `${metricName(e.metric)} (${e.score})` }),
        h('td', { text: e.best_cell || '—' }),
        h('td', {}, timeEl(e.created_at, true))));
      replaceRows(tbody, rows, h('tr', {}, h('td', { colspan: '7', text: 'No experiments yet.' })));
      return true;
    };
    const now = () => { if (!busy) busy = load().finally(() => { busy = null; }); };
    newer.addEventListener('click', () => { page.cursor = page.previous.pop() || null; now(); });
    older.addEventListener('click', () => { page.previous.push(page.cursor); page.cursor = page.next; now(); });
    view.poll(3000, load);
  }

  function renderExperiment(view, expId) {
    document.title = `${expId} · childtune`;
    const wrap = h('div', { class: 'experiment' });
    append(main, h('p', { class: 'back' }, h('a', { href: '#/experiments', text: '← Experiments' })), wrap);
    const loading = h('p', { class: 'muted', text: 'Loading…' });
    append(wrap, heading('Experiment ', h('code', { text: expId })), loading);
    let parts = null;
    let chart = null;

    const build = (exp) => {
      loading.remove();
      wrap.querySelector('h1').textContent = exp.name ? `Experiment: ${exp.name}` : `Experiment ${exp.id}`;
      const facts = h('dl', { class: 'facts' });
      const cancel = h('button', { type: 'button', class: 'danger', id: 'cancel-experiment', text: 'Cancel experiment' });
      const message = h('p', { class: 'form-message', role: 'status' });
      cancel.addEventListener('click', async () => {
        cancel.disabled = true;
        try {
          await api(`/v1/experiments/${encodeURIComponent(expId)}/cancel`, { method: 'POST' });
          message.textContent = 'Cancel requested for every job.';
        } catch (err) {
          cancel.disabled = false;
          message.textContent = `Not cancelled: ${err.message}`;
        }
      });
      const cellsBody = h('tbody');
      const jobsBody = h('tbody');
      const chartEl = h('div', { class: 'chart wide', id: 'chart-curves', role: 'img', 'aria-label': 'Each cell’s evaluation metric by step' });
      const chartNote = h('p', { class: 'chart-note', text: 'No evaluations yet.' });
      const plots = h('div', { class: 'plots' });
      append(wrap,
        h('section', { class: 'summary', 'aria-label': 'Summary' }, facts, h('div', { class: 'actions' }, cancel, message)),
        h('section', { 'aria-labelledby': 'cells-h' }, h('h2', { id: 'cells-h', text: 'Cells' }),
          tableWrap('Cells', h('table', { id: 'cells-table' },
            h('thead', {}, h('tr', {}, ['Cell', 'n', 'Mean ± std', 'Min', 'Max', 'Δ vs baseline [95% CI]', 'Verdict', ''].map((t) => h('th', { scope: 'col', text: t })))),
            cellsBody))),
        h('section', { 'aria-labelledby': 'curves-h' }, h('h2', { id: 'curves-h', text: 'Curves (mean over seeds)' }), chartEl, chartNote),
        h('section', { 'aria-labelledby': 'exp-jobs-h' }, h('h2', { id: 'exp-jobs-h', text: 'Jobs' }),
          tableWrap('Jobs of the experiment', h('table', { id: 'experiment-jobs' },
            h('thead', {}, h('tr', {}, ['Job', 'Values', 'Status', 'Progress', 'Score', 'Error'].map((t) => h('th', { scope: 'col', text: t })))),
            jobsBody))),
        h('section', { 'aria-labelledby': 'plots-h' }, h('h2', { id: 'plots-h', text: 'Plots' }), plots));
      loadPlots(view, expId, plots).catch(() => { /* optional */ });
      return { facts, cancel, cellsBody, jobsBody, chartEl, chartNote };
    };

    const update = (exp) => {
      const rows = [
        ['Status', statusBadge(exp.status)],
        ['Jobs', countsText(exp.counts)],
        ['Metric', `${metricName(exp.metric)} (${exp.score} score, ${exp.higher_is_better ? 'higher' : 'lower'} is better)`],
        ['Axes', Object.entries(exp.axes || {}).map(([k, v]) => `${k}: ${v.join(', ')}`).join('; ') || '—'],
        ['Baseline', exp.baseline ? Object.entries(exp.baseline).map(([k, v]) => `${k}=${v}`).join(', ') : '—'],
        ['Parallel', String(exp.max_parallel)],
        ['Created', timeEl(exp.created_at, true)],
        ['Finished', timeEl(exp.finished_at, true)],
      ];
      clear(parts.facts);
      for (const [name, value] of rows) {
        append(parts.facts, h('div', { 'data-fact': name.toLowerCase() }, h('dt', { text: name }), h('dd', {}, value)));
      }
      parts.cancel.hidden = FINAL.has(exp.status);
      clear(parts.cellsBody);
      for (const cell of exp.cells) {
        const vs = cell.vs_baseline;
        const marks = [cell.baseline ? 'baseline' : null, exp.best_cell === cell.label ? 'best' : null].filter(Boolean);
        const diff = vs && vs.mean_diff !== null && vs.mean_diff !== undefined
          ? `${vs.mean_diff >= 0 ? '+' : ''}${fmtNum(vs.mean_diff)}${vs.ci95 ? ` [${fmtNum(vs.ci95[0])}, ${fmtNum(vs.ci95[1])}]` : ''}`
          : '—';
        append(parts.cellsBody, h('tr', { class: marks.join(' ') },
          h('th', { scope: 'row', text: cell.label }),
          h('td', { text: String(cell.n) }),
          h('td', { text: cell.mean === null ? '—' : `${fmtNum(cell.mean)}${cell.std === null ? '' : ` ± ${fmtNum(cell.std)}`}` }),
          h('td', { text: fmtNum(cell.min) }),
          h('td', { text: fmtNum(cell.max) }),
          h('td', { text: diff }),
          h('td', { text: vs ? vs.verdict : '—' }),
          h('td', {}, marks.map((m) => h('span', { class: `mark mark-${m}`, text: m })))));
      }
      clear(parts.jobsBody);
      for (const job of exp.jobs) {
        append(parts.jobsBody, h('tr', {},
          h('td', {}, h('a', { href: `#/jobs/${encodeURIComponent(job.id)}` }, h('code', { text: job.id }))),
          h('td', { text: Object.entries(job.values).map(([k, v]) => `${k}=${v}`).join(', ') }),
          h('td', {}, statusBadge(job.status, job.status === 'queued' || job.status === 'running' ? job.phase : null)),
          h('td', {}, progressCell({ progress: { step: job.step, total_steps: job.total_steps } })),
          h('td', { text: fmtNum(job.score) }),
          h('td', { class: 'wrap', text: job.error || '' })));
      }
    };

    const drawCurves = (curves, exp) => {
      const cells = curves.cells || [];
      const steps = Array.from(new Set([].concat(...cells.map((c) => c.points.map((p) => p.step))))).sort((a, b) => a - b);
      if (!chart) {
        chart = makeChart(view, parts.chartEl, 'curves', metricName(curves.metric || exp.metric), cells.map((c) => ({ label: c.label })));
      }
      const data = [steps].concat(cells.map((c) => {
        const byStep = new Map(c.points.map((p) => [p.step, p.mean]));
        return steps.map((s) => (byStep.has(s) ? byStep.get(s) : null));
      }));
      chart.setData(data);
      parts.chartNote.textContent = steps.length
        ? `${metricName(curves.metric || exp.metric)} by step, mean over each cell's seeds; ${cells.length} cells, evaluations at ${steps.length} steps.`
        : 'No evaluations yet.';
    };

    view.poll(3000, async () => {
      let exp;
      try {
        exp = await getJSON(`/v1/experiments/${encodeURIComponent(expId)}`);
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) {
          clear(wrap);
          append(wrap, heading('Experiment not found'), h('p', {}, 'No experiment ', h('code', { text: expId }), ' belongs to this API key.'));
          return false;
        }
        throw err;
      }
      if (!view.alive) return false;
      if (!parts) parts = build(exp);
      update(exp);
      drawCurves(await getJSON(`/v1/experiments/${encodeURIComponent(expId)}/curves`), exp);
      return !FINAL.has(exp.status);
    });
  }

  async function loadPlots(view, expId, holder) {
    const list = await getJSON(`/v1/experiments/${encodeURIComponent(expId)}/plots`);
    if (!view.alive) return;
    for (const plot of list.data) {
      const figure = h('figure', {}, h('figcaption', { text: plot.description }));
      const button = h('button', { type: 'button', class: 'secondary', text: `Show ${plot.name}` });
      button.addEventListener('click', async () => {
        button.disabled = true;
        try {
          const blob = await (await api(plot.url)).blob();
          const img = h('img', { alt: plot.description, src: URL.createObjectURL(blob) });
          view.cleanups.push(() => URL.revokeObjectURL(img.src));
          button.replaceWith(img);
        } catch (err) {
          button.disabled = false;
          button.textContent = `Show ${plot.name} (failed: ${err.message})`;
        }
      });
      figure.prepend(button);
      holder.append(figure);
    }
  }

  // ------------------------------------------------------------------ new job

  function field(id, label, control, hint) {
    const hintEl = hint ? h('p', { class: 'hint', id: `${id}-hint`, text: hint }) : null;
    if (hintEl) control.setAttribute('aria-describedby', `${id}-hint`);
    return h('div', { class: 'field' }, h('label', { for: id, text: label }), control, hintEl);
  }

  function textInput(id, path, value, kind) {
    // Text with an input mode rather than type=number: the API's check is the one that counts,
    // and its message appears next to the input (a browser would block 1.5 with its own tooltip).
    return h('input', {
      id, name: id, type: 'text', value: value === undefined ? '' : value, 'data-field': path,
      'data-kind': kind || null, inputmode: kind === 'int' ? 'numeric' : kind === 'float' ? 'decimal' : null,
      autocomplete: 'off', spellcheck: 'false',
    });
  }

  function selectInput(id, path, options, selected) {
    return h('select', { id, name: id, 'data-field': path },
      options.map((o) => (Array.isArray(o) ? o : [o, o])).map(([value, text]) => h('option', { value, selected: value === selected, text })));
  }

  function renderNewJob(view) {
    document.title = 'New job · childtune';
    const uploads = {}; // input id -> uploaded file record
    const presetGroup = h('div', { id: 'preset-group' },
      field('f-preset', 'Preset', selectInput('f-preset', 'dataset.preset', PRESETS, 'glue/rte'),
        'The task\'s train and dev sets on the workers (CHILDTUNE_DATA); instruct/sst-2 (causal-lm) needs a decoder model such as smollm2-135m.'));
    const fileInput = (id, path, label) => {
      const input = h('input', { id, name: id, type: 'file', accept: '.csv,.tsv,.jsonl,.json,text/csv,text/tab-separated-values', 'data-field': path });
      const status = h('p', { class: 'hint', id: `${id}-status`, 'aria-live': 'polite', text: 'csv or tsv with a header row, or jsonl; uploaded when chosen.' });
      input.setAttribute('aria-describedby', `${id}-status`);
      input.addEventListener('change', () => uploadChosen(view, input, status, uploads, columnsList));
      return h('div', { class: 'field' }, h('label', { for: id, text: label }), input, status);
    };
    const columnsList = h('datalist', { id: 'f-columns' });
    const columnInput = (id, path, label, value, hint) => {
      const input = textInput(id, path, value);
      input.setAttribute('list', 'f-columns');
      return field(id, label, input, hint);
    };
    // causal-lm rows are prompt/completion or chat objects: no columns to name (the API refuses them).
    const columnFields = [
      columnInput('f-text-column', 'dataset.text_column', 'Text column', 'text'),
      columnInput('f-text-pair-column', 'dataset.text_pair_column', 'Second text column', '', 'Optional: for sentence pairs.'),
      columnInput('f-label-column', 'dataset.label_column', 'Label column', 'label'),
    ];
    const taskType = selectInput('f-task-type', 'dataset.task_type', TASK_TYPES, 'classification');
    taskType.addEventListener('change', () => {
      for (const f of columnFields) f.hidden = taskType.value === 'causal-lm';
    });
    const filesGroup = h('div', { id: 'files-group', hidden: true },
      fileInput('f-train-file', 'dataset.train_file', 'Training file'),
      fileInput('f-eval-file', 'dataset.eval_file', 'Evaluation file'),
      columnsList,
      h('div', { class: 'grid' },
        field('f-task-type', 'Task type', taskType,
          'causal-lm: jsonl rows of {"prompt", "completion"} or {"messages": [...]}, for a decoder model.'),
        columnFields));
    const sourceRadio = (value, label, checked) => h('label', { class: 'radio' },
      h('input', { type: 'radio', name: 'source', value, checked }), ` ${label}`);
    const source = h('fieldset', { class: 'radios' }, h('legend', { text: 'Source' }),
      sourceRadio('preset', 'Built-in preset', true), sourceRadio('files', 'Upload files', false));
    source.addEventListener('change', () => {
      const files = source.querySelector('input:checked').value === 'files';
      presetGroup.hidden = files;
      filesGroup.hidden = !files;
    });

    const formMessage = h('div', { id: 'form-message', class: 'form-message error', role: 'alert' });
    const submit = h('button', { type: 'submit', id: 'submit-job', text: 'Submit job' });
    const form = h('form', { id: 'new-job', novalidate: true, 'aria-describedby': 'form-message' },
      h('fieldset', {}, h('legend', { text: 'Data' }), source, presetGroup, filesGroup),
      h('fieldset', {}, h('legend', { text: 'Model and method' }),
        h('div', { class: 'grid' },
          field('f-model', 'Model', textInput('f-model', 'model', 'minilm-l6'),
            'minilm-l6, smollm2-135m (a decoder, for causal-lm), a model folder name the operator provides, or job-<id> of your succeeded job.'),
          field('f-mode', 'Mode', selectInput('f-mode', 'childtuning.mode', MODES, 'childtuning-d')),
          field('f-reserve-p', 'reserve_p', textInput('f-reserve-p', 'childtuning.reserve_p', '0.3', 'float'),
            'Fraction of elements kept, 0 < p ≤ 1 (not used by vanilla).'))),
      h('fieldset', {}, h('legend', { text: 'Hyperparameters' }),
        h('div', { class: 'grid' },
          field('f-learning-rate', 'Learning rate', textInput('f-learning-rate', 'hyperparameters.learning_rate', '4e-5', 'float')),
          field('f-batch-size', 'Batch size', textInput('f-batch-size', 'hyperparameters.batch_size', '16', 'int'), 'Global: summed over ranks.'),
          field('f-epochs', 'Epochs', textInput('f-epochs', 'hyperparameters.epochs', '3', 'int')),
          field('f-max-steps', 'Max steps', textInput('f-max-steps', 'hyperparameters.max_steps', '', 'int'), 'Optional: overrides epochs.'),
          field('f-max-seq-length', 'Max sequence length', textInput('f-max-seq-length', 'hyperparameters.max_seq_length', '128', 'int')),
          field('f-eval-every', 'Evaluate every', textInput('f-eval-every', 'hyperparameters.eval_every', '', 'int'), 'Steps; empty: at each epoch end.'))),
      h('fieldset', {}, h('legend', { text: 'Resources' }),
        h('div', { class: 'grid' },
          field('f-num-ranks', 'Ranks', textInput('f-num-ranks', 'resources.num_ranks', '1', 'int'), 'Training processes (GPUs on cuda), at most 8.'),
          field('f-device', 'Device', selectInput('f-device', 'resources.device', ['auto', 'cpu', 'cuda'], 'auto')))),
      h('details', { id: 'advanced' }, h('summary', { text: 'Advanced' }),
        h('div', { class: 'grid' },
          field('f-max-train-examples', 'Max training examples', textInput('f-max-train-examples', 'dataset.max_train_examples', '', 'int'), 'Optional: the first n training rows.'),
          field('f-max-eval-examples', 'Max evaluation examples', textInput('f-max-eval-examples', 'dataset.max_eval_examples', '', 'int'), 'Optional: the first n evaluation rows.'),
          field('f-save-every', 'Checkpoint every', textInput('f-save-every', 'hyperparameters.save_every', '', 'int'), 'Steps; empty: at each epoch end.'),
          field('f-seed', 'Seed', textInput('f-seed', 'hyperparameters.seed', '', 'int'), 'Empty: 42.'),
          field('f-zero-stage', 'ZeRO stage', selectInput('f-zero-stage', 'resources.zero_stage', ['0', '1', '2', '3'], '2')),
          field('f-precision', 'Precision', selectInput('f-precision', 'resources.precision', ['fp32', 'bf16', 'fp16'], 'fp32')))),
      formMessage,
      h('div', { class: 'actions' }, submit));

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      clearErrors(form, formMessage);
      const usesFiles = source.querySelector('input:checked').value === 'files';
      let spec;
      try {
        spec = buildSpec(form, usesFiles, uploads);
      } catch (err) {
        showError(form, formMessage, err.field, err.message);
        return;
      }
      submit.disabled = true;
      formMessage.classList.remove('error');
      formMessage.textContent = 'Submitting…';
      try {
        const job = await (await api('/v1/jobs', { method: 'POST', json: spec })).json();
        state.navigated = true;
        window.location.hash = `#/jobs/${encodeURIComponent(job.id)}`;
      } catch (err) {
        if (!view.alive) return;
        submit.disabled = false;
        formMessage.classList.add('error');
        showError(form, formMessage, err.field, err.message);
      }
    });

    append(main, heading('New job'),
      h('p', { class: 'hint' }, 'Fields map to the job contract (docs/training.md); the API checks every value and names the one at fault.'),
      form);
  }

  async function uploadChosen(view, input, status, uploads, columnsList) {
    delete uploads[input.id];
    clearFieldError(input);
    const file = input.files && input.files[0];
    if (!file) return;
    status.textContent = `Uploading ${file.name}…`;
    const body = new FormData();
    body.append('file', file, file.name);
    try {
      const record = await (await api('/v1/files', { method: 'POST', body })).json();
      if (!view.alive) return;
      uploads[input.id] = record;
      status.textContent = `Uploaded as ${record.id}: ${fmtInt(record.num_rows)} rows; columns ${record.columns.join(', ')}.`;
      clear(columnsList);
      append(columnsList, record.columns.map((c) => h('option', { value: c })));
    } catch (err) {
      if (!view.alive) return;
      status.textContent = 'Not uploaded.';
      markField(input, err.message);
    }
  }

  class FormError extends Error {
    constructor(field, message) {
      super(message);
      this.field = field;
    }
  }

  function readNumber(form, path) {
    const input = form.querySelector(`[data-field="${path}"]`);
    const text = input.value.trim();
    if (text === '') return undefined;
    const value = Number(text);
    if (!Number.isFinite(value)) throw new FormError(path, `${path}: “${text}” is not a number`);
    return value;
  }

  function buildSpec(form, usesFiles, uploads) {
    const value = (path) => form.querySelector(`[data-field="${path}"]`).value.trim();
    const spec = {
      model: value('model'),
      dataset: {},
      childtuning: { mode: value('childtuning.mode') },
      hyperparameters: {},
      resources: { device: value('resources.device'), zero_stage: Number(value('resources.zero_stage')), precision: value('resources.precision') },
    };
    if (usesFiles) {
      for (const [id, path] of [['f-train-file', 'dataset.train_file'], ['f-eval-file', 'dataset.eval_file']]) {
        if (!uploads[id]) throw new FormError(path, `${path}: choose a file and wait for its upload`);
        spec.dataset[path.split('.')[1]] = uploads[id].id;
      }
      const columns = value('dataset.task_type') === 'causal-lm' ? [] : ['dataset.text_column', 'dataset.text_pair_column', 'dataset.label_column'];
      for (const path of columns.concat(['dataset.task_type'])) {
        if (value(path)) spec.dataset[path.split('.')[1]] = value(path);
      }
    } else {
      spec.dataset.preset = value('dataset.preset');
    }
    const numbers = [
      'dataset.max_train_examples', 'dataset.max_eval_examples', 'childtuning.reserve_p',
      'hyperparameters.learning_rate', 'hyperparameters.batch_size', 'hyperparameters.epochs',
      'hyperparameters.max_steps', 'hyperparameters.max_seq_length', 'hyperparameters.eval_every',
      'hyperparameters.save_every', 'hyperparameters.seed', 'resources.num_ranks',
    ];
    for (const path of numbers) {
      const number = readNumber(form, path);
      const [group, key] = path.split('.');
      if (number !== undefined) spec[group][key] = number;
    }
    return spec;
  }

  function inputFor(form, fieldPath) {
    const aliases = { 'resources.num_gpus': 'resources.num_ranks' };
    let path = aliases[fieldPath] || fieldPath;
    while (path) {
      const input = form.querySelector(`[data-field="${CSS.escape(path)}"]`);
      if (input && !input.closest('[hidden]')) return input;
      path = path.includes('.') ? path.slice(0, path.lastIndexOf('.')) : '';
    }
    return null;
  }

  function markField(input, message) {
    const id = `${input.id}-error`;
    let note = document.getElementById(id);
    if (!note) {
      note = h('p', { class: 'field-error', id });
      input.closest('.field').append(note);
    }
    note.textContent = message;
    input.setAttribute('aria-invalid', 'true');
    const described = (input.getAttribute('aria-describedby') || '').split(' ').filter((x) => x && x !== id);
    input.setAttribute('aria-describedby', [id].concat(described).join(' '));
    const details = input.closest('details');
    if (details) details.open = true;
    input.focus();
  }

  function clearFieldError(input) {
    const note = document.getElementById(`${input.id}-error`);
    if (note) note.remove();
    input.removeAttribute('aria-invalid');
    const described = (input.getAttribute('aria-describedby') || '').split(' ').filter((x) => x && x !== `${input.id}-error`);
    if (described.length) input.setAttribute('aria-describedby', described.join(' '));
    else input.removeAttribute('aria-describedby');
  }

  function clearErrors(form, formMessage) {
    for (const input of form.querySelectorAll('[aria-invalid="true"]')) clearFieldError(input);
    formMessage.textContent = '';
  }

  function showError(form, formMessage, fieldPath, message) {
    const input = fieldPath ? inputFor(form, fieldPath) : null;
    if (input) {
      formMessage.textContent = 'The job was not submitted: correct the marked field.';
      markField(input, message);
    } else {
      formMessage.textContent = `The job was not submitted: ${message}`;
      formMessage.setAttribute('tabindex', '-1');
      formMessage.focus();
    }
  }

  // ------------------------------------------------------------------ start

  document.getElementById('sign-out').addEventListener('click', () => {
    window.sessionStorage.removeItem(KEY_STORE);
    state.flash = 'Signed out.';
    route();
  });
  document.getElementById('skip-link').addEventListener('click', (event) => {
    event.preventDefault();
    main.focus();
  });
  window.addEventListener('hashchange', () => {
    state.navigated = true;
    route();
  });
  route();
})();
