package agent

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/flowlens/flowlens/exporter/config"
	"github.com/flowlens/flowlens/exporter/metrics"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/nettest"
)

// memSink keeps every record; while gate is held, Write blocks.
type memSink struct {
	mu   sync.Mutex
	recs []flow.Record
	gate sync.Mutex
}

func (m *memSink) Write(r *flow.Record) error {
	m.gate.Lock()
	m.gate.Unlock()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.recs = append(m.recs, *r)
	return nil
}
func (m *memSink) Flush() error { return nil }
func (m *memSink) snapshot() []flow.Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]flow.Record(nil), m.recs...)
}

func testConfig(t *testing.T, ns *nettest.Netns) config.Config {
	t.Helper()
	cfg, err := config.Load([]string{"--netns", ns.Path, "--flush-interval", "1s", "--metrics-addr", "",
		"--close-grace", "50ms", "--workload-name", "checkout", "--workload-namespace", "shop"})
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func start(t *testing.T, cfg config.Config, sink *memSink) (*Agent, *prometheus.Registry, context.CancelFunc) {
	t.Helper()
	nettest.RequirePrivileged(t)
	ctx, cancel := context.WithCancel(context.Background())
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, zaptest.NewLogger(t))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	a, err := Start(ctx, cfg, zaptest.NewLogger(t), m, reg, sink)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); a.Wait() })
	return a, reg, cancel
}

// pair opens one connection inside ns and returns both ends.
func pair(t *testing.T, ns *nettest.Netns) (client, server net.Conn) {
	t.Helper()
	var ln net.Listener
	var err error
	ns.Do(t, func() { ln, err = net.Listen("tcp", "127.0.0.1:0") })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ns.Do(t, func() { client, err = net.Dial("tcp", ln.Addr().String()) })
	if err != nil {
		t.Fatal(err)
	}
	if server, err = ln.Accept(); err != nil {
		t.Fatal(err)
	}
	return client, server
}

