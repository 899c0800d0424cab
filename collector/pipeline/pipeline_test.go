package pipeline

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/ingest"
	"github.com/flowlens/flowlens/collector/store"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

// recorder is the real store with a record of every committed write, so tests can see what the
// pipeline decided and when.
type recorder struct {
	*store.Store
	mu      sync.Mutex
	flows   []flow.Enriched
	gate    chan struct{} // when set, each Write waits for a token
	waiting atomic.Int32  // Writes waiting for a token
	sizes   []int         // flows of each committed write
	failed  int
	fail    bool
}

func (r *recorder) Write(ctx context.Context, w store.Write) error {
	if r.gate != nil {
		r.waiting.Add(1)
		<-r.gate
		r.waiting.Add(-1)
	}
	r.mu.Lock()
	fail := r.fail
	r.mu.Unlock()
	if fail {
		r.mu.Lock()
		r.failed++
		r.mu.Unlock()
		return errors.New("disk on fire")
	}
	if err := r.Store.Write(ctx, w); err != nil {
		return err
	}
	r.mu.Lock()
	r.flows = append(r.flows, w.Flows...)
	r.sizes = append(r.sizes, len(w.Flows))
	r.mu.Unlock()
	return nil
}

func (r *recorder) stored() []flow.Enriched {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]flow.Enriched(nil), r.flows...)
}

var (
	alpha = flow.Workload{Name: "alpha", Namespace: "shop", Pod: "alpha-1", Cluster: "c1"}
	beta  = flow.Workload{Name: "beta", Namespace: "shop", Pod: "beta-1", Cluster: "c1"}
	gamma = flow.Workload{Name: "gamma", Namespace: "ops", Pod: "gamma-1", Cluster: "c1"}
	ipA   = netip.MustParseAddr("10.0.0.1")
	ipB   = netip.MustParseAddr("10.0.0.2")
)

