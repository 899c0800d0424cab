// Package api is the collector's HTTP/JSON query API over its flow store: flows, the dependency graph,
// top talkers, failing pathways and cross-namespace/cluster traffic. Every endpoint is a GET with query
// parameters and answers JSON; a bad parameter gets 400 with {"error": "<param>: <why>"}.
//
// Time parameters (from, to) take RFC 3339 ("2026-11-25T02:00:00Z"), Unix nanoseconds
// ("1795000000000000000"), "now", or a duration relative to now ("-15m", "-2h30m"). A window selects the
// flows that overlap it. Defaults: from -1h, to now, limit 100 (at most 10000).
//
// /api/v1/flows selects a graph node with workload, workload_namespace and workload_cluster (either side
// of the flow is that node), and an edge with client, client_namespace, client_cluster, server,
// server_namespace and server_cluster (the connections the graph's edge counts, each once, by end time;
// see store.FlowQuery). Each of those matches its field exactly; "-" stands for the empty value (the
// node of addresses with no known owner is client=-&client_namespace=-&client_cluster=-).
package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/api/model"
	"github.com/flowlens/flowlens/collector/store"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/timeparam"
)

// LookupFunc serves the IP ownership endpoints, /api/v1/lookup and /api/v1/ranges: sonar's HTTP
// handler's ServeHTTP, so that the collector can mount one handler for its whole API. Nil leaves those
// paths to whoever else the collector mounts there (Handler answers them 404).
type LookupFunc func(http.ResponseWriter, *http.Request)

// Limits on the page size.
const (
	DefaultLimit = 100
	MaxLimit     = 10000
)

// The answers' types; see package model.
type (
	DepsResponse  = model.DepsResponse
	EdgesResponse = model.EdgesResponse
	ErrorResponse = model.ErrorResponse
)

type handler struct {
	store *store.Store
	log   *zap.Logger
	now   func() time.Time
}

// Handler returns the query API over s. lookup, if not nil, serves the ownership endpoints.
func Handler(s *store.Store, lookup LookupFunc, log *zap.Logger) http.Handler {
	h := &handler{store: s, log: log, now: time.Now}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/flows", h.flows)
	mux.HandleFunc("GET /api/v1/deps", h.deps)
	mux.HandleFunc("GET /api/v1/top", h.top)
	mux.HandleFunc("GET /api/v1/failing", h.failing)
	mux.HandleFunc("GET /api/v1/cross", h.cross)
	if lookup != nil {
		mux.HandleFunc("/api/v1/lookup", lookup)
		mux.HandleFunc("/api/v1/ranges", lookup)
	}
	return mux
}

// paramError is a 400: which parameter and why.
type paramError struct{ param, why string }

func (e *paramError) Error() string { return e.param + ": " + e.why }

// params reads a request's query parameters, refusing ones the endpoint does not take (a typo would
// otherwise silently widen the query).
type params struct {
	r   *http.Request
	now time.Time
	err error
}

func (h *handler) params(r *http.Request, allowed ...string) *params {
	p := &params{r: r, now: h.now()}
	for k, v := range r.URL.Query() {
		switch {
		case !slices.Contains(allowed, k):
			p.fail(k, "unknown parameter (this endpoint takes "+strings.Join(allowed, ", ")+")")
		case len(v) > 1:
			p.fail(k, "given more than once")
		}
	}
	return p
}

func (p *params) fail(param, why string) {
	if p.err == nil {
		p.err = &paramError{param, why}
	}
}

func (p *params) str(name string) string { return p.r.URL.Query().Get(name) }

// window reads from and to.
func (p *params) window() (from, to int64) {
	from, to = p.time("from", "-1h"), p.time("to", "now")
	if p.err == nil && from > to {
		p.fail("from", "after to")
	}
	return from, to
}

func (p *params) time(name, def string) int64 {
	v := p.str(name)
	if v == "" {
		v = def
	}
	t, err := timeparam.Parse(v, p.now)
	if err != nil {
		p.fail(name, err.Error())
	}
	return t
}

// node reads a graph node filter: name, name_namespace and name_cluster, "-" standing for "".
func (p *params) node(name string) store.NodeFilter {
	field := func(param string) *string {
		v, ok := p.r.URL.Query()[param]
		if !ok || v[0] == "" {
			return nil
		}
		if v[0] == "-" {
			return new("")
		}
		return &v[0]
	}
	return store.NodeFilter{Name: field(name), Namespace: field(name + "_namespace"), Cluster: field(name + "_cluster")}
}

func (p *params) limit() int {
	v := p.str("limit")
	if v == "" {
		return DefaultLimit
	}
	n, err := strconv.Atoi(v)
	switch {
	case err != nil:
		p.fail("limit", fmt.Sprintf("%q is not a number", v))
	case n < 1 || n > MaxLimit:
		p.fail("limit", fmt.Sprintf("%d is out of range 1..%d", n, MaxLimit))
	}
	return n
}

