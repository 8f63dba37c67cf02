/* #/jobs: the tenant's jobs, newest first, 20 a page, with a status filter; refreshed. */

import { getJSON } from '../lib/api.js';
import { contract } from '../lib/contract.js';
import { append, h, headRow, heading, main, replaceRows, tableWrap } from '../lib/dom.js';
import { timeEl } from '../lib/format.js';
import { datasetText, jobStatusBadge, methodText, metricCell, progressCell, timing } from '../lib/widgets.js';

const POLL_MS = 2500;

export function renderJobs(view, params) {
  document.title = 'Jobs · childtune';
  const page = { cursor: null, previous: [], next: null };
  const refresh = () => view.refresh && view.refresh();
  let status = contract.statuses.includes(params.get('status')) ? params.get('status') : '';
  const select = h('select', { id: 'status-filter' },
    h('option', { value: '', text: 'all' }),
    contract.statuses.map((s) => h('option', { value: s, selected: s === status, text: s })));
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
    headRow(['Job', 'Status', 'Method', 'Model', 'Dataset', 'Progress', 'Time', 'Best', 'Final', 'Created']),
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
    h('td', {}, jobStatusBadge(job, phase)),
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
