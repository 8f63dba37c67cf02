/* The new-job form's spec, and the API's errors shown next to the input they name. */

import { h } from '../lib/dom.js';

/* A value the form itself cannot send (a number that is not one, a file not uploaded). */
export class FormError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

// The fields sent as JSON numbers when not empty.
const NUMBERS = [
  'dataset.max_train_examples', 'dataset.max_eval_examples', 'childtuning.reserve_p',
  'hyperparameters.learning_rate', 'hyperparameters.batch_size', 'hyperparameters.epochs',
  'hyperparameters.max_steps', 'hyperparameters.max_seq_length', 'hyperparameters.eval_every',
  'hyperparameters.save_every', 'hyperparameters.seed', 'resources.num_ranks',
];

function readNumber(form, path) {
  const input = form.querySelector(`[data-field="${path}"]`);
  const text = input.value.trim();
  if (text === '') return undefined;
  const value = Number(text);
  if (!Number.isFinite(value)) throw new FormError(path, `${path}: “${text}” is not a number`);
  return value;
}

/* The job spec the form describes; empty optional fields are left out. uploads: input id ->
 * the uploaded file's record. */
export function buildSpec(form, usesFiles, uploads) {
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
    // causal-lm rows are prompt/completion or chat objects: no columns to name.
    const columns = value('dataset.task_type') === 'causal-lm' ? [] : ['dataset.text_column', 'dataset.text_pair_column', 'dataset.label_column'];
    for (const path of columns.concat(['dataset.task_type'])) {
      if (value(path)) spec.dataset[path.split('.')[1]] = value(path);
    }
  } else {
    spec.dataset.preset = value('dataset.preset');
  }
  for (const path of NUMBERS) {
    const number = readNumber(form, path);
    const [group, key] = path.split('.');
    if (number !== undefined) spec[group][key] = number;
  }
  return spec;
}

/* The visible input for an error's field, else the nearest enclosing one's. */
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

/* The message under the input, tied to it (aria-describedby); a closed Advanced section opens. */
export function markField(input, message) {
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

export function clearFieldError(input) {
  const note = document.getElementById(`${input.id}-error`);
  if (note) note.remove();
  input.removeAttribute('aria-invalid');
  const described = (input.getAttribute('aria-describedby') || '').split(' ').filter((x) => x && x !== `${input.id}-error`);
  if (described.length) input.setAttribute('aria-describedby', described.join(' '));
  else input.removeAttribute('aria-describedby');
}

export function clearErrors(form, formMessage) {
  for (const input of form.querySelectorAll('[aria-invalid="true"]')) clearFieldError(input);
  formMessage.textContent = '';
}

/* An error for fieldPath: next to its input, else above the submit button. */
export function showError(form, formMessage, fieldPath, message) {
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