func forPort(recs []flow.Record, p int, role flow.Role) []flow.Record {
	var out []flow.Record
	for _, r := range recs {
		if r.Role == role && (int(r.LocalPort) == p || int(r.RemotePort) == p) {
			out = append(out, r)
		}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// TestInterimRecords: a connection open for more than two flush intervals is reported as ACTIVE every
// interval with growing cumulative counters, then once as final; every record carries the workload.
func TestInterimRecords(t *testing.T) {
	ns := nettest.NewNetns(t)
	sink := &memSink{}
	cfg := testConfig(t, ns)
	start(t, cfg, sink)

	c, s := pair(t, ns)
	go io.Copy(io.Discard, s)
	cport := c.LocalAddr().(*net.TCPAddr).Port
	const chunk, rounds = 1000, 14
	for range rounds { // 2.8 s: past two 1 s intervals
		c.Write(make([]byte, chunk))
		time.Sleep(200 * time.Millisecond)
	}
	c.Close()
	waitFor(t, "final client record", func() bool {
		recs := forPort(sink.snapshot(), cport, flow.RoleClient)
		return len(recs) > 0 && recs[len(recs)-1].Close != flow.CloseActive
	})

	recs := forPort(sink.snapshot(), cport, flow.RoleClient)
	var active []flow.Record
	for _, r := range recs[:len(recs)-1] {
		if r.Close != flow.CloseActive {
			t.Fatalf("a final record before the last: %+v", r)
		}
		active = append(active, r)
	}
	if len(active) < 2 {
		t.Fatalf("%d interim records, want at least 2", len(active))
	}
	for i := 1; i < len(active); i++ {
		if active[i].BytesSent <= active[i-1].BytesSent || active[i].EndTime <= active[i-1].EndTime {
			t.Errorf("interim %d: bytes %d at %d after %d at %d: want growth", i, active[i].BytesSent, active[i].EndTime, active[i-1].BytesSent, active[i-1].EndTime)
		}
		if active[i].StartTime != active[0].StartTime {
			t.Errorf("interim %d: start time changed", i)
		}
	}
	final := recs[len(recs)-1]
	if final.Close != flow.CloseNormal || final.BytesSent != chunk*rounds || final.StartTime != active[0].StartTime {
		t.Errorf("final %+v: want NORMAL, %d bytes, the interim records' start", final, chunk*rounds)
	}
	for _, r := range recs {
		if r.LocalWorkload.Name != "checkout" || r.LocalWorkload.Namespace != "shop" || r.LocalWorkload.Node == "" {
			t.Errorf("workload %+v", r.LocalWorkload)
		}
	}
}

// TestShutdownFlushesOpenConnections: stopping the exporter reports every open connection as ACTIVE.
func TestShutdownFlushesOpenConnections(t *testing.T) {
	ns := nettest.NewNetns(t)
	sink := &memSink{}
	cfg := testConfig(t, ns)
	cfg.FlushInterval = time.Hour
	a, _, cancel := start(t, cfg, sink)

	c, s := pair(t, ns)
	defer c.Close()
	defer s.Close()
	c.Write(make([]byte, 123))
	io.ReadFull(s, make([]byte, 123))
	cport := c.LocalAddr().(*net.TCPAddr).Port

	cancel()
	if err := a.Wait(); err != nil {
		t.Fatal(err)
	}
	recs := sink.snapshot()
	cl, sv := forPort(recs, cport, flow.RoleClient), forPort(recs, cport, flow.RoleServer)
	if len(cl) != 1 || len(sv) != 1 || cl[0].Close != flow.CloseActive || sv[0].Close != flow.CloseActive {
		t.Fatalf("after shutdown: client %+v server %+v, want one ACTIVE record each", cl, sv)
	}
	if cl[0].BytesSent != 123 || sv[0].BytesReceived != 123 {
		t.Errorf("bytes client sent %d server received %d, want 123", cl[0].BytesSent, sv[0].BytesReceived)
	}
}

// TestQueueDropsExact: when the output stalls, the reader keeps going: every record is either queued
// within the record budget or dropped and counted, and exactly the queued ones arrive once it resumes.
func TestQueueDropsExact(t *testing.T) {
	ns := nettest.NewNetns(t)
	sink := &memSink{}
	cfg := testConfig(t, ns)
	cfg.QueueRecords = 4
	sink.gate.Lock() // the output is stuck
	_, reg, _ := start(t, cfg, sink)
	release := sync.OnceFunc(sink.gate.Unlock)
	t.Cleanup(release) // runs before the agent's cleanup, so a failed test cannot leave shutdown stuck

	const n = 20
	for range n {
		c, s := pair(t, ns)
		c.Close()
		s.Close()
	}
	emitted := func() float64 {
		var sum float64
		for _, c := range []string{"NORMAL", "RESET_SENT", "RESET_RECEIVED"} {
			sum += testutil.ToFloat64(mustVec(t, reg, "flowlens_exporter_records_emitted_total", "close", c))
		}
		return sum
	}
	dropped := func() float64 {
		return testutil.ToFloat64(mustVec(t, reg, "flowlens_exporter_drops_total", "stage", "queue"))
	}
	// All of it is accounted for while the output is still stuck: the reader did not wait for it.
	waitFor(t, "every record queued or dropped", func() bool { return emitted()+dropped() == 2*n })
	if e := emitted(); e > float64(cfg.QueueRecords) || dropped() == 0 {
		t.Fatalf("queued %v (budget %d), dropped %v, with the output stuck", e, cfg.QueueRecords, dropped())
	}
	release()
	waitFor(t, "the queue to drain", func() bool { return float64(len(sink.snapshot())) == emitted() })
	time.Sleep(100 * time.Millisecond)
	if got := len(sink.snapshot()); float64(got) != emitted() {
		t.Errorf("delivered %d, want exactly the %v queued", got, emitted())
	}
}

// mustVec finds the one series of family name whose label key has value val.
func mustVec(t *testing.T, g prometheus.Gatherer, name, key, val string) prometheus.Collector {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	v := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == key && l.GetValue() == val {
					v += m.GetCounter().GetValue()
				}
			}
		}
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	c.Add(v)
	return c
}
