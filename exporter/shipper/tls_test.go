package shipper_test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/flowlens/flowlens/exporter/config"
	"github.com/flowlens/flowlens/exporter/metrics"
	"github.com/flowlens/flowlens/exporter/shipper"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/tlstest"
)

// shipFive sends five records through a shipper made with args and returns how many reached got and
// how many the shipper still held at shutdown.
func shipFive(t *testing.T, got *received, args ...string) (int, float64) {
	got.mu.Lock()
	got.recs = nil
	got.mu.Unlock()
	s, _, m := newShipper(t, append([]string{"--output", "collector", "--send-timeout", "1s"}, args...)...)
	for i := range 5 {
		r := flow.Record{LocalAddr: loopback, RemoteAddr: loopback, StartTime: int64(i + 1), EndTime: int64(i + 2), Close: flow.CloseNormal}
		s.Write(&r)
	}
	s.Close(2 * time.Second)
	got.mu.Lock()
	defer got.mu.Unlock()
	return len(got.recs), testutil.ToFloat64(m.Drops.WithLabelValues("transport", "shutdown"))
}

// TestGRPCMutualTLS: over gRPC with mutual TLS, an exporter with a certificate from the collector's CA
// delivers; one without a client certificate is refused, stores nothing, and counts its records at shutdown.
func TestGRPCMutualTLS(t *testing.T) {
	ca, err := tlstest.NewCA("flowlens test ca")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Server()
	if err != nil {
		t.Fatal(err)
	}
	client, err := ca.Client("exporter-1")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	caFile, certFile, keyFile := write("ca.pem", ca.CertPEM), write("c.pem", client.CertPEM), write("c.key", client.KeyPEM)

	got := &received{}
	addr := serveIngest(t, "127.0.0.1:0", got, grpc.Creds(credentials.NewTLS(ca.ServerConfig(server, tls.RequireAndVerifyClientCert))))

	ship := func(extra ...string) (int, float64) {
		return shipFive(t, got, append([]string{"--collector-grpc-addr", addr, "--collector-ca-file", caFile}, extra...)...)
	}
	if n, left := ship("--collector-cert-file", certFile, "--collector-key-file", keyFile); n != 5 || left != 0 {
		t.Fatalf("with a client certificate: %d records arrived, %v left, want 5 and 0", n, left)
	}
	if n, left := ship(); n != 0 || left != 5 {
		t.Fatalf("without a client certificate: %d records arrived, %v left, want 0 and 5", n, left)
	}
}

// TestGRPCCAFromEnvironment: a sidecar's collector CA arrives as PEM text in FLOWLENS_COLLECTOR_CA_PEM
// (flowlens-injector's collector.ca_file): with it the exporter verifies a collector whose certificate
// a private CA signed; without it (the system roots) it delivers nothing.
func TestGRPCCAFromEnvironment(t *testing.T) {
	ca, err := tlstest.NewCA("flowlens private ca")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Server()
	if err != nil {
		t.Fatal(err)
	}
	got := &received{}
	addr := serveIngest(t, "127.0.0.1:0", got, grpc.Creds(credentials.NewTLS(ca.ServerConfig(server, tls.NoClientCert))))
	ship := func() int {
		n, _ := shipFive(t, got, "--collector-grpc-addr", addr)
		return n
	}
	t.Setenv("FLOWLENS_COLLECTOR_CA_PEM", string(ca.CertPEM))
	if n := ship(); n != 5 {
		t.Fatalf("with the CA in the environment: %d records arrived, want 5", n)
	}
	t.Setenv("FLOWLENS_COLLECTOR_CA_PEM", "")
	if n := ship(); n != 0 {
		t.Fatalf("with the system roots: %d records arrived, want 0", n)
	}
	t.Setenv("FLOWLENS_COLLECTOR_CA_PEM", "not a certificate")
	cfg, err := config.Load([]string{"--output", "collector", "--collector-grpc-addr", addr})
	if err != nil {
		t.Fatal(err)
	}
	m, err := metrics.New(prometheus.NewRegistry(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := shipper.New(cfg.Collector, cfg.Workload, m.Drops, prometheus.NewRegistry(), zap.NewNop()); err == nil || !strings.Contains(err.Error(), "collector.ca_pem: no certificate") {
		t.Fatalf("with a bad CA: err %v", err)
	}
}
