// Package apitest seeds a real store with a small, known set of flows and serves the query API over
// it on a loopback port, for the API's and flowctl's tests.
package apitest

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/api"
	"github.com/flowlens/flowlens/collector/store"
	"github.com/flowlens/flowlens/internal/flow"
)

// Workloads of the seed.
var (
	Web   = flow.Workload{Name: "web", Namespace: "shop", Pod: "web-1", Node: "n1", Cluster: "c1"}
	API   = flow.Workload{Name: "api", Namespace: "shop", Pod: "api-1", Node: "n1", Cluster: "c1"}
	DB    = flow.Workload{Name: "db", Namespace: "data", Pod: "db-0", Node: "n2", Cluster: "c1"}
	Cache = flow.Workload{Name: "cache", Namespace: "infra", Pod: "cache-0", Node: "n9", Cluster: "c2"}
)

// Addresses of the seed's workloads.
var (
	WebIP   = netip.MustParseAddr("10.0.0.1")
	APIIP   = netip.MustParseAddr("10.0.0.2")
	DBIP    = netip.MustParseAddr("10.0.1.1")
	CacheIP = netip.MustParseAddr("10.9.0.1")
	OutIP   = netip.MustParseAddr("203.0.113.7") // a client with no known owner
)

// Seed is what Serve stored: Base is the start of the seeded flows (30 minutes before the test ran),
// Old a flow two hours older, outside the default window.
type Seed struct {
	Base  int64
	Flows []flow.Enriched
	Old   flow.Enriched
}

func conn(exporter string, local flow.Workload, lip netip.Addr, lport uint16, remote flow.Workload, rip netip.Addr, rport uint16,
	role flow.Role, start int64, c flow.Close, sent, recv uint64, srtt uint32, attr flow.Attribution) flow.Enriched {
	return flow.Enriched{
		Record: flow.Record{LocalAddr: lip, LocalPort: lport, RemoteAddr: rip, RemotePort: rport, Role: role,
			StartTime: start, EndTime: start + int64(time.Second), BytesSent: sent, BytesReceived: recv,
			SegsSent: 4, SegsReceived: 4, SrttUs: srtt, Close: c, Comm: "app", LocalWorkload: local},
		ExporterID: exporter, RemoteWorkload: remote, Attribution: attr,
	}
}

// Flows builds the seed around base. The graph it makes (each connection once):
//
//	web -> db:     5 flows (2 connect failures), 600 B up, 60 B down, srtt 1000/2000/3000 us
//	web -> api:    1 flow, 1000 B up, TIMEOUT
//	web -> cache:  1 flow, 10 B up (cache is in cluster c2, namespace infra)
//	?   -> api:    1 flow from an unowned client, 50 B up, 5 B down, reset
//
// db exported its side of the three web -> db connections that opened; those server records do not
// count again (their client address is attributed from a heartbeat).
func Flows(base int64) (flows []flow.Enriched, old flow.Enriched) {
	s := int64(time.Second)
	hb := flow.AttributionHeartbeat
	for i, f := range []struct {
		sent, recv uint64
		srtt       uint32
		c          flow.Close
	}{{100, 10, 1000, flow.CloseNormal}, {200, 20, 2000, flow.CloseNormal}, {300, 30, 3000, flow.CloseNormal}, {0, 0, 0, flow.CloseConnectFailed}, {0, 0, 0, flow.CloseConnectFailed}} {
		port := uint16(40000 + i)
		start := base + int64(i)*s
		flows = append(flows, conn("web-exp", Web, WebIP, port, DB, DBIP, 5432, flow.RoleClient, start, f.c, f.sent, f.recv, f.srtt, hb))
		if f.c == flow.CloseNormal {
			flows = append(flows, conn("db-exp", DB, DBIP, 5432, Web, WebIP, port, flow.RoleServer, start, f.c, f.recv, f.sent, f.srtt, hb))
		}
	}
	flows = append(flows,
		conn("web-exp", Web, WebIP, 41000, API, APIIP, 8080, flow.RoleClient, base+10*s, flow.CloseTimeout, 1000, 0, 500, hb),
		conn("web-exp", Web, WebIP, 41001, Cache, CacheIP, 6379, flow.RoleClient, base+11*s, flow.CloseNormal, 10, 0, 700, flow.AttributionPodEvent),
		conn("api-exp", API, APIIP, 8080, flow.Workload{}, OutIP, 55555, flow.RoleServer, base+12*s, flow.CloseResetReceived, 5, 50, 900, flow.AttributionUnattributed),
	)
	old = conn("web-exp", Web, WebIP, 42000, DB, DBIP, 5432, flow.RoleClient, base-2*int64(time.Hour), flow.CloseNormal, 7, 7, 100, hb)
	return flows, old
}

// Serve opens a store in a temporary directory, stores the seed and serves the API over it on a
// loopback port. lookup is passed to api.Handler.
func Serve(t testing.TB, lookup api.LookupFunc) (*httptest.Server, *store.Store, Seed) {
	t.Helper()
	s, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "flows.duckdb")}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	seed := Seed{Base: time.Now().Add(-30 * time.Minute).UnixNano()}
	seed.Flows, seed.Old = Flows(seed.Base)
	if err := s.Write(context.Background(), store.Write{Flows: append(append([]flow.Enriched{}, seed.Flows...), seed.Old)}); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.Handler(s, lookup, zap.NewNop()))
	t.Cleanup(srv.Close)
	return srv, s, seed
}

// Get fetches path from srv and returns the status and body.
func Get(t testing.TB, srv *httptest.Server, path string) (int, []byte) {
	t.Helper()
	resp, err := http.Get(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}
