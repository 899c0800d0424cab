// layout.js: places the dependency map's workloads. Our own simple layout, no graph library: each
// namespace (of a cluster) is a box, its workloads sit in a grid inside it, and the boxes are packed in
// rows. It is deterministic (sorted input, no forces), so the same graph always looks the same and a
// large graph costs one pass.

export const NODE_W = 150;
export const NODE_H = 34;
const GAP_X = 28; // between workloads: room for the edges to pass
const GAP_Y = 30;
const PAD = 16; // inside a namespace box
const HEAD = 26; // the namespace's label
const BOX_GAP = 36; // between namespace boxes
// Edges between distant workloads arc away from the straight line (see edgePath) by up to
// MAX_BEND / 2; the margin keeps the arcs of the outer rows inside the drawing.
const MAX_BEND = 200;
const MARGIN = MAX_BEND / 2;

// nodeKey identifies a graph node as the API does: name, namespace and cluster.
export function nodeKey(n) {
  return `${n.cluster}\u0000${n.namespace}\u0000${n.name}`;
}

// groupOf names the box a node goes in. The unowned node (all fields empty) gets its own box.
function groupOf(n) {
  if (!n.name && !n.namespace && !n.cluster) return { key: '\uffffunknown', label: 'unknown owner', namespace: '', cluster: '' };
  return { key: `${n.cluster}\u0000${n.namespace}`, label: n.namespace || '(no namespace)', namespace: n.namespace, cluster: n.cluster };
}

// layout returns the boxes (with their nodes' positions), a map from nodeKey to position, and the
// drawing's size. maxWidth bounds a row of boxes.
export function layout(nodes, maxWidth = 1400) {
  const groups = new Map();
  const clusters = new Set();
  for (const n of nodes) {
    const g = groupOf(n);
    if (!groups.has(g.key)) groups.set(g.key, { ...g, nodes: [] });
    groups.get(g.key).nodes.push(n);
    if (n.cluster) clusters.add(n.cluster);
  }
  // Namespaces by name, the unknown owner last; a cluster suffix only when there are several.
  const boxes = [...groups.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  const pos = new Map();
  let x = BOX_GAP / 2;
  let y = MARGIN;
  let rowH = 0;
  let width = 0;
  for (const b of boxes) {
    if (clusters.size > 1 && b.cluster) b.label += ` (${b.cluster})`;
    b.nodes.sort((p, q) => (p.name < q.name ? -1 : p.name > q.name ? 1 : 0));
    const cols = Math.max(1, Math.ceil(Math.sqrt(b.nodes.length)));
    const rows = Math.ceil(b.nodes.length / cols);
    b.w = Math.max(PAD * 2 + cols * NODE_W + (cols - 1) * GAP_X, 8 * b.label.length + PAD * 2);
    b.h = HEAD + PAD + rows * NODE_H + (rows - 1) * GAP_Y + PAD;
    if (x > BOX_GAP / 2 && x + b.w > maxWidth) {
      x = BOX_GAP / 2;
      y += rowH + BOX_GAP;
      rowH = 0;
    }
    b.x = x;
    b.y = y;
    b.nodes = b.nodes.map((n, i) => {
      const p = {
        node: n,
        x: x + PAD + (i % cols) * (NODE_W + GAP_X),
        y: y + HEAD + PAD + Math.floor(i / cols) * (NODE_H + GAP_Y),
        w: NODE_W,
        h: NODE_H,
      };
      pos.set(nodeKey(n), p);
      return p;
    });
    x += b.w + BOX_GAP;
    rowH = Math.max(rowH, b.h);
    width = Math.max(width, x);
  }
  return { boxes, pos, width: Math.max(width, 200), height: y + rowH + MARGIN };
}

// edgePath is the SVG path of an edge from box a to box b: a curve from a's border to b's, or a loop
// over a for a workload talking to itself. The curve bends to the left of its direction, so a -> b and
// b -> a never overlap, and bends more the longer it is, so an edge between distant workloads of one
// row arcs over (or under) the workloads between them instead of running through them.
export function edgePath(a, b) {
  if (a === b) {
    const x = a.x + a.w / 2;
    return `M ${x - 12} ${a.y} C ${x - 30} ${a.y - 34}, ${x + 30} ${a.y - 34}, ${x + 12} ${a.y}`;
  }
  const ax = a.x + a.w / 2, ay = a.y + a.h / 2, bx = b.x + b.w / 2, by = b.y + b.h / 2;
  const [sx, sy] = border(a, bx - ax, by - ay);
  const [tx, ty] = border(b, ax - bx, ay - by);
  // The control point sits off the middle, to the left of the direction of travel.
  const dx = tx - sx, dy = ty - sy;
  const len = Math.hypot(dx, dy) || 1;
  const bend = Math.min(MAX_BEND, len * 0.3);
  const cx = (sx + tx) / 2 - (dy / len) * bend, cy = (sy + ty) / 2 + (dx / len) * bend;
  return `M ${r(sx)} ${r(sy)} Q ${r(cx)} ${r(cy)} ${r(tx)} ${r(ty)}`;
}

// border is where a ray from the box's centre in direction (dx, dy) leaves the box.
function border(p, dx, dy) {
  const cx = p.x + p.w / 2, cy = p.y + p.h / 2;
  if (dx === 0 && dy === 0) return [cx, cy];
  const t = Math.min(dx === 0 ? Infinity : p.w / 2 / Math.abs(dx), dy === 0 ? Infinity : p.h / 2 / Math.abs(dy));
  return [cx + dx * t, cy + dy * t];
}

const r = (v) => Math.round(v * 10) / 10;
