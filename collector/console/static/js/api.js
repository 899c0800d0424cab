// api.js: the console's only door to the network. Every request is a same-origin GET of the collector's
// JSON API (the page's Content-Security-Policy would refuse anything else anyway).

// APIError carries the API's own explanation ({"error": "..."}) so pages can show it as is.
export class APIError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// query spells params as a query string, leaving out empty values: an empty filter means "any",
// and the API refuses parameters it does not know, so nothing unset is sent.
export function query(params) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v !== undefined && v !== null && v !== '') qs.set(k, String(v));
  }
  const s = qs.toString();
  return s ? '?' + s : '';
}

// getJSON fetches path with params and returns the decoded answer, or throws an APIError.
export async function getJSON(path, params) {
  const resp = await fetch(path + query(params), { headers: { Accept: 'application/json' } });
  let body = null;
  try {
    body = await resp.json();
  } catch {
    // A 404 from a collector without this endpoint is plain text; the status says enough.
  }
  if (!resp.ok) {
    throw new APIError(resp.status, body && body.error ? body.error : `${resp.status} ${resp.statusText}`);
  }
  return body;
}
