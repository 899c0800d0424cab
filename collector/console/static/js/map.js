// map.js: the dependency map. One request (/api/v1/deps over the chosen window), our own layout
// (layout.js), drawn as SVG: namespace boxes, workloads inside, edges sized by bytes or flows and
// coloured by health. Clicking a workload or an edge opens the flow explorer on exactly its flows.
import { getJSON } from './api.js';
import { fmtBytes, fmtUs, status, svg, workloadLabel } from './format.js';
import { edgePath, layout, nodeKey } from './layout.js';
import { go, windowOf } from './route.js';

const $ = (id) => document.getElementById(id);

let last = null; // the latest answer and the window it covers, redrawn when a toggle changes
let seq = 0; // answers to superseded requests are dropped

// health colours an edge: red when connections failed outright, amber when they suffer (retransmits
// per connection or the RTT's p99 above the legend's thresholds), green otherwise.
export function health(e, th) {
  if (e.connect_failures + e.resets + e.timeouts > 0) return 'red';
  if (e.flows > 0 && e.retransmits / e.flows > th.retransPerFlow) return 'amber';
  if (e.rtt_p99_us > th.rttP99Ms * 1000) return 'amber';
  return 'green';
}

function thresholds() {
  return { retransPerFlow: Number($('th-retrans').value) || 0, rttP99Ms: Number($('th-rtt').value) || 0 };
}

const metric = () => $('map-metric').value;
const edgeValue = (e, by) => (by === 'flows' ? e.flows : e.bytes_to_server + e.bytes_to_client);

// dash spells a node field for the API's filters, where "-" stands for the empty value.
const dash = (v) => (v === '' ? '-' : v);

export function init() {
  $('map-metric').addEventListener('change', () => setParam('by', metric() === 'bytes' ? '' : metric()));
  $('map-namespace').addEventListener('change', () => setParam('namespace', $('map-namespace').value.trim()));
  for (const id of ['th-retrans', 'th-rtt']) $(id).addEventListener('input', () => last && draw());
}

function setParam(k, v) {
  const p = new URLSearchParams(location.hash.split('?')[1] || '');
  if (v) p.set(k, v);
  else p.delete(k);
  go('map', p);
}

export async function render(params) {
  const w = windowOf(params);
  $('map-metric').value = params.get('by') === 'flows' ? 'flows' : 'bytes';
  $('map-namespace').value = params.get('namespace') || '';
  const map = $('map');
  delete map.dataset.ready;
  status($('map-status'), 'Loading…');
  const mine = ++seq;
  let deps;
  const t0 = performance.now();
  try {
    deps = await getJSON('/api/v1/deps', { from: w.from, to: w.to, namespace: params.get('namespace') });
  } catch (err) {
    if (mine === seq) status($('map-status'), `Could not load the map: ${err.message}`, true);
    return;
  }
  if (mine !== seq) return;
  map.dataset.fetchMs = (performance.now() - t0).toFixed(1);
  last = { deps, w };
  draw();
}

