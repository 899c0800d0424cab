// format.js: small DOM and formatting helpers shared by the pages.

const SVG_NS = 'http://www.w3.org/2000/svg';

// el builds an HTML element: attrs are set as attributes (data-* included), children appended
// (strings become text nodes, so nothing from the API is ever parsed as HTML).
export function el(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

// svg builds an SVG element the same way.
export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null && v !== false) node.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c !== undefined && c !== null) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

// Times in the API are Unix nanoseconds. int64 extremes stand for "always" (CIDR table entries).
export function fmtTime(ns) {
  if (ns === undefined || ns === null || ns === 0) return '';
  if (ns <= -9e18) return '−∞';
  if (ns >= 9e18) return '∞';
  return new Date(ns / 1e6).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

// fmtRFC3339 formats an RFC 3339 string (the fleet endpoints' times) like fmtTime.
export function fmtRFC3339(s) {
  if (!s) return '';
  const ms = Date.parse(s);
  return Number.isNaN(ms) ? s : fmtTime(ms * 1e6);
}

export function fmtBytes(n) {
  if (!n) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return (i === 0 ? n : n.toFixed(1)) + ' ' + units[i];
}

export function fmtUs(us) {
  if (!us) return '';
  return us >= 1000 ? (us / 1000).toFixed(1) + ' ms' : Math.round(us) + ' µs';
}

export function fmtRate(n) {
  return n >= 100 ? Math.round(n).toLocaleString('en') : (n || 0).toFixed(1);
}

// workloadLabel names a workload for people; the empty workload is an address nobody owns (yet).
export function workloadLabel(w) {
  if (!w || !w.name) return w && w.namespace ? `(unnamed)/${w.namespace}` : '(unknown)';
  return w.namespace ? `${w.namespace}/${w.name}` : w.name;
}

export function addr(ip, port) {
  return ip && ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}

// status shows a message under a page; error styles it as one.
export function status(node, msg, error = false) {
  node.textContent = msg;
  node.classList.toggle('error', error);
}
