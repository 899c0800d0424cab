package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/ingest"
	"github.com/flowlens/flowlens/collector/store"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/wire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
	"github.com/flowlens/flowlens/sonar/index"
)

// slowIndex is the index behind a slow remote sonar: once armed, lookups of one address wait until
// released. It lets a test hold a Put in prepare, or the retry loop in decide, for as long as it needs.
type slowIndex struct {
	*index.Index
	mu      sync.Mutex
	block   netip.Addr
	entered chan struct{} // a lookup of block has started
	release chan struct{} // closed: lookups of block go on
}

func newSlowIndex() *slowIndex {
	return &slowIndex{Index: index.New(index.Config{MergeGap: time.Second}), entered: make(chan struct{}, 1), release: make(chan struct{})}
}

func (s *slowIndex) arm(ip netip.Addr) {
	s.mu.Lock()
	s.block = ip
	s.mu.Unlock()
}

func (s *slowIndex) Lookup(ip netip.Addr, t int64) index.Answer {
	s.mu.Lock()
	blocked := ip == s.block
	s.mu.Unlock()
	if blocked {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		<-s.release
	}
	return s.Index.Lookup(ip, t)
}

func openStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "flows.duckdb")}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// returned waits (bounded, so a deadlock fails the test instead of hanging it) for Run to return.
func returned(t *testing.T, p *Pipeline, what string) {
	t.Helper()
	select {
	case <-p.Done():
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: Run did not return (deadlock)", what)
	}
}

// A Put whose context ends after its batch reached the writer is answered with the write's outcome, not
// with ctx.Err(): the handler releases the batch's dedup claim on an error, so the exporter's resend would
// be stored a second time once the first write commits (a final record is appended, never merged).
func TestCancelledPutIsAnsweredWithItsWrite(t *testing.T) {
	gate := make(chan struct{})
	e := start(t, t.TempDir(), Config{Deadline: time.Hour}, gate)
	t0 := e.clock.Now().UnixNano()
	e.idx.Add(index.Claim{IP: ipA, Start: t0 - 1e9, End: t0 + 10e9, Owner: alpha, Evidence: index.EvidenceHeartbeat})
	h := &ingest.Handler{Sink: e.p, Dedup: ingest.NewDedup(10), Metrics: ingest.NewMetrics(prometheus.NewRegistry()), Log: zap.NewNop()}
	b := wire.NewBatch("b", 1, t0, flow.Workload{}, []flow.Record{conn(beta, ipB, ipA, 80, 1, flow.RoleServer, t0)})

	ctx, cancel := context.WithCancel(context.Background())
	acks := make(chan *flowv1.BatchAck, 1)
	go func() { acks <- h.Handle(ctx, "grpc", b) }()
	waitFor(t, "the batch's write to reach the store", func() bool { return e.rec.waiting.Load() == 1 })
	cancel() // the exporter's stream ends while the store commits
	gate <- struct{}{}
	if ack := <-acks; ack.Status != flowv1.AckStatus_ACK_STATUS_STORED {
		t.Errorf("first send answered %v %q, want STORED (it was committed)", ack.Status, ack.Message)
	}
	close(gate)
	if ack := h.Handle(context.Background(), "grpc", b); ack.Status != flowv1.AckStatus_ACK_STATUS_DUPLICATE {
		t.Errorf("resend answered %v, want DUPLICATE", ack.Status)
	}
	if got := len(e.rec.stored()); got != 1 {
		t.Fatalf("the batch's one record stored %d times, want once", got)
	}
}