// draw builds the SVG from the last answer. It records how long it took (data-render-ms), which the
// benchmark reads, and sets data-ready when done, which the tests wait for.
function draw() {
  const t0 = performance.now();
  const { deps, w } = last;
  const map = $('map');
  const by = metric();
  const th = thresholds();
  const L = layout(deps.nodes);
  map.dataset.layoutMs = (performance.now() - t0).toFixed(1);
  map.replaceChildren();
  map.setAttribute('width', L.width);
  map.setAttribute('height', L.height);
  map.setAttribute('viewBox', `0 0 ${L.width} ${L.height}`);

  map.append(svg('defs', {}, ['red', 'amber', 'green'].map((c) =>
    svg('marker', { id: `arrow-${c}`, class: c, viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 9, markerHeight: 9,
      markerUnits: 'userSpaceOnUse', orient: 'auto' }, svg('path', { d: 'M0,0 L10,5 L0,10 z' })))));

  // Layers, bottom to top: namespace boxes, edges, then workloads, so a workload is never hidden
  // under an edge passing by and its whole box stays clickable.
  const boxes = svg('g', { class: 'ns-boxes' });
  const edges = svg('g', { class: 'edges' });
  const groups = svg('g', { class: 'namespaces' });
  for (const b of L.boxes) {
    boxes.append(svg('rect', { class: 'ns-box', x: b.x, y: b.y, width: b.w, height: b.h, rx: 8 }));
    const g = svg('g', { class: 'ns', 'data-namespace': b.namespace, 'data-cluster': b.cluster },
      svg('text', { class: 'ns-label', x: b.x + 12, y: b.y + 18 }, b.label));
    for (const p of b.nodes) g.append(nodeElement(p, w));
    groups.append(g);
  }

  const max = Math.max(1, ...deps.edges.map((e) => edgeValue(e, by)));
  // Widths are relative to the largest edge; a dense graph gets thinner lines so that it stays legible.
  const widest = deps.edges.length > 300 ? 3 : deps.edges.length > 60 ? 5 : 9;
  const counts = { red: 0, amber: 0, green: 0 };
  // Failing edges are drawn last, on top: they are what a reader looks for.
  const order = { green: 0, amber: 1, red: 2 };
  const drawn = deps.edges.map((e) => ({ e, h: health(e, th) })).sort((p, q) => order[p.h] - order[q.h]);
  for (const { e, h } of drawn) {
    const a = L.pos.get(nodeKey(e.client));
    const b = L.pos.get(nodeKey(e.server));
    if (!a || !b) continue; // every edge's ends are among the nodes; guard a malformed answer anyway
    counts[h]++;
    const d = edgePath(a, b);
    const width = 1 + (widest - 1) * Math.sqrt(edgeValue(e, by) / max);
    const g = svg('g', {
      class: `edge ${h}`, 'data-health': h,
      'data-client': e.client.name, 'data-client-namespace': e.client.namespace, 'data-client-cluster': e.client.cluster,
      'data-server': e.server.name, 'data-server-namespace': e.server.namespace, 'data-server-cluster': e.server.cluster,
      'data-flows': e.flows, 'data-bytes': e.bytes_to_server + e.bytes_to_client,
    },
    svg('title', {}, edgeTitle(e)),
    svg('path', { class: 'line', d, 'stroke-width': width.toFixed(1), 'marker-end': `url(#arrow-${h})` }),
    // A wide transparent twin makes thin edges easy to hit.
    svg('path', { class: 'hit', d, 'stroke-width': Math.max(12, width + 6).toFixed(1) }));
    g.addEventListener('click', () => go('flows', {
      client: dash(e.client.name), client_namespace: dash(e.client.namespace), client_cluster: dash(e.client.cluster),
      server: dash(e.server.name), server_namespace: dash(e.server.namespace), server_cluster: dash(e.server.cluster),
      from: w.from, to: w.to,
    }));
    edges.append(g);
  }
  map.append(boxes, edges, groups);

  const namespaces = new Set(deps.nodes.filter((n) => n.name || n.namespace).map((n) => n.cluster + '/' + n.namespace));
  $('map-summary').textContent = `${deps.nodes.length} workloads in ${namespaces.size} namespaces, ${deps.edges.length} edges`;
  status($('map-status'), deps.edges.length === 0 ? 'No flows in this time range.'
    : `${counts.red} failing, ${counts.amber} degraded, ${counts.green} healthy edges.`);
  map.dataset.renderMs = (performance.now() - t0).toFixed(1);
  map.dataset.ready = '1';
}

function nodeElement(p, w) {
  const n = p.node;
  const unowned = !n.name && !n.namespace && !n.cluster;
  const label = unowned ? '(unknown owner)' : n.name || '(unnamed)';
  const g = svg('g', { class: unowned ? 'node unowned' : 'node', 'data-name': n.name, 'data-namespace': n.namespace, 'data-cluster': n.cluster },
    svg('title', {}, unowned ? 'addresses with no known owner' : `${workloadLabel(n)}${n.cluster ? ' in ' + n.cluster : ''}`),
    svg('rect', { x: p.x, y: p.y, width: p.w, height: p.h, rx: 5 }),
    svg('text', { x: p.x + 10, y: p.y + p.h / 2 + 4 }, label.length > 20 ? label.slice(0, 19) + '…' : label));
  g.addEventListener('click', () => go('flows', {
    workload: dash(n.name), workload_namespace: dash(n.namespace), workload_cluster: dash(n.cluster), from: w.from, to: w.to,
  }));
  return g;
}

function edgeTitle(e) {
  return `${workloadLabel(e.client)} → ${workloadLabel(e.server)}\n` +
    `${e.flows} flows, ${fmtBytes(e.bytes_to_server)} to server, ${fmtBytes(e.bytes_to_client)} back\n` +
    `${e.connect_failures} connect failures, ${e.resets} resets, ${e.timeouts} timeouts, ${e.retransmits} retransmits\n` +
    `RTT p50 ${fmtUs(e.rtt_p50_us) || '–'}, p90 ${fmtUs(e.rtt_p90_us) || '–'}, p99 ${fmtUs(e.rtt_p99_us) || '–'}`;
}
