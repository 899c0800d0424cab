// flows.js: the flow explorer. A filter form and a paged table over /api/v1/flows. The filters live in
// the hash; a click on the map arrives here with a node's or an edge's filters, shown as chips above
// the table (they are not form fields: they name exact graph nodes, "-" standing for an empty field).
import { getJSON } from './api.js';
import { addr, el, fmtBytes, fmtTime, fmtUs, status, workloadLabel } from './format.js';
import { current, go, windowOf } from './route.js';

const $ = (id) => document.getElementById(id);

// The form's own filters, and the graph scopes a click on the map sets.
const FIELDS = ['workload', 'namespace', 'ip', 'port', 'role', 'close', 'attribution'];
const SCOPES = {
  node: ['workload_namespace', 'workload_cluster'],
  client: ['client', 'client_namespace', 'client_cluster'],
  server: ['server', 'server_namespace', 'server_cluster'],
};
const DEFAULT_LIMIT = '50';

// Paging walks back with a stack of the cursors of the pages before this one. It belongs to one
// filter: another filter starts again at the first page.
let pages = { key: '', stack: [] };
let seq = 0;

function filterKey(params) {
  const p = new URLSearchParams(params);
  p.delete('cursor');
  return p.toString();
}

export function init() {
  const form = $('flows-filter');
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const { params } = current();
    const next = new URLSearchParams();
    // Keep the time range and the map's scopes; take every form field as it is now.
    for (const k of ['range', 'from', 'to', ...Object.values(SCOPES).flat()]) {
      if (params.get(k)) next.set(k, params.get(k));
    }
    const data = new FormData(form);
    for (const k of [...FIELDS, 'limit']) {
      const v = String(data.get(k) || '').trim();
      if (v && !(k === 'limit' && v === DEFAULT_LIMIT)) next.set(k, v);
    }
    // workload_namespace narrows the workload field; without one it means nothing, so it goes too.
    if (!next.get('workload')) SCOPES.node.forEach((k) => next.delete(k));
    go('flows', next);
  });
  $('flows-clear').addEventListener('click', () => {
    const { params } = current();
    const keep = {};
    for (const k of ['range', 'from', 'to']) if (params.get(k)) keep[k] = params.get(k);
    go('flows', keep);
  });
  $('flows-next').addEventListener('click', () => {
    const { params } = current();
    if (!pages.next) return;
    pages.stack.push(params.get('cursor') || '');
    params.set('cursor', pages.next);
    go('flows', params);
  });
  $('flows-prev').addEventListener('click', () => {
    const { params } = current();
    if (pages.stack.length === 0) return;
    const prev = pages.stack.pop();
    if (prev) params.set('cursor', prev);
    else params.delete('cursor');
    go('flows', params);
  });
}

export async function render(params) {
  const key = filterKey(params);
  if (key !== pages.key || !params.get('cursor')) pages = { key, stack: [] };
  const form = $('flows-filter');
  for (const k of FIELDS) form.elements[k].value = params.get(k) || '';
  form.elements.limit.value = params.get('limit') || DEFAULT_LIMIT;
  showScopes(params);

  const w = windowOf(params);
  const q = { from: w.from, to: w.to, limit: params.get('limit') || DEFAULT_LIMIT, cursor: params.get('cursor') };
  for (const k of [...FIELDS, ...Object.values(SCOPES).flat()]) q[k] = params.get(k);
  const table = $('flows-table');
  delete table.dataset.ready;
  status($('flows-status'), 'Loading…');
  const mine = ++seq;
  let page;
  try {
    page = await getJSON('/api/v1/flows', q);
  } catch (err) {
    if (mine === seq) {
      table.tBodies[0].replaceChildren();
      status($('flows-status'), `Could not load flows: ${err.message}`, true);
      table.dataset.ready = '1';
    }
    return;
  }
  if (mine !== seq) return;
  pages.next = page.next || '';
  table.tBodies[0].replaceChildren(...page.flows.map(row));
  $('flows-prev').disabled = pages.stack.length === 0;
  $('flows-next').disabled = !pages.next;
  $('flows-page').textContent = `page ${pages.stack.length + 1}`;
  status($('flows-status'), page.flows.length === 0 ? 'No flows match.'
    : `${page.flows.length} flows on this page${pages.next ? ', more on the next' : ''}.`);
  table.dataset.ready = '1';
}

// showScopes shows the node or edge a map click chose, each with a button that drops it.
function showScopes(params) {
  const chips = [];
  const side = (prefix) => ({ name: params.get(prefix), namespace: params.get(prefix + '_namespace'), cluster: params.get(prefix + '_cluster') });
  const label = (s) => {
    const u = (v) => (v === '-' ? '' : v || '');
    if (s.name === '-' && s.namespace === '-') return '(unknown owner)';
    return workloadLabel({ name: u(s.name) || '*', namespace: u(s.namespace) }) + (u(s.cluster) ? ` in ${u(s.cluster)}` : '');
  };
  const chip = (text, keys) => {
    const drop = el('button', { type: 'button', title: 'remove' }, '×');
    drop.addEventListener('click', () => {
      const p = current().params;
      keys.forEach((k) => p.delete(k));
      p.delete('cursor');
      go('flows', p);
    });
    chips.push(el('span', { class: 'chip' }, text, drop));
  };
  if (params.get('workload') && SCOPES.node.some((k) => params.get(k))) chip(`workload ${label(side('workload'))}`, ['workload', ...SCOPES.node]);
  const client = SCOPES.client.some((k) => params.get(k));
  const server = SCOPES.server.some((k) => params.get(k));
  if (client && server) chip(`edge ${label(side('client'))} → ${label(side('server'))}`, [...SCOPES.client, ...SCOPES.server]);
  else if (client) chip(`client ${label(side('client'))}`, SCOPES.client);
  else if (server) chip(`server ${label(side('server'))}`, SCOPES.server);
  $('flows-scope').replaceChildren(...chips);
}

function row(f) {
  const td = (v, cls) => el('td', cls ? { class: cls } : {}, v);
  const failed = f.close !== 'NORMAL' && f.close !== 'ACTIVE';
  return el('tr', {
    'data-role': f.role, 'data-close': f.close, 'data-attribution': f.attribution,
    'data-local-workload': f.local_workload.name || '', 'data-local-namespace': f.local_workload.namespace || '',
    'data-remote-workload': f.remote_workload.name || '', 'data-remote-namespace': f.remote_workload.namespace || '',
    'data-local-port': f.local_port, 'data-remote-port': f.remote_port, 'data-end': f.end_time,
  },
  td(fmtTime(f.end_time)), td(f.role), td(workloadLabel(f.local_workload)), td(addr(f.local_addr, f.local_port)),
  td(workloadLabel(f.remote_workload)), td(addr(f.remote_addr, f.remote_port)), td(f.close, failed ? 'bad' : ''),
  td(fmtBytes(f.bytes_sent), 'num'), td(fmtBytes(f.bytes_received), 'num'), td(f.retransmits, 'num'), td(fmtUs(f.srtt_us), 'num'),
  td(f.attribution), td(f.exporter_id));
}
