package shipper_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc"

	"github.com/flowlens/flowlens/collector/ingest"
	"github.com/flowlens/flowlens/exporter/agent"
	"github.com/flowlens/flowlens/exporter/config"
	"github.com/flowlens/flowlens/exporter/metrics"
	"github.com/flowlens/flowlens/exporter/shipper"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/nettest"
)

type received struct {
	mu       sync.Mutex
	recs     []flow.Record
	exporter string // the id of the last batch's exporter
}

func (r *received) Put(_ context.Context, b *ingest.Batch) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recs = append(r.recs, b.Records...)
	r.exporter = b.ExporterID
	return nil
}

func (r *received) forPort(p int) []flow.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []flow.Record
	for _, x := range r.recs {
		if int(x.LocalPort) == p || int(x.RemotePort) == p {
			out = append(out, x)
		}
	}
	return out
}

// TestCaptureToCollector: connections made in a namespace are captured by the real programs, shipped over
// gRPC and arrive at the collector's ingest with their exact byte counts and the workload.
func TestCaptureToCollector(t *testing.T) {
	nettest.RequirePrivileged(t)
	ns := nettest.NewNetns(t)

	// The collector: a real gRPC ingest server on loopback.
	got := &received{}
	addr := serveIngest(t, "127.0.0.1:0", got)

	ship, cfg, m := newShipper(t, "--netns", ns.Path, "--metrics-addr", "", "--close-grace", "50ms",
		"--output", "collector", "--collector-grpc-addr", addr, "--collector-insecure",
		"--workload-name", "checkout", "--workload-namespace", "shop")
	ctx, cancel := context.WithCancel(context.Background())
	a, err := agent.Start(ctx, cfg, zaptest.NewLogger(t), m, prometheus.NewRegistry(), ship)
	if err != nil {
		t.Fatal(err)
	}

	var sln net.Listener
	ns.Do(t, func() { sln, err = net.Listen("tcp", "127.0.0.1:0") })
	if err != nil {
		t.Fatal(err)
	}
	defer sln.Close()
	nettest.Serve(sln, func(c net.Conn) { io.Copy(c, c); c.Close() })
	var c net.Conn
	ns.Do(t, func() { c, err = net.Dial("tcp", sln.Addr().String()) })
	if err != nil {
		t.Fatal(err)
	}
	c.Write(make([]byte, 3000))
	io.ReadFull(c, make([]byte, 3000))
	c.Close()
	sport := sln.Addr().(*net.TCPAddr).Port

	deadline := time.Now().Add(10 * time.Second)
	for len(got.forPort(sport)) < 2 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	a.Wait()
	ship.Close(5 * time.Second)

	recs := got.forPort(sport)
	if len(recs) != 2 {
		t.Fatalf("collector got %d records for the connection, want 2: %+v", len(recs), recs)
	}
	for _, r := range recs {
		if r.BytesSent != 3000 || r.BytesReceived != 3000 || r.Close != flow.CloseNormal {
			t.Errorf("%s: sent %d received %d close %s, want 3000 3000 NORMAL", r.Role, r.BytesSent, r.BytesReceived, r.Close)
		}
		if r.LocalWorkload.Name != "checkout" || r.LocalWorkload.Namespace != "shop" {
			t.Errorf("%s: workload %+v", r.Role, r.LocalWorkload)
		}
	}
}

// TestCollectorDownLongerThanTheBuffer: while the collector is away the shipper holds at most its budget;
// when it returns, every record either arrived or is in the drop counter, exactly.
func TestCollectorDownLongerThanTheBuffer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nobody listens: the collector is down

	ship, _, m := newShipper(t, "--output", "collector", "--collector-grpc-addr", addr, "--collector-insecure",
		"--batch-records", "10", "--buffer-batches", "20", "--send-timeout", "500ms", "--probe-interval", "100ms")
	const n = 1000 // 100 batches for a buffer of 20
	for i := range n {
		r := flow.Record{StartTime: int64(i + 1), EndTime: int64(i + 2), Close: flow.CloseNormal}
		r.LocalAddr, r.RemoteAddr = loopback, loopback
		ship.Write(&r)
	}
	ship.Flush()
	dropped := func() float64 {
		return testutil.ToFloat64(m.Drops.WithLabelValues("transport", "buffer_full"))
	}
	if d := dropped(); d < n-20*10 {
		t.Fatalf("dropped %v records with the collector down, want at least %d (the budget is 200)", d, n-200)
	}

	// The collector comes back on the same address.
	got := &received{}
	serveIngest(t, addr, got)
	if err := ship.Close(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	got.mu.Lock()
	arrived := len(got.recs)
	got.mu.Unlock()
	left := testutil.ToFloat64(m.Drops.WithLabelValues("transport", "shutdown"))
	if float64(arrived)+dropped()+left != n || left != 0 {
		t.Fatalf("arrived %d + dropped %v + left at shutdown %v, want %d with nothing left", arrived, dropped(), left, n)
	}
}

var loopback = netip.MustParseAddr("127.0.0.1")

// newShipper loads the exporter's configuration from args and makes a shipper with metrics of its own.
func newShipper(t *testing.T, args ...string) (*shipper.Shipper, config.Config, *metrics.Metrics) {
	t.Helper()
	cfg, err := config.Load(args)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ship, err := shipper.New(cfg.Collector, cfg.Workload, m.Drops, reg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return ship, cfg, m
}

// serveIngest runs a real gRPC ingest server on addr that stores into sink, until the test ends, and
// returns its address.
func serveIngest(t *testing.T, addr string, sink ingest.Sink, opts ...grpc.ServerOption) string {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := ingest.NewGRPCServer(&ingest.Handler{Sink: sink, Dedup: ingest.NewDedup(100),
		Metrics: ingest.NewMetrics(prometheus.NewRegistry()), Log: zaptest.NewLogger(t)}, opts...)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}
