/* A job's records on its page, as they arrive by cursor: the training loss and evaluation
 * curves with a text summary each, the samples table (causal-lm) and the timeline of events.
 * Each add* call appends only the new records. */

import { makeChart } from '../lib/charts.js';
import { append, clear, h, headRow, tableWrap } from '../lib/dom.js';
import { fmtDuration, fmtNum, metricName, timeEl } from '../lib/format.js';
import { describeEvent, sampleStepText } from './job-events.js';

export class JobRecords {
  constructor(view) {
    this.view = view;
    this.loss = { x: [], y: [] };
    this.evals = { x: [], y: [], metric: null, last: null };
    this.higherIsBetter = null; // the API's, for the job's main metric (null before an evaluation)
    this.trainTimes = { first: null, last: null };
    this.samples = []; // every samples event (causal-lm), in order
    this.samplesChoice = null; // index of the evaluation picked; null: follow the latest
    this.firstEventTime = null;
    this.sawFisher = false;
    this.lossChart = null;
    this.evalChart = null;

    this.lossEl = h('div', { class: 'chart', id: 'chart-loss', role: 'img', 'aria-label': 'Training loss by step' });
    this.evalEl = h('div', { class: 'chart', id: 'chart-eval', role: 'img', 'aria-label': 'Evaluation metric by step' });
    this.lossNote = h('p', { class: 'chart-note', id: 'loss-note', text: 'No training records yet.' });
    this.evalNote = h('p', { class: 'chart-note', id: 'eval-note', text: 'No evaluation yet.' });
    this.evalTitle = h('h2', { id: 'eval-h', text: 'Evaluation metric' });
    this.charts = h('div', { class: 'charts' },
      h('section', { 'aria-labelledby': 'loss-h' }, h('h2', { id: 'loss-h', text: 'Training loss' }), this.lossEl, this.lossNote),
      h('section', { 'aria-labelledby': 'eval-h' }, this.evalTitle, this.evalEl, this.evalNote));

    // causal-lm: the model's greedy answers to the first evaluation prompts, per evaluation.
    this.samplesTitle = h('h2', { id: 'samples-h', text: 'Samples' });
    this.samplesPick = h('select', { id: 'samples-step' });
    this.samplesPicker = h('div', { class: 'inline-field', hidden: true },
      h('label', { for: 'samples-step', text: 'Evaluation at' }), this.samplesPick);
    this.samplesBody = h('tbody');
    this.samplesSection = h('section', { id: 'samples', hidden: true, 'aria-labelledby': 'samples-h' },
      this.samplesTitle,
      h('div', { class: 'toolbar' }, this.samplesPicker,
        h('p', { class: 'hint', text: 'The model’s greedy answers to the first evaluation prompts.' })),
      tableWrap('Samples', h('table', { id: 'samples-table' }, headRow(['#', 'Prompt', 'Answer', 'Reference']), this.samplesBody)));
    this.samplesPick.addEventListener('change', () => {
      const i = Number(this.samplesPick.value);
      this.samplesChoice = i === this.samples.length - 1 ? null : i;
      this.showSamples();
    });

    this.timeline = h('ol', { class: 'timeline', id: 'timeline' });
  }

  /* Once the chart holders are in the page (a chart takes its holder's width). */
  start() {
    this.lossChart = makeChart(this.view, this.lossEl, 'loss', 'loss', [{ label: 'train loss' }]);
  }

  /* Training steps per second, from the first and the latest train record's times. */
  rate() {
    const { first, last } = this.trainTimes;
    return first && last && last.step > first.step && last.time > first.time
      ? (last.step - first.step) / (last.time - first.time) : null;
  }

  /* The job's higher_is_better, from the API (said in the eval chart's title). */
  setHigherIsBetter(value) {
    if (value === undefined || value === this.higherIsBetter) return;
    this.higherIsBetter = value;
    if (this.evals.metric) this.showEvalTitle();
  }

  showEvalTitle() {
    const lower = this.higherIsBetter === false ? ' (lower is better)' : '';
    this.evalTitle.textContent = `Evaluation: ${metricName(this.evals.metric)}${lower}`;
  }