// A retry request handed to the writer just as Run's context ends is written or left parked, and Run
// returns: with a buffered hand-over the retry loop waited for an answer the writer never gave, and Run
// waited for the retry loop. The race is lost about one time in two, so it is run many times.
func TestShutdownWithARetryInHand(t *testing.T) {
	st := openStore(t)
	for i := range 20 {
		gate := make(chan struct{})
		rec := &recorder{Store: st, gate: gate}
		idx := index.New(index.Config{MergeGap: time.Second})
		p := New(Config{Deadline: time.Hour, Retry: time.Millisecond}, idx, rec, nil, nil, zap.NewNop(), prometheus.NewRegistry())
		ctx, cancel := context.WithCancel(context.Background())
		go p.Run(ctx)
		t0 := time.Now().UnixNano()
		a, b := fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)
		errs := make(chan error, 2)
		// a's record waits for 10.0.0.2's owner ...
		go func() {
			errs <- p.Put(context.Background(), &ingest.Batch{ExporterID: a, Seq: 1, Records: []flow.Record{conn(alpha, ipA, ipB, 40000, 80, flow.RoleClient, t0)}})
		}()
		gate <- struct{}{}
		must(t, <-errs)
		// ... which b's batch names; its write waits in the store while the retry loop decides a's record.
		go func() {
			errs <- p.Put(context.Background(), &ingest.Batch{ExporterID: b, Seq: 1, Records: []flow.Record{conn(beta, ipB, ipA, 80, 40000, flow.RoleServer, t0)}})
		}()
		waitFor(t, "a's record decided", func() bool { return p.Stats().Parked == 0 })
		cancel()
		close(gate)
		returned(t, p, fmt.Sprintf("round %d", i))
		must(t, <-errs)
		got := rec.stored()
		if _, ok := find(got, b); !ok {
			t.Fatalf("round %d: b's record not stored", i)
		}
		_, stored := find(got, a)
		if parked := p.Stats().Parked; stored == (parked == 1) {
			t.Fatalf("round %d: a's record stored %v and parked %d: want exactly one of them", i, stored, parked)
		}
	}
}

