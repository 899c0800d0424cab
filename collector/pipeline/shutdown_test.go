package pipeline

import (
	"context"
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