type env struct {
	p     *Pipeline
	rec   *recorder
	idx   *index.Index
	reg   *prometheus.Registry
	dir   string
	stop  context.CancelFunc
	clock *clock
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

func start(t *testing.T, dir string, cfg Config, gate chan struct{}) *env {
	t.Helper()
	st, err := store.Open(store.Config{Path: filepath.Join(dir, "flows.duckdb")}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{Store: st, gate: gate}
	idx := index.New(index.Config{MergeGap: time.Second})
	reg := prometheus.NewRegistry()
	if cfg.Retry == 0 {
		cfg.Retry = 5 * time.Millisecond
	}
	p := New(cfg, idx, rec, nil, nil, zap.NewNop(), reg)
	clk := &clock{now: time.Unix(1_800_000_000, 0)}
	p.now = clk.Now
	pending, err := st.Pending(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	p.Restore(pending)
	ctx, cancel := context.WithCancel(context.Background())
	go p.Run(ctx)
	e := &env{p: p, rec: rec, idx: idx, reg: reg, dir: dir, clock: clk}
	e.stop = func() {
		cancel()
		<-p.Done()
		st.Close()
	}
	t.Cleanup(func() {
		select {
		case <-p.Done():
		default:
			e.stop()
		}
	})
	return e
}

// conn is one side of a connection between a and b, as its exporter reports it.
func conn(local flow.Workload, l, r netip.Addr, lport, rport uint16, role flow.Role, start int64) flow.Record {
	return flow.Record{LocalAddr: l, RemoteAddr: r, LocalPort: lport, RemotePort: rport, Role: role,
		StartTime: start, EndTime: start + 1e9, BytesSent: 100, BytesReceived: 200, Close: flow.CloseNormal,
		LocalWorkload: local}
}

func waitFor(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func find(flows []flow.Enriched, exporter string) (flow.Enriched, bool) {
	for _, f := range flows {
		if f.ExporterID == exporter {
			return f, true
		}
	}
	return flow.Enriched{}, false
}

// The client's record arrives before the server's exporter has said anything: it waits, and is decided
// by the server's heartbeat when that arrives. The server's record finds the client at once.
func TestAttributionWaitsForTheHeartbeat(t *testing.T) {
	e := start(t, t.TempDir(), Config{Deadline: time.Hour}, nil)
	t0 := e.clock.Now().UnixNano()
	ctx := context.Background()
	if err := e.p.Put(ctx, &ingest.Batch{ExporterID: "a", Seq: 1, Records: []flow.Record{conn(alpha, ipA, ipB, 40000, 80, flow.RoleClient, t0)}}); err != nil {
		t.Fatal(err)
	}
	if got := e.rec.stored(); len(got) != 0 {
		t.Fatalf("stored before any owner was known: %+v", got)
	}
	if st := e.p.Stats(); st.Parked != 1 {
		t.Fatalf("parked %d, want 1", st.Parked)
	}
	if err := e.p.Put(ctx, &ingest.Batch{ExporterID: "b", Seq: 1, Records: []flow.Record{conn(beta, ipB, ipA, 80, 40000, flow.RoleServer, t0)}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both records stored", func() bool { return len(e.rec.stored()) == 2 })
	got := e.rec.stored()
	a, _ := find(got, "a")
	b, _ := find(got, "b")
	if a.RemoteWorkload != beta || a.Attribution != flow.AttributionHeartbeat {
		t.Errorf("client record: remote %+v by %v, want beta by HEARTBEAT", a.RemoteWorkload, a.Attribution)
	}
	if b.RemoteWorkload != alpha || b.Attribution != flow.AttributionHeartbeat {
		t.Errorf("server record: remote %+v by %v, want alpha by HEARTBEAT", b.RemoteWorkload, b.Attribution)
	}
	if n := testutil.ToFloat64(e.p.m.attributed[flow.AttributionHeartbeat]); n != 2 {
		t.Errorf("attributed_records_total{HEARTBEAT} = %v, want 2", n)
	}
	pend, err := e.rec.Store.Pending(ctx)
	if err != nil || len(pend) != 0 {
		t.Errorf("pending after resolution: %v %v", pend, err)
	}
}

// With no owner by the deadline the flow is stored UNATTRIBUTED; a pod event alone is not taken before
// the deadline, and a heartbeat arriving meanwhile outranks it: no misattribution from a stale event.
func TestDeadlineAndEventsNeverOutrankHeartbeats(t *testing.T) {
	e := start(t, t.TempDir(), Config{Deadline: 10 * time.Second}, nil)
	t0 := e.clock.Now().UnixNano()
	ctx := context.Background()
	ipC := netip.MustParseAddr("10.0.0.3")
	// A stale pod event says gamma has 10.0.0.2; beta really has it and says so a little later.
	e.idx.Add(index.Claim{IP: ipB, Start: t0 - 60e9, End: t0 + 60e9, Owner: gamma, Evidence: index.EvidencePodEvent})
	must(t, e.p.Put(ctx, &ingest.Batch{ExporterID: "a", Seq: 1, Records: []flow.Record{
		conn(alpha, ipA, ipB, 40001, 80, flow.RoleClient, t0),
		conn(alpha, ipA, ipC, 40002, 80, flow.RoleClient, t0), // nobody ever owns 10.0.0.3
	}}))
	time.Sleep(50 * time.Millisecond) // several retry rounds: nothing may be decided yet
	if got := e.rec.stored(); len(got) != 0 {
		t.Fatalf("decided before the deadline on a pod event: %+v", got)
	}
	must(t, e.p.Put(ctx, &ingest.Batch{ExporterID: "b", Seq: 7, Records: []flow.Record{conn(beta, ipB, netip.MustParseAddr("10.9.9.9"), 80, 1, flow.RoleServer, t0)}}))
	waitFor(t, "the flow to beta", func() bool { return len(e.rec.stored()) == 1 })
	if f := e.rec.stored()[0]; f.RemoteWorkload != beta || f.Attribution != flow.AttributionHeartbeat || f.RemoteAddr != ipB {
		t.Fatalf("got %+v by %v to %v, want beta by HEARTBEAT", f.RemoteWorkload, f.Attribution, f.RemoteAddr)
	}
	e.clock.Add(11 * time.Second)
	waitFor(t, "the deadline", func() bool { return len(e.rec.stored()) == 3 })
	for _, f := range e.rec.stored()[1:] {
		switch f.RemoteAddr {
		case ipC:
			if f.Attribution != flow.AttributionUnattributed || f.RemoteWorkload != (flow.Workload{}) {
				t.Errorf("10.0.0.3: %+v by %v, want UNATTRIBUTED", f.RemoteWorkload, f.Attribution)
			}
		default: // beta's own record, to an address nobody owns
			if f.Attribution != flow.AttributionUnattributed {
				t.Errorf("%v: %v, want UNATTRIBUTED", f.RemoteAddr, f.Attribution)
			}
		}
	}
}

// Parked records survive a restart and are decided by the next run.
func TestParkedRecordsSurviveRestart(t *testing.T) {
	dir := t.TempDir()
	e := start(t, dir, Config{Deadline: time.Hour}, nil)
	t0 := e.clock.Now().UnixNano()
	ctx := context.Background()
	must(t, e.p.Put(ctx, &ingest.Batch{ExporterID: "a", Seq: 1, Records: []flow.Record{conn(alpha, ipA, ipB, 40000, 80, flow.RoleClient, t0)}}))
	e.stop()

	e2 := start(t, dir, Config{Deadline: time.Hour}, nil)
	if st := e2.p.Stats(); st.Parked != 1 {
		t.Fatalf("parked after restart: %d, want 1", st.Parked)
	}
	must(t, e2.p.Put(ctx, &ingest.Batch{ExporterID: "b", Seq: 1, Records: []flow.Record{conn(beta, ipB, ipA, 80, 40000, flow.RoleServer, t0)}}))
	waitFor(t, "both stored", func() bool { return len(e2.rec.stored()) == 2 })
	// The restored record counts in when restored and out when decided: in - out is what is parked.
	waitFor(t, "the restored record counted out", func() bool { return testutil.ToFloat64(e2.p.m.parkedOut) == 1 })
	if in := testutil.ToFloat64(e2.p.m.parkedIn); in != 1 {
		t.Errorf("parked_records_total{in} %v after restart, want 1 (the restored record)", in)
	}
	a, _ := find(e2.rec.stored(), "a")
	b, _ := find(e2.rec.stored(), "b")
	if a.RemoteWorkload != beta || b.RemoteWorkload != alpha {
		t.Fatalf("after restart: a→%+v b→%+v", a.RemoteWorkload, b.RemoteWorkload)
	}
	if keys, err := e2.rec.Store.RecentBatches(ctx, time.Unix(0, 0)); err != nil || len(keys) != 2 {
		t.Fatalf("batch keys %v %v, want a/1 and b/1", keys, err)
	}
}

// Beyond the write queue's budget Put answers ErrFull at once, counts the records, and keeps nothing of
// the batch; once the store catches up it takes batches again. Memory stays within the budget.
func TestBackpressure(t *testing.T) {
	gate := make(chan struct{})
	e := start(t, t.TempDir(), Config{Deadline: time.Hour, QueueRecords: 10}, gate)
	t0 := e.clock.Now().UnixNano()
	ctx := context.Background()
	batch := func(seq uint64, n int) *ingest.Batch {
		b := &ingest.Batch{ExporterID: "b", Seq: seq}
		for i := range n {
			b.Records = append(b.Records, conn(beta, ipB, ipA, 80, uint16(1000+i), flow.RoleServer, t0))
		}
		return b
	}
	e.idx.Add(index.Claim{IP: ipA, Start: t0 - 1e9, End: t0 + 10e9, Owner: alpha, Evidence: index.EvidenceHeartbeat})
	errs := make(chan error, 2)
	go func() { errs <- e.p.Put(ctx, batch(1, 6)) }()
	waitFor(t, "the first batch queued", func() bool { return e.p.Stats().Queued == 6 })
	go func() { errs <- e.p.Put(ctx, batch(2, 4)) }()
	waitFor(t, "the second batch queued", func() bool { return e.p.Stats().Queued == 10 })
	for i := range 5 {
		if err := e.p.Put(ctx, batch(uint64(3+i), 1)); !errors.Is(err, ingest.ErrFull) {
			t.Fatalf("put beyond the budget: %v, want ErrFull", err)
		}
	}
	if n := testutil.ToFloat64(e.p.m.rejected); n != 5 {
		t.Fatalf("rejected records %v, want 5", n)
	}
	close(gate) // the store catches up
	for range 2 {
		must(t, <-errs)
	}
	must(t, e.p.Put(ctx, batch(9, 3)))
	if got := len(e.rec.stored()); got != 13 {
		t.Fatalf("stored %d, want 13 (6+4+3)", got)
	}
	if st := e.p.Stats(); st.Queued != 0 {
		t.Fatalf("queued %d after the store caught up", st.Queued)
	}
}

// A failed commit is reported to every batch in it (the exporters resend), and the pipeline goes on.
func TestStoreFailureIsReported(t *testing.T) {
	e := start(t, t.TempDir(), Config{Deadline: time.Hour}, nil)
	t0 := e.clock.Now().UnixNano()
	e.idx.Add(index.Claim{IP: ipA, Start: t0 - 1e9, End: t0 + 10e9, Owner: alpha, Evidence: index.EvidenceHeartbeat})
	e.rec.mu.Lock()
	e.rec.fail = true
	e.rec.mu.Unlock()
	b := &ingest.Batch{ExporterID: "b", Seq: 1, Records: []flow.Record{conn(beta, ipB, ipA, 80, 1, flow.RoleServer, t0)}}
	if err := e.p.Put(context.Background(), b); err == nil {
		t.Fatal("put succeeded with a failing store")
	}
	e.rec.mu.Lock()
	e.rec.fail = false
	e.rec.mu.Unlock()
	must(t, e.p.Put(context.Background(), b))
	if got := e.rec.stored(); len(got) != 1 || got[0].RemoteWorkload != alpha {
		t.Fatalf("stored %+v", got)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
