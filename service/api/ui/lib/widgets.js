/* How jobs and experiments are shown wherever they appear: status, method, dataset, progress,
 * time left or taken, metrics, and an experiment's job counts. */

import { contract, isFinal } from './contract.js';
import { h } from './dom.js';
import { fmtDuration, fmtNum, metricName } from './format.js';

export function statusBadge(status, extra) {
  return h('span', { class: `status status-${status}` }, status, extra ? ` · ${extra}` : null);
}

/* "cancelling" while a cancel is on its way; else extra (a phase, or nothing). */
export function jobStatusBadge(job, extra) {
  return statusBadge(job.status, job.cancel_requested && !isFinal(job.status) ? 'cancelling' : extra);
}

export function jobMode(spec) {
  return ((spec && spec.childtuning) || {}).mode || contract.defaultMode;
}

export function methodText(spec) {
  const mode = jobMode(spec);
  return mode === 'vanilla' ? mode : `${mode} (p ${fmtNum(((spec && spec.childtuning) || {}).reserve_p)})`;
}

export function datasetText(spec) {
  const data = (spec && spec.dataset) || {};
  if (data.preset) return data.preset;
  if (!data.train_file) return '—';
  return data.task_type === 'causal-lm' ? `file ${data.train_file} (causal-lm)` : `file ${data.train_file}`;
}

/* Seconds left from the time since the start and the progress (the list's estimate). */
function etaSeconds(job) {
  const p = job.progress || {};
  if (job.status !== 'running' || !p.total_steps || !p.step || !job.started_at) return null;
  const elapsed = Date.now() / 1000 - job.started_at;
  const fraction = p.step / p.total_steps;
  return elapsed * (1 - fraction) / fraction;
}

/* Time left (rate: steps per second, when known) or taken. */
export function timing(job, rate) {
  if (job.status === 'running') {
    const p = job.progress || {};
    const eta = rate && p.total_steps ? (p.total_steps - p.step) / rate : etaSeconds(job);
    return eta === null ? 'estimating…' : `about ${fmtDuration(eta)} left`;
  }
  if (isFinal(job.status) && job.started_at && job.finished_at) {
    return `took ${fmtDuration(job.finished_at - job.started_at)}`;
  }
  return job.status === 'queued' ? 'waiting for a worker' : '—';
}

export function progressCell(job) {
  const p = job.progress || {};
  const label = p.total_steps ? `${p.step} / ${p.total_steps}` : `${p.step || 0} / ?`;
  const bar = h('progress', { max: p.total_steps || 1, 'aria-label': `steps ${label}` });
  if (p.total_steps) bar.value = p.step;
  else bar.removeAttribute('value'); // indeterminate until the total is known
  return h('span', { class: 'progress' }, bar, h('span', { class: 'progress-text', text: label }));
}

export function metricCell(record) {
  if (!record) return '—';
  return h('span', { class: 'metric' }, `${metricName(record.main_metric)} ${fmtNum(record.main_value)}`,
    h('span', { class: 'muted small', text: ` step ${record.step}` }));
}

/* An experiment's jobs by status (its counts; waiting: queued jobs held back by max_parallel):
 * the unfinished first, the furthest along first, then the final ones. */
export function countsText(counts) {
  const unfinished = contract.statuses.filter((s) => !isFinal(s)).reverse();
  const order = [].concat(...unfinished.map((s) => (s === 'queued' ? ['waiting', s] : [s])), contract.finalStatuses);
  const parts = order.filter((k) => counts && counts[k]).map((k) => `${counts[k]} ${k}`);
  return parts.length ? parts.join(' · ') : '—';
}
