/* #/new: the new-job form. A chosen file is uploaded at once (POST /v1/files); the spec is
 * sent with POST /v1/jobs, and the API is the only validator: its 422 is shown next to the
 * input it names (new-job-form.js). The choices of the selects are the contract's, read from
 * the API's OpenAPI document (lib/contract.js). */

import { api } from '../lib/api.js';
import { contract } from '../lib/contract.js';
import { append, clear, h, heading, main } from '../lib/dom.js';
import { fmtInt } from '../lib/format.js';
import { state } from '../lib/state.js';
import { buildSpec, clearErrors, clearFieldError, markField, showError } from './new-job-form.js';

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
    options.map((value) => h('option', { value, selected: value === selected, text: value })));
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

/* The Data fieldset: a preset, or two uploaded files with their task type and columns. */
function dataFields(view, uploads) {
  const presetGroup = h('div', { id: 'preset-group' },
    field('f-preset', 'Preset', selectInput('f-preset', 'dataset.preset', contract.presets, contract.presets[0]),
      'The task\'s train and dev sets on the workers (CHILDTUNE_DATA); instruct/sst-2 (causal-lm) needs a decoder model such as smollm2-135m.'));
  const columnsList = h('datalist', { id: 'f-columns' });
  const fileInput = (id, path, label) => {
    const input = h('input', { id, name: id, type: 'file', accept: '.csv,.tsv,.jsonl,.json,text/csv,text/tab-separated-values', 'data-field': path });
    const status = h('p', { class: 'hint', id: `${id}-status`, 'aria-live': 'polite', text: 'csv or tsv with a header row, or jsonl; uploaded when chosen.' });
    input.setAttribute('aria-describedby', `${id}-status`);
    input.addEventListener('change', () => uploadChosen(view, input, status, uploads, columnsList));
    return h('div', { class: 'field' }, h('label', { for: id, text: label }), input, status);
  };
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
  const taskType = selectInput('f-task-type', 'dataset.task_type', contract.taskTypes, contract.taskTypes[0]);
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
  const usesFiles = () => source.querySelector('input:checked').value === 'files';
  return { fieldset: h('fieldset', {}, h('legend', { text: 'Data' }), source, presetGroup, filesGroup), usesFiles };
}

export function renderNewJob(view) {
  document.title = 'New job · childtune';
  const uploads = {}; // input id -> uploaded file record
  const data = dataFields(view, uploads);
  const zeroStages = contract.zeroStages.map(String);
  const formMessage = h('div', { id: 'form-message', class: 'form-message error', role: 'alert' });
  const submit = h('button', { type: 'submit', id: 'submit-job', text: 'Submit job' });
  const form = h('form', { id: 'new-job', novalidate: true, 'aria-describedby': 'form-message' },
    data.fieldset,
    h('fieldset', {}, h('legend', { text: 'Model and method' }),
      h('div', { class: 'grid' },
        field('f-model', 'Model', textInput('f-model', 'model', 'minilm-l6'),
          'minilm-l6, smollm2-135m (a decoder, for causal-lm), a model folder name the operator provides, or job-<id> of your succeeded job.'),
        field('f-mode', 'Mode', selectInput('f-mode', 'childtuning.mode', contract.modes, contract.defaultMode)),
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
        field('f-device', 'Device', selectInput('f-device', 'resources.device', contract.devices, contract.defaultDevice)))),
    h('details', { id: 'advanced' }, h('summary', { text: 'Advanced' }),
      h('div', { class: 'grid' },
        field('f-max-train-examples', 'Max training examples', textInput('f-max-train-examples', 'dataset.max_train_examples', '', 'int'), 'Optional: the first n training rows.'),
        field('f-max-eval-examples', 'Max evaluation examples', textInput('f-max-eval-examples', 'dataset.max_eval_examples', '', 'int'), 'Optional: the first n evaluation rows.'),
        field('f-save-every', 'Checkpoint every', textInput('f-save-every', 'hyperparameters.save_every', '', 'int'), 'Steps; empty: at each epoch end.'),
        field('f-seed', 'Seed', textInput('f-seed', 'hyperparameters.seed', '', 'int'), 'Empty: 42.'),
        field('f-zero-stage', 'ZeRO stage', selectInput('f-zero-stage', 'resources.zero_stage', zeroStages, String(contract.defaultZeroStage))),
        field('f-precision', 'Precision', selectInput('f-precision', 'resources.precision', contract.precisions, contract.defaultPrecision)))),
    formMessage,
    h('div', { class: 'actions' }, submit));

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    clearErrors(form, formMessage);
    let spec;
    try {
      spec = buildSpec(form, data.usesFiles(), uploads);
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