// A Put that passed the stop check before Run's context ended, and sends its batch after the drain, is
// answered ErrStopped: it never waits for a writer that is gone. The race is lost about one time in two.
func TestPutRacingTheStopIsRefused(t *testing.T) {
	st := openStore(t)
	for i := range 20 {
		idx := newSlowIndex()
		p := New(Config{Deadline: time.Hour}, idx, &recorder{Store: st}, nil, nil, zap.NewNop(), prometheus.NewRegistry())
		ctx, cancel := context.WithCancel(context.Background())
		go p.Run(ctx)
		idx.arm(ipB)
		errs := make(chan error, 1)
		go func() {
			errs <- p.Put(context.Background(), &ingest.Batch{ExporterID: fmt.Sprint(i), Seq: 1,
				Records: []flow.Record{conn(alpha, ipA, ipB, 40000, 80, flow.RoleClient, time.Now().UnixNano())}})
		}()
		<-idx.entered // the Put is attributing its batch: past the stop check
		cancel()
		returned(t, p, fmt.Sprintf("round %d", i))
		close(idx.release)
		select {
		case err := <-errs:
			if !errors.Is(err, ErrStopped) {
				t.Fatalf("round %d: Put after the stop answered %v, want ErrStopped", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("round %d: Put sent after the drain and waits forever", i)
		}
		if q := p.Stats().Queued; q != 0 {
			t.Fatalf("round %d: %d records still counted as queued", i, q)
		}
	}
}

// The retry loop looks parked records up without holding the lock Put needs: with a remote sonar each
// lookup is a network call, and a pass over many parked records must not stop ingestion.
func TestSlowLookupsDoNotBlockPut(t *testing.T) {
	idx := newSlowIndex()
	p := New(Config{Deadline: time.Hour, Retry: time.Millisecond}, idx, &recorder{Store: openStore(t)}, nil, nil, zap.NewNop(), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	go p.Run(ctx)
	defer func() { cancel(); returned(t, p, "stop") }()
	defer close(idx.release)
	t0 := time.Now().UnixNano()
	ipC := netip.MustParseAddr("10.0.0.3")
	must(t, p.Put(context.Background(), &ingest.Batch{ExporterID: "a", Seq: 1, Records: []flow.Record{conn(alpha, ipA, ipC, 40000, 80, flow.RoleClient, t0)}}))
	idx.arm(ipC)
	<-idx.entered // the retry loop is looking a's parked record up, slowly
	idx.Add(index.Claim{IP: ipA, Start: t0 - 1e9, End: t0 + 10e9, Owner: alpha, Evidence: index.EvidenceHeartbeat})
	errs := make(chan error, 1)
	go func() {
		errs <- p.Put(context.Background(), &ingest.Batch{ExporterID: "b", Seq: 1, Records: []flow.Record{conn(beta, ipB, ipA, 80, 40000, flow.RoleServer, t0)}})
	}()
	select {
	case err := <-errs:
		must(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Put waits for the retry loop's lookups")
	}
	if st := p.Stats(); st.Parked != 1 {
		t.Fatalf("parked %d during the lookups, want 1", st.Parked)
	}
}

// The datagrams of one UDP batch share its sequence number and number their records from 0 each: when
// a parked record of one is resolved, the other's parked record must stay in the store's pending table,
// or a restart loses it. After a restart, new records park under numbers above the restored ones.
func TestPartsOfOneBatchParkUnderTheirOwnKeys(t *testing.T) {
	dir := t.TempDir()
	e := start(t, dir, Config{Deadline: time.Hour}, nil)
	t0 := e.clock.Now().UnixNano()
	ctx := context.Background()
	ipC, ipD := netip.MustParseAddr("10.0.0.3"), netip.MustParseAddr("10.0.0.4")
	part := func(p *Pipeline, remote netip.Addr) {
		t.Helper()
		must(t, p.Put(ctx, &ingest.Batch{ExporterID: "a", Seq: 1, Transport: "udp",
			Records: []flow.Record{conn(alpha, ipA, remote, 40000, 80, flow.RoleClient, t0)}}))
	}
	part(e.p, ipC) // two datagrams of batch a/1, one record each
	part(e.p, ipB)
	must(t, e.p.Put(ctx, &ingest.Batch{ExporterID: "b", Seq: 1, Records: []flow.Record{conn(beta, ipB, ipA, 80, 40000, flow.RoleServer, t0)}}))
	// Decided is not enough before the stop: its write (which takes it out of the pending table) must
	// have committed, else the restart finds it parked again. Stored: beta's record and the one to beta.
	waitFor(t, "the record to beta stored", func() bool { return e.p.Stats().Parked == 1 && len(e.rec.stored()) == 2 })
	e.stop()

	e2 := start(t, dir, Config{Deadline: time.Hour}, nil)
	if st := e2.p.Stats(); st.Parked != 1 {
		t.Fatalf("parked after restart: %d, want 1 (the record to 10.0.0.3)", st.Parked)
	}
	part(e2.p, ipD) // a late datagram of a/1, decided at once by gamma's heartbeat
	must(t, e2.p.Put(ctx, &ingest.Batch{ExporterID: "d", Seq: 1, Records: []flow.Record{conn(gamma, ipD, ipA, 80, 40000, flow.RoleServer, t0)}}))
	waitFor(t, "the record to gamma decided", func() bool { return len(e2.rec.stored()) == 2 })
	if pend, err := e2.rec.Store.Pending(ctx); err != nil || len(pend) != 1 || pend[0].Flow.RemoteAddr != ipC {
		t.Fatalf("pending %+v %v, want the record to 10.0.0.3 only", pend, err)
	}
	e2.clock.Add(2 * time.Hour)
	waitFor(t, "the deadline", func() bool { return len(e2.rec.stored()) == 3 })
	if f := e2.rec.stored()[2]; f.RemoteAddr != ipC || f.Attribution != flow.AttributionUnattributed {
		t.Fatalf("stored %v by %v, want 10.0.0.3 UNATTRIBUTED", f.RemoteAddr, f.Attribution)
	}
}

// Records decided together (here all at their deadline) are stored in writes of at most WriteRecords,
// as ingest batches are: one write of every parked record could not commit within a write's bound.
func TestDecidedRecordsAreWrittenInBoundedWrites(t *testing.T) {
	e := start(t, t.TempDir(), Config{Deadline: 10 * time.Second, WriteRecords: 3}, nil)
	t0 := e.clock.Now().UnixNano()
	b := &ingest.Batch{ExporterID: "a", Seq: 1}
	for i := range 8 {
		b.Records = append(b.Records, conn(alpha, ipA, netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}), uint16(40000+i), 80, flow.RoleClient, t0))
	}
	must(t, e.p.Put(context.Background(), b))
	if st := e.p.Stats(); st.Parked != 8 {
		t.Fatalf("parked %d, want 8", st.Parked)
	}
	e.clock.Add(11 * time.Second)
	waitFor(t, "the deadline", func() bool { return len(e.rec.stored()) == 8 })
	e.rec.mu.Lock()
	sizes := append([]int(nil), e.rec.sizes...)
	e.rec.mu.Unlock()
	for _, n := range sizes {
		if n > 3 {
			t.Fatalf("writes of %v flows, want at most 3 each", sizes)
		}
	}
	if pend, err := e.rec.Store.Pending(context.Background()); err != nil || len(pend) != 0 {
		t.Fatalf("pending %d %v after the deadline, want none", len(pend), err)
	}
	if st := e.p.Stats(); st.Parked != 0 {
		t.Fatalf("parked %d, want 0", st.Parked)
	}
}
