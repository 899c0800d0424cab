package store_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/api/apitest"
	"github.com/flowlens/flowlens/collector/store"
	"github.com/flowlens/flowlens/internal/flow"
)

func ptr(s string) *string { return &s }

func nodeFilter(n store.Node) store.NodeFilter {
	return store.NodeFilter{Name: ptr(n.Name), Namespace: ptr(n.Namespace), Cluster: ptr(n.Cluster)}
}

// TestEdgeFlows: the flows an edge filter selects are exactly the connections the graph's edge sums,
// for every edge of the seed, and the peer and role filters select what they say.
func TestEdgeFlows(t *testing.T) {
	s, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "flows.duckdb")}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	base := time.Now().Add(-30 * time.Minute).UnixNano()
	seed, old := apitest.Flows(base)
	if err := s.Write(ctx, store.Write{Flows: append(seed, old)}); err != nil {
		t.Fatal(err)
	}
	from, to := base-int64(time.Minute), time.Now().UnixNano()
	edges, err := s.Edges(ctx, store.EdgeQuery{From: from, To: to})
	if err != nil {
		t.Fatal(err)
	}
	if len(edges) != 4 {
		t.Fatalf("%d edges", len(edges))
	}
	get := func(q store.FlowQuery) []flow.Enriched {
		t.Helper()
		q.From, q.To, q.Limit = from, to, 1000
		p, err := s.Flows(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		return p.Flows
	}
	for _, e := range edges {
		fl := get(store.FlowQuery{Client: nodeFilter(e.Client), Server: nodeFilter(e.Server)})
		var up, down uint64
		var failed int64
		for _, f := range fl {
			if f.Role == flow.RoleClient {
				up, down = up+f.BytesSent, down+f.BytesReceived
			} else {
				up, down = up+f.BytesReceived, down+f.BytesSent
			}
			if f.Close == flow.CloseConnectFailed {
				failed++
			}
		}
		if int64(len(fl)) != e.Flows || up != e.BytesToServer || down != e.BytesToClient || failed != e.ConnectFailures {
			t.Errorf("edge %+v -> %+v: %d flows %d up %d down %d failed, edge says %+v", e.Client, e.Server, len(fl), up, down, failed, e)
		}
	}
	// The unowned client's edge, spelled with empty fields; the old web -> db flow is outside the window.
	if fl := get(store.FlowQuery{Client: store.NodeFilter{Name: ptr("")}}); len(fl) != 1 || fl[0].RemoteAddr != apitest.OutIP {
		t.Fatalf("unowned client: %+v", fl)
	}
	// Every edge out of web: 5 + 1 + 1 connections; every flow of web, either side: 10 records.
	if n := len(get(store.FlowQuery{Client: store.NodeFilter{Name: ptr("web")}})); n != 7 {
		t.Fatalf("web as client: %d", n)
	}
	for _, c := range []struct {
		q    store.FlowQuery
		want int
	}{
		{store.FlowQuery{Peer: nodeFilter(store.Node{Name: "web", Namespace: "shop", Cluster: "c1"})}, 10},
		{store.FlowQuery{Peer: store.NodeFilter{Namespace: ptr("data")}}, 8},
		{store.FlowQuery{Peer: store.NodeFilter{Name: ptr("web"), Namespace: ptr("data")}}, 0}, // both on one side
		{store.FlowQuery{Peer: store.NodeFilter{Name: ptr("db")}, Role: new(flow.RoleServer)}, 3},
		{store.FlowQuery{Role: new(flow.RoleServer)}, 4},
		{store.FlowQuery{Role: new(flow.RoleClient), Close: new(flow.CloseConnectFailed)}, 2},
		{store.FlowQuery{Server: store.NodeFilter{Name: ptr("nobody")}}, 0},
	} {
		if n := len(get(c.q)); n != c.want {
			t.Errorf("%+v: %d flows, want %d", c.q, n, c.want)
		}
	}
}
