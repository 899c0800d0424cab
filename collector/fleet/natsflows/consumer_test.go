package natsflows

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/fleet/fleettest"
	"github.com/flowlens/flowlens/collector/store"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/natstest"
)

// storedKeys is every flow in st, as exporter/ports/start strings, sorted.
func storedKeys(t *testing.T, st *store.Store) []string {
	t.Helper()
	page, err := st.Flows(context.Background(), store.FlowQuery{From: 0, To: math.MaxInt64, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range page.Flows {
		out = append(out, key(&f))
	}
	slices.Sort(out)
	return out
}

func key(f *flow.Enriched) string {
	return strings.Join([]string{f.ExporterID, f.LocalAddr.String(), f.RemoteAddr.String(),
		time.Unix(0, f.StartTime).UTC().Format(time.RFC3339Nano), f.LocalWorkload.Name, f.RemoteWorkload.Name}, "|")
}

func keysOf(recs ...[]flow.Enriched) []string {
	var out []string
	for _, rs := range recs {
		for i := range rs {
			out = append(out, key(&rs[i]))
		}
	}
	slices.Sort(out)
	return out
}

// runConsumer runs a consumer of replica origin into st until the returned stop is called.
func runConsumer(t *testing.T, srv *natstest.Server, st *store.Store, origin string) (*Consumer, func()) {
	t.Helper()
	return runConsumerOn(t, srv, st, origin)
}

func runConsumerOn(t *testing.T, srv *natstest.Server, st Storer, origin string) (*Consumer, func()) {
	t.Helper()
	_, js := srv.Connect(t)
	c, err := NewConsumer(js, ConsumerConfig{Origin: origin, Retry: 50 * time.Millisecond}, st, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return c, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}
}

// waitCursor waits until st has stored the stream up to seq.
func waitCursor(t *testing.T, st *store.Store, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		got, err := st.StreamCursor(context.Background(), "FLOWLENS_FLOWS")
		if err != nil {
			t.Fatal(err)
		}
		if got == seq {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream cursor %d, want %d", got, seq)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func lastSeq(t testing.TB, p *Publisher) uint64 {
	t.Helper()
	s, err := p.js.Stream(context.Background(), "FLOWLENS_FLOWS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

func TestConsumerStoresOtherReplicasFlowsOnce(t *testing.T) {
	srv := natstest.Start(t)
	a, js := newPublisher(t, srv, Config{Origin: "collector-a"})
	b, _ := newPublisher(t, srv, Config{Origin: "collector-b"})
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "a.duckdb"), RollupInterval: -1}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	own, peer := fleettest.Records(50, 1), fleettest.Records(70, 2)
	ctx := context.Background()
	if err := a.Publish(ctx, own); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, peer); err != nil {
		t.Fatal(err)
	}
	// Something that is not a flow batch, published by a stranger: skipped, counted, and passed.
	if _, err := js.Publish(ctx, "flowlens.flows.x.y", []byte("not a batch")); err != nil {
		t.Fatal(err)
	}
	c, stop := runConsumer(t, srv, st, "collector-a")
	waitCursor(t, st, lastSeq(t, a))
	stop()
	if got, want := storedKeys(t, st), keysOf(peer); !slices.Equal(got, want) {
		t.Fatalf("stored %d flows, want exactly the peer's %d (not its own %d)", len(got), len(want), len(own))
	}
	for result, want := range map[string]float64{"own": float64(messagesOf(t, js, "collector-a")), "stored": float64(messagesOf(t, js, "collector-b")), "bad": 1} {
		if got := testutil.ToFloat64(c.messages.WithLabelValues(result)); got != want || want == 0 {
			t.Errorf("messages{result=%s} = %v, want %v (> 0)", result, got, want)
		}
	}
	if got := testutil.ToFloat64(c.records); got != 70 {
		t.Errorf("records stored %v, want 70", got)
	}

	// Restarted, it resumes after the last message it stored: the new flows once, the old not again.
	more := fleettest.Records(30, 3)
	if err := b.Publish(ctx, more); err != nil {
		t.Fatal(err)
	}
	_, stop = runConsumer(t, srv, st, "collector-a")
	waitCursor(t, st, lastSeq(t, a))
	stop()
	if got, want := storedKeys(t, st), keysOf(peer, more); !slices.Equal(got, want) {
		t.Fatalf("after a restart: stored %d flows, want %d", len(got), len(want))
	}
}

// messagesOf counts the stream's messages published by origin.
func messagesOf(t *testing.T, js jetstream.JetStream, origin string) int {
	t.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, "FLOWLENS_FLOWS")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if m.Header.Get(OriginHeader) == origin {
			n++
		}
	}
	return n
}

// A store that refuses writes holds the consumer: the messages are retried (counted), never skipped.
func TestConsumerRetriesFailedWrites(t *testing.T) {
	srv := natstest.Start(t)
	b, _ := newPublisher(t, srv, Config{Origin: "collector-b"})
	if err := b.Publish(context.Background(), fleettest.Records(10, 1)); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Config{Path: filepath.Join(t.TempDir(), "a.duckdb"), RollupInterval: -1}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	st.Close() // every write now fails
	c, stop := runConsumerOn(t, srv, &closedAfterCursor{st}, "collector-a")
	deadline := time.Now().Add(10 * time.Second)
	for testutil.ToFloat64(c.failures) < 2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	stop()
	if f, r := testutil.ToFloat64(c.failures), testutil.ToFloat64(c.records); f < 2 || r != 0 {
		t.Fatalf("write failures %v, records stored %v: want the write retried (>= 2) and nothing counted as stored", f, r)
	}
}

// closedAfterCursor answers the cursor of a fresh store (0) and passes writes to a closed one.
type closedAfterCursor struct{ *store.Store }

func (closedAfterCursor) StreamCursor(context.Context, string) (uint64, error) { return 0, nil }
