package app

import (
	"crypto/rand"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/flowlens/flowlens/collector/config"
	"github.com/flowlens/flowlens/collector/exporters"
	expconfig "github.com/flowlens/flowlens/exporter/config"
	"github.com/flowlens/flowlens/exporter/metrics"
	"github.com/flowlens/flowlens/exporter/shipper"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/tlstest"
)

// fleetShipper is a real exporter's shipper (no capture: the test writes its records) named id.
func fleetShipper(t *testing.T, id string, args ...string) *shipper.Shipper {
	t.Helper()
	cfg, err := expconfig.Load(append([]string{"--output", "collector", "--exporter-id", id, "--metrics-addr", "",
		"--workload-name", id, "--workload-namespace", "shop", "--workload-node", "node-7", "--send-timeout", "2s"}, args...))
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(id)
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, log)
	if err != nil {
		t.Fatal(err)
	}
	s, err := shipper.New(cfg.Collector, cfg.Workload, m.Drops, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// writeGood writes n valid records ending now and flushes them as one batch.
func writeGood(s *shipper.Shipper, n int) {
	lo := netip.MustParseAddr("127.0.0.1")
	for i := range n {
		end := time.Now().UnixNano()
		r := flow.Record{LocalAddr: lo, RemoteAddr: lo, LocalPort: uint16(40000 + i), RemotePort: 80,
			StartTime: end - int64(time.Millisecond), EndTime: end, Close: flow.CloseNormal, Comm: "app"}
		s.Write(&r)
	}
	s.Flush()
}

// TestFleetHealth: a real collector with gRPC, HTTPS and UDP ingest, and a real exporter shipper over
// each. /api/v1/exporters shows each exporter with the transport the collector received it on, the
// transport and reason the exporter reports, its exact records and batches, and the drops it really made:
// the gRPC exporter evicted three batches from its buffer of two while the collector was still down; the
// HTTPS exporter had a batch refused by the collector (an address of no length), the UDP exporter one it
// could not fit in a datagram. /api/v1/ingest has exactly those batches and records in its window, and the
// fleet's metrics are on the collector's registry.
func TestFleetHealth(t *testing.T) {
	dir := t.TempDir()
	ca, err := tlstest.NewCA("fleet health ca")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := ca.Server()
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile, certFile, keyFile := write("ca.pem", ca.CertPEM), write("server.pem", pair.CertPEM), write("server.key", pair.KeyPEM)
	udpKey := write("udp.key", []byte("0123456789abcdef0123456789abcdef\n"))
	grpcAddr, httpsAddr := freeAddr(t), freeAddr(t)
	uc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	udpAddr := uc.LocalAddr().String()
	uc.Close()

	// The gRPC exporter starts first, while nothing listens: of five one-record batches, its buffer of two
	// keeps two, whatever its sender is doing, and evicts three.
	g := fleetShipper(t, "exp-grpc", "--collector-grpc-addr", grpcAddr, "--collector-insecure", "--collector-transport", "grpc",
		"--batch-records", "1", "--buffer-batches", "2")
	for range 5 {
		writeGood(g, 1)
	}

	cfg, err := config.Load([]string{"--insecure", "--grpc-addr", grpcAddr, "--https-addr", httpsAddr, "--udp-addr", udpAddr,
		"--udp-key-file", udpKey, "--cert-file", certFile, "--key-file", keyFile, "--api-addr", "127.0.0.1:0",
		"--metrics-addr", "", "--data-dir", filepath.Join(dir, "data"), "--attribution-deadline", "5s"})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	col, err := Start(cfg, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)).Named("collector"), reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	defer stopCollector(col)

	// No proxy in the environment: the HTTPS exporter, on auto with only HTTPS configured, says why.
	t.Setenv("HTTPS_PROXY", "")
	t.Setenv("https_proxy", "")
	h := fleetShipper(t, "exp-https", "--collector-https-url", "https://"+httpsAddr+"/v1/batches", "--collector-ca-file", caFile,
		"--collector-transport", "auto", "--batch-records", "10")
	u := fleetShipper(t, "exp-udp", "--collector-udp-addr", udpAddr, "--collector-udp-key-file", udpKey,
		"--collector-transport", "udp", "--batch-records", "10")
	for _, s := range []*shipper.Shipper{h, u} {
		writeGood(s, 25) // batches of 10, 10 and 5
	}
	// HTTPS: a record without addresses, which the collector refuses (400: never resent).
	h.Write(&flow.Record{EndTime: time.Now().UnixNano(), Close: flow.CloseNormal})
	h.Flush()
	// UDP: a record with 3,000 random letters, which no datagram holds even compressed.
	comm := make([]byte, 3000)
	rand.Read(comm)
	for i := range comm {
		comm[i] = 'a' + comm[i]%26
	}
	lo := netip.MustParseAddr("127.0.0.1")
	u.Write(&flow.Record{LocalAddr: lo, RemoteAddr: lo, EndTime: time.Now().UnixNano(), Close: flow.CloseNormal, Comm: string(comm)})
	u.Flush()
	// The batch after the refused one carries the drop in its status: batches leave one at a time, in order.
	for _, s := range []*shipper.Shipper{h, u} {
		writeGood(s, 4)
	}
	for _, s := range []*shipper.Shipper{g, h, u} {
		if err := s.Close(20 * time.Second); err != nil {
			t.Fatal(err)
		}
	}

	api := "http://" + col.APIAddr()
	want := map[string]struct {
		over, transport, reason string
		records, batches        uint64
		drops                   map[string]uint64
	}{
		"exp-grpc":  {"grpc", "grpc", "pinned in the config", 2, 2, map[string]uint64{"transport/buffer_full": 3}},
		"exp-https": {"https", "https", "the most reliable transport that works", 29, 4, map[string]uint64{"transport/rejected": 1}},
		"exp-udp":   {"udp", "udp", "pinned in the config", 29, 4, map[string]uint64{"transport/rejected": 1}},
	}
	var got struct {
		Exporters []exporters.Exporter `json:"exporters"`
	}
	// UDP datagrams are not acknowledged: Close returns once they left, not once they were stored.
	deadline := time.Now().Add(10 * time.Second)
	for {
		getJSON(t, api+"/api/v1/exporters", &got)
		var records uint64
		for _, e := range got.Exporters {
			records += e.Records
		}
		if records == 60 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(got.Exporters) != 3 {
		t.Fatalf("%d exporters: %+v", len(got.Exporters), got.Exporters)
	}
	for i, e := range got.Exporters {
		name := e.ID[:strings.LastIndex(e.ID, "-")] // the id is the configured one and the run's nonce
		w, ok := want[name]
		if !ok || (i > 0 && e.ID < got.Exporters[i-1].ID) {
			t.Fatalf("exporter %d: %q, unexpected or out of order", i, e.ID)
		}
		if e.ReceivedOver != w.over || e.Transport != w.transport || e.TransportReason != w.reason {
			t.Errorf("%s: received over %q, transport %q (%q); want %q, %q (%q)", name, e.ReceivedOver, e.Transport,
				e.TransportReason, w.over, w.transport, w.reason)
		}
		if e.Records != w.records || e.Batches != w.batches || e.LostBatches != 0 || e.QueuedRecords != 0 {
			t.Errorf("%s: %d records in %d batches, %d lost, %d queued; want %d in %d, 0 lost, 0 queued", name,
				e.Records, e.Batches, e.LostBatches, e.QueuedRecords, w.records, w.batches)
		}
		if !maps.Equal(e.Drops, w.drops) {
			t.Errorf("%s: drops %v, want %v", name, e.Drops, w.drops)
		}
		if e.Host != "node-7" || e.Workload != (flow.Workload{Name: name, Namespace: "shop", Node: "node-7"}) {
			t.Errorf("%s: host %q, workload %+v", name, e.Host, e.Workload)
		}
		if e.StartedAt == nil || e.StartedAt.After(e.FirstSeen) || e.FirstSeen.After(e.LastSeen) ||
			time.Since(e.LastSeen) > time.Minute {
			t.Errorf("%s: started %v, first seen %v, last seen %v", name, e.StartedAt, e.FirstSeen, e.LastSeen)
		}
		// The same clock on both ends: lags are what passed, never negative, and well under a minute.
		if e.LagMs < 0 || e.LagMs > 60_000 || e.ExportLagMs < 0 || e.ExportLagMs > 60_000 {
			t.Errorf("%s: lag %v ms, export lag %v ms", name, e.LagMs, e.ExportLagMs)
		}
	}

	var in exporters.Ingest
	getJSON(t, api+"/api/v1/ingest", &in)
	perWindow := func(v float64) float64 { return v * exporters.Window }
	if fmt.Sprintf("%.6f %.6f %.6f", perWindow(in.BatchesPerSecond), perWindow(in.RecordsPerSecond), perWindow(in.RefusedPerSecond)) !=
		"10.000000 60.000000 0.000000" {
		t.Errorf("window: %v batches, %v records, %v refused; want 10, 60, 0", perWindow(in.BatchesPerSecond),
			perWindow(in.RecordsPerSecond), perWindow(in.RefusedPerSecond))
	}
	for tr, w := range map[string][2]float64{"grpc": {2, 2}, "https": {4, 29}, "udp": {4, 29}} {
		r := in.ByTransport[tr]
		b, rec, bytes := perWindow(r.BatchesPerSecond), perWindow(r.RecordsPerSecond), perWindow(r.BytesPerSecond)
		if fmt.Sprintf("%.6f %.6f", b, rec) != fmt.Sprintf("%.6f %.6f", w[0], w[1]) || bytes < 20*rec || bytes > 2000*rec {
			t.Errorf("%s: %v batches, %v records, %v bytes in the window; want %v, %v and 20-2000 bytes a record", tr, b, rec, bytes, w[0], w[1])
		}
	}
	if in.WindowSeconds != 60 || in.Exporters != 3 || in.ExportersStale != 0 || in.QueueCapacity != cfg.QueueRecords || in.QueueRecords < 0 || in.ParkedRecords < 0 {
		t.Errorf("ingest: %+v", in)
	}

	for _, c := range []struct {
		name, label string
		want        float64
	}{
		{"flowlens_collector_exporters", "udp", 1},
		{"flowlens_collector_exporters_reported_drops", "transport/rejected", 2},
		{"flowlens_collector_exporters_reported_drops", "transport/buffer_full", 3},
	} {
		if v := gaugeValue(t, reg, c.name, c.label); v != c.want {
			t.Errorf("%s{%s} = %v, want %v", c.name, c.label, v, c.want)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "flowlens_collector_ingest_bytes_total"); err != nil || n != 3 {
		t.Errorf("flowlens_collector_ingest_bytes_total: %d series, %v", n, err)
	}
}

// gaugeValue is the value of the family's series whose one label has value label.
func gaugeValue(t *testing.T, g prometheus.Gatherer, family, label string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == label {
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}
