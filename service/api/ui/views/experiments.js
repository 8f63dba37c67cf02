/* #/experiments: the tenant's experiments, newest first, 20 a page; refreshed. */

import { getJSON } from '../lib/api.js';
import { append, h, headRow, heading, main, replaceRows, tableWrap } from '../lib/dom.js';
import { metricName, timeEl } from '../lib/format.js';
import { countsText, statusBadge } from '../lib/widgets.js';

const POLL_MS = 3000;

export function renderExperiments(view) {
  document.title = 'Experiments · childtune';
  const tbody = h('tbody');
  const page = { cursor: null, previous: [], next: null };
  const newer = h('button', { type: 'button', class: 'secondary', text: '← Newer' });
  const older = h('button', { type: 'button', class: 'secondary', text: 'Older →' });
  append(main,
    heading('Experiments'),
    h('p', { class: 'hint' }, 'Grids of jobs compared over seeds; submit one with ', h('code', { text: 'childtune experiment submit grid.yaml' }), ' or POST /v1/experiments (docs/experiments.md).'),
    tableWrap('Experiments', h('table', { id: 'experiments-table' },
      headRow(['Experiment', 'Name', 'Status', 'Jobs', 'Metric', 'Best cell', 'Created']),
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
  view.poll(POLL_MS, load);
}
