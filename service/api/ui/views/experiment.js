/* #/experiments/{id}: the grid's cells compared with the baseline, its jobs, every cell's
 * curve (mean over seeds by step) and the PNG plots on request; polled while it runs. */

import { ApiError, api, getBlob, getJSON } from '../lib/api.js';
import { makeChart } from '../lib/charts.js';
import { isFinal } from '../lib/contract.js';
import { append, clear, h, headRow, heading, main, showFacts, tableWrap } from '../lib/dom.js';
import { fmtNum, metricName, timeEl } from '../lib/format.js';
import { countsText, progressCell, statusBadge } from '../lib/widgets.js';

const POLL_MS = 3000;

export function renderExperiment(view, expId) {
  document.title = `${expId} · childtune`;
  const path = `/v1/experiments/${encodeURIComponent(expId)}`;
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
        await api(`${path}/cancel`, { method: 'POST' });
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
          headRow(['Cell', 'n', 'Mean ± std', 'Min', 'Max', 'Δ vs baseline [95% CI]', 'Verdict', '']),
          cellsBody))),
      h('section', { 'aria-labelledby': 'curves-h' }, h('h2', { id: 'curves-h', text: 'Curves (mean over seeds)' }), chartEl, chartNote),
      h('section', { 'aria-labelledby': 'exp-jobs-h' }, h('h2', { id: 'exp-jobs-h', text: 'Jobs' }),
        tableWrap('Jobs of the experiment', h('table', { id: 'experiment-jobs' },
          headRow(['Job', 'Values', 'Status', 'Progress', 'Score', 'Error']),
          jobsBody))),
      h('section', { 'aria-labelledby': 'plots-h' }, h('h2', { id: 'plots-h', text: 'Plots' }), plots));
    loadPlots(view, path, plots).catch(() => { /* optional */ });
    return { facts, cancel, cellsBody, jobsBody, chartEl, chartNote };
  };

  const update = (exp) => {
    showFacts(parts.facts, [
      ['Status', statusBadge(exp.status)],
      ['Jobs', countsText(exp.counts)],
      ['Metric', `${metricName(exp.metric)} (${exp.score} score, ${exp.higher_is_better ? 'higher' : 'lower'} is better)`],
      ['Axes', Object.entries(exp.axes || {}).map(([k, v]) => `${k}: ${v.join(', ')}`).join('; ') || '—'],
      ['Baseline', exp.baseline ? Object.entries(exp.baseline).map(([k, v]) => `${k}=${v}`).join(', ') : '—'],
      ['Parallel', String(exp.max_parallel)],
      ['Created', timeEl(exp.created_at, true)],
      ['Finished', timeEl(exp.finished_at, true)],
    ]);
    parts.cancel.hidden = isFinal(exp.status);
    clear(parts.cellsBody);
    for (const cell of exp.cells) append(parts.cellsBody, cellRow(exp, cell));
    clear(parts.jobsBody);
    for (const job of exp.jobs) {
      append(parts.jobsBody, h('tr', {},
        h('td', {}, h('a', { href: `#/jobs/${encodeURIComponent(job.id)}` }, h('code', { text: job.id }))),
        h('td', { text: Object.entries(job.values).map(([k, v]) => `${k}=${v}`).join(', ') }),
        h('td', {}, statusBadge(job.status, isFinal(job.status) ? null : job.phase)),
        h('td', {}, progressCell({ progress: { step: job.step, total_steps: job.total_steps } })),
        h('td', { text: fmtNum(job.score) }),
        h('td', { class: 'wrap', text: job.error || '' })));
    }
  };

  const drawCurves = (curves, exp) => {
    const cells = curves.cells || [];
    const steps = Array.from(new Set([].concat(...cells.map((c) => c.points.map((p) => p.step))))).sort((a, b) => a - b);
    const name = metricName(curves.metric || exp.metric);
    if (!chart) chart = makeChart(view, parts.chartEl, 'curves', name, cells.map((c) => ({ label: c.label })));
    const data = [steps].concat(cells.map((c) => {
      const byStep = new Map(c.points.map((p) => [p.step, p.mean]));
      return steps.map((s) => (byStep.has(s) ? byStep.get(s) : null));
    }));
    chart.setData(data);
    parts.chartNote.textContent = steps.length
      ? `${name} by step, mean over each cell's seeds; ${cells.length} cells, evaluations at ${steps.length} steps.`
      : 'No evaluations yet.';
  };

  view.poll(POLL_MS, async () => {
    let exp;
    try {
      exp = await getJSON(path);
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
    drawCurves(await getJSON(`${path}/curves`), exp);
    return !isFinal(exp.status);
  });
}

/* A cell of the grid: n, mean ± std, min, max, difference from the baseline [95% CI], verdict. */
function cellRow(exp, cell) {
  const vs = cell.vs_baseline;
  const marks = [cell.baseline ? 'baseline' : null, exp.best_cell === cell.label ? 'best' : null].filter(Boolean);
  const diff = vs && vs.mean_diff !== null && vs.mean_diff !== undefined
    ? `${vs.mean_diff >= 0 ? '+' : ''}${fmtNum(vs.mean_diff)}${vs.ci95 ? ` [${fmtNum(vs.ci95[0])}, ${fmtNum(vs.ci95[1])}]` : ''}`
    : '—';
  return h('tr', { class: marks.join(' ') },
    h('th', { scope: 'row', text: cell.label }),
    h('td', { text: String(cell.n) }),
    h('td', { text: cell.mean === null ? '—' : `${fmtNum(cell.mean)}${cell.std === null ? '' : ` ± ${fmtNum(cell.std)}`}` }),
    h('td', { text: fmtNum(cell.min) }),
    h('td', { text: fmtNum(cell.max) }),
    h('td', { text: diff }),
    h('td', { text: vs ? vs.verdict : '—' }),
    h('td', {}, marks.map((m) => h('span', { class: `mark mark-${m}`, text: m }))));
}

/* The experiment's PNG plots, each fetched (with the key) when its button is pressed. */
async function loadPlots(view, path, holder) {
  const list = await getJSON(`${path}/plots`);
  if (!view.alive) return;
  for (const plot of list.data) {
    const figure = h('figure', {}, h('figcaption', { text: plot.description }));
    const button = h('button', { type: 'button', class: 'secondary', text: `Show ${plot.name}` });
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        const blob = await getBlob(plot.url);
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