  addMetrics(records) {
    const { loss, evals } = this;
    const changed = { loss: false, eval: false };
    for (const r of records) {
      if (r.kind === 'train' && typeof r.loss === 'number') {
        loss.x.push(r.step);
        loss.y.push(r.loss);
        if (r.time) {
          this.trainTimes.last = { step: r.step, time: r.time };
          if (!this.trainTimes.first) this.trainTimes.first = this.trainTimes.last;
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
      this.lossChart.setData([loss.x, loss.y]);
      const last = loss.x.length - 1;
      const text = `${loss.x.length} training records; latest loss ${fmtNum(loss.y[last])} at step ${loss.x[last]}.`;
      this.lossNote.textContent = text;
      this.lossEl.setAttribute('aria-label', `Training loss by step. ${text}`);
    }
    if (changed.eval) {
      const name = metricName(evals.metric);
      this.showEvalTitle();
      if (!this.evalChart) this.evalChart = makeChart(this.view, this.evalEl, 'eval', name, [{ label: name }]);
      this.evalChart.setData([evals.x, evals.y]);
      const last = evals.x.length - 1;
      // The latest record's other eval_ numbers (loss; token accuracy and tokens of causal-lm).
      const others = Object.entries(evals.last)
        .filter(([k, v]) => k.startsWith('eval_') && k !== evals.metric && typeof v === 'number')
        .map(([k, v]) => `${metricName(k)} ${fmtNum(v)}`);
      const text = `${evals.x.length} evaluation${evals.x.length === 1 ? '' : 's'}; latest ${name} ${fmtNum(evals.y[last])} at step ${evals.x[last]}`
        + (others.length ? ` (${others.join(', ')}).` : '.');
      this.evalNote.textContent = text;
      this.evalEl.setAttribute('aria-label', `Evaluation ${name} by step. ${text}`);
    }
  }

  /* One samples event as the table's rows (texts as text nodes: never parsed as HTML). */
  showSamples() {
    const { samples } = this;
    if (!samples.length) return;
    const i = this.samplesChoice === null ? samples.length - 1 : this.samplesChoice;
    const e = samples[i];
    this.samplesTitle.textContent = `Samples ${sampleStepText(e)}`;
    this.samplesPick.value = String(i);
    this.samplesPicker.hidden = samples.length < 2;
    // Line breaks shown as ⏎ (an answer of blank lines stays visible and short).
    const text = (value, cls) => (value === '' || value === null || value === undefined
      ? h('td', { class: cls }, h('span', { class: 'muted', text: '(empty)' }))
      : h('td', { class: cls, text: String(value).replace(/\r\n|\r|\n/g, '⏎') }));
    const rows = (e.samples || []).map((sample, k) => h('tr', {},
      h('th', { scope: 'row', text: String(k + 1) }),
      text(sample.prompt, 'sample-text'), text(sample.answer, 'sample-text sample-answer'), text(sample.reference, 'sample-text')));
    clear(this.samplesBody);
    append(this.samplesBody, rows.length ? rows : h('tr', {}, h('td', { colspan: '4', text: 'No samples.' })));
    this.samplesSection.hidden = false;
  }

  addEvents(records) {
    let newSamples = false;
    for (const e of records) {
      if (e.type === 'progress') continue; // the Fisher pass's ticks: the phase shows it
      if (e.type === 'fisher') this.sawFisher = true;
      if (e.type === 'samples') {
        this.samples.push(e);
        this.samplesPick.append(h('option', { value: String(this.samples.length - 1), text: sampleStepText(e) }));
        newSamples = true;
      }
      if (this.firstEventTime === null && e.time) this.firstEventTime = e.time;
      const offset = e.time && this.firstEventTime !== null ? ` (+${fmtDuration(e.time - this.firstEventTime)})` : '';
      this.timeline.append(h('li', { class: e.type === 'phase' ? 'phase' : `event-${e.type}` },
        timeEl(e.time), h('span', { class: 'offset', text: offset }), ' ', h('span', { class: 'what', text: describeEvent(e) })));
    }
    if (newSamples) this.showSamples();
  }
}
