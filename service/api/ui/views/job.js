/* #/jobs/{id}: one job, polled every 2 s. The job is read first, then its metrics and events
 * from the last cursor (so a finished job's streams are complete once read after it); then
 * its checkpoints (every fourth poll, and at the end) and a ChildTuning-D job's mask. */

import { ApiError, api, getBlob, getJSON } from '../lib/api.js';
import { isFinal } from '../lib/contract.js';
import { announce, append, clear, h, headRow, heading, main, saveBlob, showFacts, tableWrap } from '../lib/dom.js';
import { fmtBytes, fmtMetric, timeEl } from '../lib/format.js';
import { state } from '../lib/state.js';
import { datasetText, jobMode, jobStatusBadge, methodText, progressCell, timing } from '../lib/widgets.js';
import { renderMask } from './job-mask.js';
import { JobRecords } from './job-records.js';

const POLL_MS = 2000;
const PAGE = 1000; // records per metrics/events request

export function renderJob(view, jobId) {
  document.title = `${jobId} · childtune`;
  const path = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const wrap = h('div', { class: 'job' });
  append(main, h('p', { class: 'back' }, h('a', { href: '#/jobs', text: '← Jobs' })), wrap);
  const loading = h('p', { class: 'muted', text: 'Loading…' });
  append(wrap, heading('Job ', h('code', { text: jobId })), loading);

  const cursors = { metrics: '0', events: '0' };
  const records = new JobRecords(view);
  let parts = null;
  let ticks = 0;
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
        const answer = await (await api(`${path}/cancel`, { method: 'POST' })).json();
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
    const ckptBody = h('tbody');
    const ckptMessage = h('p', { class: 'form-message', role: 'status', id: 'download-message' });
    const maskSection = h('section', { id: 'mask', hidden: true, 'aria-labelledby': 'mask-h' },
      h('h2', { id: 'mask-h', text: 'Child network (ChildTuning-D mask)' }), h('div', { class: 'mask-body' }));
    append(wrap,
      h('section', { class: 'summary', 'aria-label': 'Summary' }, facts, actions),
      errorSection,
      records.charts,
      records.samplesSection,
      h('div', { class: 'columns' },
        h('section', { 'aria-labelledby': 'timeline-h' }, h('h2', { id: 'timeline-h', text: 'Timeline' }), records.timeline),
        h('section', { 'aria-labelledby': 'ckpt-h' },
          h('h2', { id: 'ckpt-h', text: 'Checkpoints' }),
          tableWrap('Checkpoints', h('table', { id: 'checkpoints' }, headRow(['Name', 'Kind', 'Step', 'Size', 'Files', '']), ckptBody)),
          ckptMessage)),
      maskSection,
      h('section', { 'aria-labelledby': 'spec-h' }, h('h2', { id: 'spec-h', text: 'Spec' }),
        h('pre', { class: 'spec', id: 'spec', tabindex: '0' }, h('code', { text: JSON.stringify(job.spec, null, 2) }))));
    records.start();
    return { facts, actions, cancel, errorSection, ckptBody, ckptMessage, mask: maskSection };
  };

  /* Per attempt, the machines it ran on: "attempt 1: node-a (10.0.0.5), node-b (10.0.0.6)". */
  const nodesText = (attempts) => (attempts || []).length === 0 ? '—'
    : attempts.map((a) => `attempt ${a.attempt}: ${a.nodes.map((n) => `${n.worker} (${n.addr})`).join(', ')}`).join('; ');

  const update = (job) => {
    const resources = job.spec.resources || {};
    const rows = [
      ['Status', jobStatusBadge(job)],
      ['Phase', (!isFinal(job.status) && job.phase) || '—'],
      ['Progress', progressCell(job)],
      ['Time', timing(job, records.rate())],
      ['Method', methodText(job.spec)],
      ['Model', job.spec.model],
      ['Dataset', datasetText(job.spec)],
      ['Ranks', `${resources.num_ranks || 1} on ${resources.device || 'auto'}`
        + `${(resources.nodes || 1) > 1 ? ` over ${resources.nodes} nodes` : ''} (queue ${job.queue})`],
      ['Worker', job.worker || '—'],
      ['Nodes', nodesText(job.nodes)],
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
    showFacts(parts.facts, rows);
    parts.cancel.hidden = isFinal(job.status);
    const said = parts.actions.querySelector('[role="status"]');
    if (job.status === 'cancelled' && said.textContent.startsWith('Cancel requested')) said.textContent = 'Cancelled.';
    parts.actions.hidden = isFinal(job.status) && !said.textContent;
    if (job.cancel_requested) parts.cancel.disabled = true;
    parts.errorSection.hidden = !job.error;
    parts.errorSection.querySelector('pre').textContent = job.error || '';
  };

  const drain = async (which, add) => {
    for (;;) {
      const page = await getJSON(`${path}/${which}?after=${encodeURIComponent(cursors[which])}&limit=${PAGE}`);
      if (!view.alive) return;
      cursors[which] = page.next_cursor;
      add(page.data);
      if (page.data.length < PAGE) return;
    }
  };

  const download = async (ckpt, button) => {
    // The archive route needs the bearer header, which a plain link cannot send.
    const message = parts.ckptMessage;
    button.disabled = true;
    message.textContent = `Downloading ${ckpt.name}…`;
    try {
      const blob = await getBlob(ckpt.archive_url);
      saveBlob(blob, `${jobId}-${ckpt.name}.tar`);
      message.textContent = `Downloaded ${ckpt.name} (${fmtBytes(blob.size)}).`;
    } catch (err) {
      if (view.alive) message.textContent = `Download failed: ${err.message}`;
    } finally {
      button.disabled = false;
    }
  };

  const loadCheckpoints = async () => {
    const answer = await getJSON(`${path}/checkpoints`);
    if (!view.alive) return;
    clear(parts.ckptBody);
    if (!answer.data.length) {
      append(parts.ckptBody, h('tr', {}, h('td', { colspan: '6', text: 'None yet.' })));
    }
    for (const ckpt of answer.data) {
      const button = h('button', {
        type: 'button', class: 'secondary', 'data-checkpoint': ckpt.name, 'aria-label': `Download ${ckpt.name}`, text: 'Download',
      });
      button.addEventListener('click', () => download(ckpt, button));
      append(parts.ckptBody, h('tr', {},
        h('td', {}, h('code', { text: ckpt.name })), h('td', { text: ckpt.kind }), h('td', { text: ckpt.step === null ? '—' : String(ckpt.step) }),
        h('td', { text: fmtBytes(ckpt.size_bytes) }), h('td', { text: String(ckpt.num_files) }), h('td', {}, button)));
    }
  };

  const loadMask = async (job) => {
    const body = parts.mask.querySelector('.mask-body');
    try {
      const summary = await getJSON(`${path}/mask`);
      if (!view.alive) return;
      renderMask(body, summary);
      mask = isFinal(job.status) ? 'done' : 'summary';
    } catch (err) {
      if (!(err instanceof ApiError) || err.status !== 404) throw err;
      append(clear(body), h('p', { class: 'muted', text: isFinal(job.status) ? err.message : 'Not computed yet: the Fisher pass selects the child network before training.' }));
      if (isFinal(job.status)) mask = 'done';
    }
    parts.mask.hidden = false;
  };

  const notFound = () => {
    document.title = 'Job not found · childtune';
    clear(wrap);
    append(wrap, heading('Job not found'),
      h('p', { id: 'not-found' }, 'No job ', h('code', { text: jobId }), ' belongs to this API key. ', h('a', { href: '#/jobs', text: 'Back to your jobs' }), '.'));
    if (state.navigated) wrap.querySelector('h1').focus();
  };

  view.poll(POLL_MS, async () => {
    let job;
    try {
      job = await getJSON(path);
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) {
        notFound();
        return false;
      }
      throw err;
    }
    if (!view.alive) return false;
    if (!parts) parts = build(job);
    const finished = isFinal(job.status);
    // The job first, then its streams: a finished job's streams are complete once read after.
    await drain('metrics', (data) => records.addMetrics(data));
    await drain('events', (data) => records.addEvents(data));
    if (!view.alive) return false;
    update(job);
    records.setHigherIsBetter(job.higher_is_better);
    if (ticks % 4 === 0 || finished) await loadCheckpoints();
    const dMode = jobMode(job.spec) === 'childtuning-d';
    if (dMode && (ticks === 0 || (records.sawFisher && mask === 'none') || (finished && mask !== 'done'))) await loadMask(job);
    ticks += 1;
    if (finished) announce(`Job ${job.status}.`);
    return !finished;
  });
}