func (p *params) oneOf(name, def string, vals ...string) string {
	v := p.str(name)
	if v == "" {
		return def
	}
	if !slices.Contains(vals, v) {
		p.fail(name, fmt.Sprintf("%q is not one of %s", v, strings.Join(vals, ", ")))
	}
	return v
}

func (h *handler) flows(w http.ResponseWriter, r *http.Request) {
	p := h.params(r, "workload", "workload_namespace", "workload_cluster", "client", "client_namespace", "client_cluster",
		"server", "server_namespace", "server_cluster", "namespace", "ip", "port", "role", "from", "to", "attribution", "close", "limit", "cursor")
	q := store.FlowQuery{Namespace: p.str("namespace"), Cursor: p.str("cursor"),
		Peer: p.node("workload"), Client: p.node("client"), Server: p.node("server")}
	q.From, q.To = p.window()
	q.Limit = p.limit()
	if v := p.str("ip"); v != "" {
		ip, err := netip.ParseAddr(v)
		if err != nil {
			p.fail("ip", fmt.Sprintf("%q is not an IP address", v))
		}
		q.IP = ip.Unmap()
	}
	if v := p.str("port"); v != "" {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			p.fail("port", fmt.Sprintf("%q is not a port (1..65535)", v))
		}
		q.Port = uint16(n)
	}
	if v := p.str("role"); v != "" {
		var role flow.Role
		if err := role.UnmarshalText([]byte(strings.ToUpper(v))); err != nil {
			p.fail("role", err.Error())
		}
		q.Role = &role
	}
	if v := p.str("attribution"); v != "" {
		var a flow.Attribution
		if err := a.UnmarshalText([]byte(strings.ToUpper(v))); err != nil {
			p.fail("attribution", err.Error())
		}
		q.Attribution = &a
	}
	if v := p.str("close"); v != "" {
		var c flow.Close
		if err := c.UnmarshalText([]byte(strings.ToUpper(v))); err != nil {
			p.fail("close", err.Error())
		}
		q.Close = &c
	}
	if p.err != nil {
		h.fail(w, p.err)
		return
	}
	page, err := h.store.Flows(r.Context(), q)
	if errors.Is(err, store.ErrBadCursor) {
		err = &paramError{"cursor", err.Error()}
	}
	h.reply(w, page, err)
}

func (h *handler) deps(w http.ResponseWriter, r *http.Request) {
	p := h.params(r, "from", "to", "namespace")
	q := store.EdgeQuery{Namespace: p.str("namespace")}
	q.From, q.To = p.window()
	if p.err != nil {
		h.fail(w, p.err)
		return
	}
	edges, err := h.store.Edges(r.Context(), q)
	resp := DepsResponse{From: q.From, To: q.To, Nodes: []store.Node{}, Edges: edges}
	seen := map[store.Node]bool{}
	for _, e := range edges {
		for _, n := range [2]store.Node{e.Client, e.Server} {
			if !seen[n] {
				seen[n] = true
				resp.Nodes = append(resp.Nodes, n)
			}
		}
	}
	slices.SortFunc(resp.Nodes, func(a, b store.Node) int {
		return strings.Compare(a.Name+"\x00"+a.Namespace+"\x00"+a.Cluster, b.Name+"\x00"+b.Namespace+"\x00"+b.Cluster)
	})
	h.reply(w, resp, err)
}

func (h *handler) top(w http.ResponseWriter, r *http.Request) {
	p := h.params(r, "by", "from", "to", "limit")
	q := store.EdgeQuery{OrderBy: p.oneOf("by", "bytes", "bytes", "flows"), Limit: p.limit()}
	q.From, q.To = p.window()
	h.edges(w, r, p, q, q.OrderBy)
}

func (h *handler) failing(w http.ResponseWriter, r *http.Request) {
	p := h.params(r, "from", "to", "limit")
	q := store.EdgeQuery{OrderBy: "failures", Limit: p.limit()}
	q.From, q.To = p.window()
	h.edges(w, r, p, q, "")
}

func (h *handler) cross(w http.ResponseWriter, r *http.Request) {
	p := h.params(r, "by", "from", "to", "limit")
	q := store.EdgeQuery{GroupBy: p.oneOf("by", "namespace", "namespace", "cluster"), OrderBy: "bytes", Limit: p.limit()}
	q.From, q.To = p.window()
	h.edges(w, r, p, q, q.GroupBy)
}

func (h *handler) edges(w http.ResponseWriter, r *http.Request, p *params, q store.EdgeQuery, by string) {
	if p.err != nil {
		h.fail(w, p.err)
		return
	}
	edges, err := h.store.Edges(r.Context(), q)
	h.reply(w, EdgesResponse{From: q.From, To: q.To, By: by, Edges: edges}, err)
}

func (h *handler) reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		h.fail(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(w).Encode(v); err != nil {
		h.log.Debug("api reply", zap.Error(err))
	}
}

func (h *handler) fail(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	var pe *paramError
	if errors.As(err, &pe) {
		code = http.StatusBadRequest
	} else {
		h.log.Warn("api query", zap.Error(err))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(ErrorResponse{Error: err.Error()})
}
