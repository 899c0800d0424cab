package shipper_test

import (
	"context"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/flowlens/flowlens/collector/ingest"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/tlstest"
)

// byTransport records which transport brought each record.
type byTransport struct {
	mu   sync.Mutex
	seen map[int64]string // record start time -> transport
	dups int
}

func (b *byTransport) Put(_ context.Context, batch *ingest.Batch) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, r := range batch.Records {
		if _, ok := b.seen[r.StartTime]; ok {
			b.dups++
		}
		b.seen[r.StartTime] = batch.Transport
	}
	return nil
}

func (b *byTransport) last() (string, int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var lastT int64
	for t := range b.seen {
		lastT = max(lastT, t)
	}
	return b.seen[lastT], len(b.seen)
}

// TestFailoverToHTTPSAndBack: an auto exporter on gRPC moves to HTTPS within 10 s of the collector's gRPC
// listener stopping, loses nothing and stores nothing twice, and returns to gRPC after its probe interval
// once gRPC is back.
func TestFailoverToHTTPSAndBack(t *testing.T) {
	ca, _ := tlstest.NewCA("failover ca")
	pair, _ := ca.Server()
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(caFile, ca.CertPEM, 0o600)

	got := &byTransport{seen: map[int64]string{}}
	h := &ingest.Handler{Sink: got, Dedup: ingest.NewDedup(100), Metrics: ingest.NewMetrics(prometheus.NewRegistry()), Log: zaptest.NewLogger(t)}
	hs, err := ingest.ServeHTTPS("127.0.0.1:0", ca.ServerConfig(pair, tls.NoClientCert), h, ingest.HTTPSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	startGRPC := func(addr string) (*grpc.Server, string) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		srv := ingest.NewGRPCServer(h, grpc.Creds(credentials.NewTLS(ca.ServerConfig(pair, tls.NoClientCert))))
		go srv.Serve(ln)
		return srv, ln.Addr().String()
	}
	gs, grpcAddr := startGRPC("127.0.0.1:0")

	const probe = 3 * time.Second
	ship, _, _ := newShipper(t, "--output", "collector", "--collector-grpc-addr", grpcAddr,
		"--collector-https-url", "https://"+hs.Addr+"/v1/batches", "--collector-ca-file", caFile,
		"--batch-records", "5", "--send-timeout", "1s", "--probe-interval", probe.String())
	// The exporter writes a record every 10 ms, as a steady workload would; the shipper is used from
	// this one goroutine only.
	written := 0
	write := func(d time.Duration) {
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(10 * time.Millisecond) {
			written++
			r := flow.Record{LocalAddr: loopback, RemoteAddr: loopback, StartTime: int64(written), EndTime: int64(written + 1), Close: flow.CloseNormal}
			ship.Write(&r)
			if written%5 == 0 {
				ship.Flush()
			}
		}
	}
	waitFor := func(what string, within time.Duration, cond func() bool) time.Duration {
		start := time.Now()
		for !cond() {
			if time.Since(start) > within {
				t.Fatalf("%s: not within %v", what, within)
			}
			write(50 * time.Millisecond)
		}
		return time.Since(start)
	}
	on := func(tr string) func() bool {
		return func() bool { last, _ := got.last(); return last == tr }
	}

	waitFor("records over gRPC", 5*time.Second, on("grpc"))
	gs.Stop() // the collector's gRPC listener goes away
	took := waitFor("failover to HTTPS", 10*time.Second, on("https"))
	t.Logf("moved to HTTPS %v after gRPC stopped", took)

	gs, _ = startGRPC(grpcAddr) // gRPC is back
	defer gs.Stop()
	back := waitFor("return to gRPC", probe+5*time.Second, on("grpc"))
	t.Logf("back on gRPC %v after it returned (probe interval %v)", back, probe)

	ship.Close(5 * time.Second)
	_, n := got.last()
	got.mu.Lock()
	dups := got.dups
	got.mu.Unlock()
	if n != written || dups != 0 {
		t.Fatalf("%d distinct records arrived of %d written, %d stored twice", n, written, dups)
	}
}
