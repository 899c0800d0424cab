package console_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/api"
	"github.com/flowlens/flowlens/collector/console"
	"github.com/flowlens/flowlens/collector/store"
	"github.com/flowlens/flowlens/internal/flow"
)

// BenchmarkMapRender: a graph of 500 workloads in 10 namespaces and 2000 edges (each workload calls
// the next four). Printed: the deps API's answer time for it (Go client, same machine), and in
// headless Chromium the fetch and decode of that answer and the map's layout and SVG build
// (data-fetch-ms and data-render-ms, measured by the page), per drawing.
func BenchmarkMapRender(b *testing.B) {
	const workloads, fanout = 500, 4
	s, err := store.Open(store.Config{Path: filepath.Join(b.TempDir(), "flows.duckdb")}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	w := func(i int) flow.Workload {
		return flow.Workload{Name: fmt.Sprintf("svc-%03d", i), Namespace: fmt.Sprintf("team-%d", i%10), Pod: fmt.Sprintf("svc-%03d-0", i), Cluster: "c1"}
	}
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 30, byte(i / 256), byte(i % 256)}) }
	base := time.Now().Add(-20 * time.Minute).UnixNano()
	var flows []flow.Enriched
	for i := range workloads {
		for k := 1; k <= fanout; k++ {
			j := (i + k*7) % workloads
			start := base + int64(len(flows))*int64(time.Millisecond)
			c := flow.CloseNormal
			if len(flows)%50 == 0 {
				c = flow.CloseResetReceived
			}
			flows = append(flows, flow.Enriched{
				Record: flow.Record{LocalAddr: ip(i), LocalPort: uint16(30000 + k), RemoteAddr: ip(j), RemotePort: 443, Role: flow.RoleClient,
					StartTime: start, EndTime: start + int64(time.Second), BytesSent: uint64(100 * (k + i%13)), BytesReceived: 5000,
					SegsSent: 10, SegsReceived: 10, Retransmits: uint32(i % 3), SrttUs: uint32(200 + i), Close: c, LocalWorkload: w(i)},
				ExporterID: "bench", RemoteWorkload: w(j), Attribution: flow.AttributionHeartbeat,
			})
		}
	}
	if err := s.Write(context.Background(), store.Write{Flows: flows}); err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/", api.Handler(s, nil, zap.NewNop()))
	console.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// The API alone.
	const apiRuns = 20
	t0 := time.Now()
	for range apiRuns {
		var deps api.DepsResponse
		getJSON(b, srv.URL+"/api/v1/deps", &deps)
		if len(deps.Edges) != workloads*fanout || len(deps.Nodes) != workloads {
			b.Fatalf("%d nodes, %d edges", len(deps.Nodes), len(deps.Edges))
		}
	}
	apiMs := float64(time.Since(t0).Microseconds()) / 1000 / apiRuns

	br := startBrowser(b, srv.URL)
	var fetchMs, renderMs, layoutMs float64
	b.ResetTimer()
	for i := range b.N {
		br.open(b, "map?n="+strconv.Itoa(i), "#map")
		m := eval[map[string]string](b, br, `({...document.querySelector('#map').dataset})`)
		f, _ := strconv.ParseFloat(m["fetchMs"], 64)
		r, _ := strconv.ParseFloat(m["renderMs"], 64)
		l, _ := strconv.ParseFloat(m["layoutMs"], 64)
		layoutMs += l
		fetchMs += f
		renderMs += r
	}
	b.StopTimer()
	if n := eval[int](b, br, `document.querySelectorAll('#map g.edge').length`); n != workloads*fanout {
		b.Fatalf("map drew %d edges", n)
	}
	br.screenshot(b, "map-large")
	b.ReportMetric(apiMs, "deps-api-ms")
	b.ReportMetric(fetchMs/float64(b.N), "browser-fetch-ms")
	b.ReportMetric(renderMs/float64(b.N), "render-ms")
	b.ReportMetric(layoutMs/float64(b.N), "layout-ms")
	b.ReportMetric(0, "ns/op") // the loop's wall time includes the test's polling; the figures above are the measure
}
