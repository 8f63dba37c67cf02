/* The job contract's enumerations, read once at start from the API's own OpenAPI document
 * (GET /openapi.json). The contract's Literal types (service/core/contract/vocabulary.py) are
 * `enum` lists there: the modes, dataset presets, task types, devices and precisions in the
 * job spec's component schemas, the job statuses in the status filter of GET /v1/jobs, and the
 * final statuses in the FinalStatus component. The dashboard keeps no copy of any of them. */

export const contract = {
  modes: [], defaultMode: null,
  presets: [],
  taskTypes: [],
  devices: [], defaultDevice: null,
  precisions: [], defaultPrecision: null,
  zeroStages: [], defaultZeroStage: null,
  statuses: [],
  finalStatuses: [],
};

/* Whether a job (or an experiment) has a status it never leaves. */
export function isFinal(status) {
  return contract.finalStatuses.includes(status);
}

/* A Literal's values: {enum: [...]}, or inside anyOf for an optional one (with null). */
function enumOf(schema) {
  if (!schema) return null;
  if (Array.isArray(schema.enum)) return schema.enum.slice();
  for (const option of schema.anyOf || []) {
    const values = enumOf(option);
    if (values) return values;
  }
  return null;
}

function need(value, what) {
  if (value === null || value === undefined || (Array.isArray(value) && !value.length)) {
    throw new Error(`the API's OpenAPI document has no ${what}`);
  }
  return value;
}

function property(doc, model, name) {
  const schema = ((doc.components || {}).schemas || {})[model];
  return need(schema && schema.properties && schema.properties[name], `${model}.${name}`);
}

function values(doc, model, name) {
  return need(enumOf(property(doc, model, name)), `list of values of ${model}.${name}`);
}

function range(schema, what) {
  const low = need(schema.minimum, `minimum of ${what}`);
  const high = need(schema.maximum, `maximum of ${what}`);
  return Array.from({ length: high - low + 1 }, (_, i) => low + i);
}

/* Fill `contract` from the OpenAPI document (fetched without the key: it is public). */
export async function loadContract() {
  const res = await fetch('/openapi.json', { credentials: 'omit' });
  if (!res.ok) throw new Error(`GET /openapi.json answered ${res.status} ${res.statusText}`.trim());
  const doc = await res.json();
  const listJobs = ((doc.paths || {})['/v1/jobs'] || {}).get || {};
  const statusFilter = (listJobs.parameters || []).find((p) => p.name === 'status' && p.in === 'query');
  const zeroStage = property(doc, 'Resources', 'zero_stage');
  Object.assign(contract, {
    modes: values(doc, 'ChildTuningSpec', 'mode'),
    defaultMode: need(property(doc, 'ChildTuningSpec', 'mode').default, 'default of ChildTuningSpec.mode'),
    presets: values(doc, 'DatasetSpec', 'preset'),
    taskTypes: values(doc, 'DatasetSpec', 'task_type'),
    devices: values(doc, 'Resources', 'device'),
    defaultDevice: property(doc, 'Resources', 'device').default,
    precisions: values(doc, 'Resources', 'precision'),
    defaultPrecision: property(doc, 'Resources', 'precision').default,
    zeroStages: range(zeroStage, 'Resources.zero_stage'),
    defaultZeroStage: zeroStage.default,
    statuses: need(enumOf(statusFilter && statusFilter.schema), 'list of job statuses (GET /v1/jobs?status=)'),
    finalStatuses: need(enumOf(((doc.components || {}).schemas || {}).FinalStatus), 'FinalStatus'),
  });
  return contract;
}
