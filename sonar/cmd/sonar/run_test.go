package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/client"
	"github.com/flowlens/flowlens/sonar/config"
	"github.com/flowlens/flowlens/sonar/index"
)

// start runs sonar as main does, on loopback ports chosen at run time, and returns its addresses and
// a stop function that waits for run to return.
func start(t *testing.T, cfg config.Config) (grpcAddr, httpURL string, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan [2]net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, cfg, zap.NewNop(), prometheus.NewRegistry(), func(g, h net.Addr) { addrs <- [2]net.Addr{g, h} })
	}()
	select {
	case a := <-addrs:
		return a[0].String(), "http://" + a[1].String(), func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	case err := <-done:
		cancel()
		t.Fatalf("run: %v", err)
		return "", "", nil
	}
}

func testConfig(t *testing.T) config.Config {
	cfg, err := config.Load([]string{"--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	return string(b)
}

// TestServeRestartAndCIDR: claims reported over gRPC are answered over gRPC and HTTP, counted in
// /metrics, survive a restart through the data dir, and the CIDR file answers what no claim covers.
func TestServeRestartAndCIDR(t *testing.T) {
	cfg := testConfig(t)
	cfg.DataDir = t.TempDir()
	cfg.CIDRFile = filepath.Join(t.TempDir(), "cidrs.yaml")
	os.WriteFile(cfg.CIDRFile, []byte("- cidr: 203.0.113.0/24\n  name: payments\n  namespace: external\n"), 0o644)
	t0 := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC).UnixNano()
	web := flow.Workload{Name: "web", Namespace: "shop", Pod: "web-1", Cluster: "prod"}

	grpcAddr, httpURL, stop := start(t, cfg)
	c, err := client.Dial(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Report(ctx, []index.Claim{{IP: netip.MustParseAddr("10.0.0.5"), Start: t0, End: t0 + 10*int64(time.Second), Owner: web, Evidence: index.EvidenceHeartbeat}}); err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf(`{"ip":"10.0.0.5","at":%d,"status":"OWNER","range":{"start":%d,"end":%d,"last_seen":%d,"owner":{"name":"web","namespace":"shop","pod":"web-1","cluster":"prod"},"evidence":"HEARTBEAT"}}`+"\n",
		t0+1, t0, t0+10*int64(time.Second), t0+10*int64(time.Second))
	if got := get(t, fmt.Sprintf("%s/api/v1/lookup?ip=10.0.0.5&at=%d", httpURL, t0+1)); got != want {
		t.Fatalf("HTTP lookup: %s\nwant %s", got, want)
	}
	a, err := c.Lookup(ctx, netip.MustParseAddr("203.0.113.4"), t0)
	if err != nil || a.Status != index.Owned || a.Range.Owner.Name != "payments" || a.Range.Evidence != index.EvidenceCIDR {
		t.Fatalf("CIDR lookup: %+v %v", a, err)
	}
	metrics := get(t, httpURL+"/metrics")
	for _, line := range []string{
		`flowlens_sonar_lookups_total{status="OWNER"} 2`,
		"flowlens_sonar_claims_reported_total 1",
		"flowlens_sonar_ranges 1",
		"flowlens_sonar_ips 1",
		"flowlens_sonar_cidr_entries 1",
		"flowlens_sonar_persist_claims_total 1",
		`flowlens_sonar_persist_errors_total{reason="corrupt_log"} 0`,
	} {
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("/metrics lacks %q", line)
		}
	}
	c.Close()
	stop()

	grpcAddr, httpURL, stop = start(t, cfg)
	defer stop()
	if got := get(t, fmt.Sprintf("%s/api/v1/lookup?ip=10.0.0.5&at=%d", httpURL, t0+1)); got != want {
		t.Fatalf("HTTP lookup after restart: %s\nwant %s", got, want)
	}
	c, err = client.Dial(grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rs, _, err := c.Ranges(ctx, netip.MustParseAddr("10.0.0.5"))
	if err != nil || len(rs) != 1 || rs[0].Owner != web {
		t.Fatalf("ranges after restart: %+v %v", rs, err)
	}
}

func TestRunRefusesBadCIDRFile(t *testing.T) {
	cfg := testConfig(t)
	cfg.CIDRFile = filepath.Join(t.TempDir(), "missing.yaml")
	err := run(context.Background(), cfg, zap.NewNop(), prometheus.NewRegistry(), nil)
	if err == nil || !strings.Contains(err.Error(), "cidr file "+cfg.CIDRFile+": open") {
		t.Fatalf("run with a missing CIDR file: %v", err)
	}
}
