package ownership

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/flowlens/flowlens/collector/fleet"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/natstest"
	"github.com/flowlens/flowlens/sonar/index"
)

var (
	wlA = flow.Workload{Name: "api", Namespace: "shop", Pod: "api-1", Node: "node-a", Cluster: "c1"}
	wlB = flow.Workload{Name: "db", Namespace: "shop", Pod: "db-0", Node: "node-b", Cluster: "c1"}
	t0  = time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC).UnixNano()
)

type replica struct {
	s   *Sharer
	idx *index.Index
	js  jetstream.JetStream
}

// startReplica connects to srv and runs a sharer on a fresh index until the test ends.
// setup runs on the sharer before Run starts.
func startReplica(t testing.TB, srv *natstest.Server, name string, cfg Config, setup ...func(*Sharer)) replica {
	t.Helper()
	log := zap.NewNop()
	if tt, ok := t.(*testing.T); ok {
		log = zaptest.NewLogger(tt, zaptest.Level(zap.WarnLevel))
	}
	nc, js, err := fleet.Connect(srv.URL(), name, log)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Replica = name
	idx := index.New(index.Config{})
	s, err := New(js, cfg, idx, log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range setup {
		f(s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s: Run: %v", name, err)
		}
		nc.Close()
	})
	return replica{s, idx, js}
}

// waitOwner polls idx until ip is owned by want at at, failing after a deadline (never a fixed sleep).
func waitOwner(t testing.TB, idx *index.Index, ip netip.Addr, at int64, want flow.Workload) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		a := idx.Lookup(ip, at)
		if a.Status == index.Owned && a.Range.Owner == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s at %d: %v %+v after 15s, want OWNER %+v", ip, at, a.Status, a.Range.Owner, want)
		}
		time.Sleep(time.Millisecond)
	}
}

func waitCounter(t testing.TB, c prometheus.Collector, want float64) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for testutil.ToFloat64(c) != want {
		if time.Now().After(deadline) {
			t.Fatalf("counter at %v after 15s, want %v", testutil.ToFloat64(c), want)
		}
		time.Sleep(time.Millisecond)
	}
}

func heartbeat(ip string, start, end int64, owner flow.Workload) index.Claim {
	return index.Claim{IP: netip.MustParseAddr(ip), Start: start, End: end, Owner: owner, Evidence: index.EvidenceHeartbeat}
}

func TestClaimSharedByAIsVisibleInB(t *testing.T) {
	srv := natstest.Start(t)
	a := startReplica(t, srv, "collector-a", Config{})
	b := startReplica(t, srv, "collector-b", Config{})
	a.s.Share([]index.Claim{heartbeat("10.0.0.7", t0, t0+5e9, wlA)})
	b.s.Share([]index.Claim{heartbeat("10.0.0.8", t0, t0+5e9, wlB)})

	ip := netip.MustParseAddr("10.0.0.7")
	waitOwner(t, b.idx, ip, t0+2e9, wlA)
	waitOwner(t, a.idx, ip, t0+2e9, wlA) // its own claim comes back too
	waitOwner(t, a.idx, netip.MustParseAddr("10.0.0.8"), t0+1, wlB)
	r, _ := b.idx.Ranges(ip)
	if len(r) != 1 || r[0].Start != t0 || r[0].End != t0+5e9 || r[0].Evidence != index.EvidenceHeartbeat {
		t.Fatalf("B's ranges for %s: %+v", ip, r)
	}
	// Outside the claimed range the address stays unknown: nothing is invented.
	if a := b.idx.Lookup(ip, t0+6e9+int64(time.Minute)); a.Status != index.Unknown {
		t.Fatalf("lookup outside the range: %v", a.Status)
	}
	// Subjects carry the replica name.
	st, err := a.js.Stream(context.Background(), "FLOWLENS_OWNERSHIP")
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(">"))
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Subjects["flowlens.ownership.collector-a"] != 1 || info.State.Subjects["flowlens.ownership.collector-b"] != 1 {
		t.Fatalf("subjects %v, want one message each from collector-a and collector-b", info.State.Subjects)
	}
}

// A replica started after the claim was shared learns it from the stream's history.
func TestLateReplicaReplays(t *testing.T) {
	srv := natstest.Start(t)
	a := startReplica(t, srv, "a", Config{})
	var cs []index.Claim
	for i := range 100 {
		cs = append(cs, heartbeat(netip.AddrFrom4([4]byte{10, 9, 0, byte(i)}).String(), t0, t0+1e9, wlA))
	}
	a.s.Share(cs)
	waitCounter(t, a.s.m.applied, 100) // stored in the stream and back at A

	late := startReplica(t, srv, "late", Config{})
	select {
	case <-late.s.Synced():
	case <-time.After(15 * time.Second):
		t.Fatal("late replica not synced after 15s")
	}
	// Synced means replayed: every claim is there now, no polling needed.
	for _, c := range cs {
		if a := late.idx.Lookup(c.IP, t0+5e8); a.Status != index.Owned || a.Range.Owner != wlA {
			t.Fatalf("%s at the late replica: %v %+v", c.IP, a.Status, a.Range.Owner)
		}
	}
	if got := late.idx.Stats().IPs; got != 100 {
		t.Fatalf("late replica holds %d addresses, want 100", got)
	}
}

func TestSyncedOnEmptyStream(t *testing.T) {
	srv := natstest.Start(t)
	r := startReplica(t, srv, "alone", Config{})
	select {
	case <-r.s.Synced():
	case <-time.After(15 * time.Second):
		t.Fatal("not synced on an empty stream after 15s")
	}
}

// Garbage on the ownership subjects is counted and skipped; the claims after it still arrive.
func TestBadMessagesSkipped(t *testing.T) {
	srv := natstest.Start(t)
	b := startReplica(t, srv, "b", Config{})
	a := startReplica(t, srv, "a", Config{})
	ctx := context.Background()
	for _, junk := range [][]byte{[]byte("\xff\xfe garbage"), {}, []byte("\x0a\x03\x0a\x01\x01")} {
		if _, err := a.js.Publish(ctx, "flowlens.ownership.evil", junk); err != nil {
			t.Fatal(err)
		}
	}
	a.s.Share([]index.Claim{heartbeat("10.0.0.9", t0, t0+1e9, wlA)})
	waitOwner(t, b.idx, netip.MustParseAddr("10.0.0.9"), t0, wlA)
	waitCounter(t, b.s.m.received.WithLabelValues("bad"), 3)
	if ok := testutil.ToFloat64(b.s.m.received.WithLabelValues("ok")); ok != 1 {
		t.Fatalf("ok messages %v, want 1", ok)
	}
}

// Share coalesces overlapping claims of one address and owner, keeps the others apart, and counts
// what it drops.
func TestShareCoalescesAndBounds(t *testing.T) {
	s, err := New(nil, Config{Replica: "x", MaxPending: 3}, index.New(index.Config{}), zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	hour := int64(time.Hour)
	s.Share([]index.Claim{
		heartbeat("10.0.0.1", t0, t0+10, wlA),
		heartbeat("10.0.0.1", t0+5, t0+20, wlA),        // overlaps: coalesces
		heartbeat("10.0.0.1", t0+20, t0+2e9, wlA),      // touches: coalesces
		heartbeat("10.0.0.1", t0+hour, t0+hour+1, wlA), // a gap: its own range
		heartbeat("10.0.0.1", t0, t0+10, wlB),          // another owner: its own range
		heartbeat("10.0.0.2", t0, t0+10, wlA),          // buffer full (3 ranges): dropped
		heartbeat("10.0.0.1", t0+hour, t0+hour+5, wlA), // coalesces even when full
		{IP: netip.MustParseAddr("10.0.0.3"), Start: 1, End: 0, Owner: wlA, Evidence: index.EvidenceHeartbeat}, // inverted
		{IP: netip.MustParseAddr("10.0.0.3"), Start: 1, End: 2, Owner: wlA, Evidence: index.EvidenceCIDR},
		{IP: netip.MustParseAddr("10.0.0.3"), Start: 1, End: 2, Evidence: index.EvidencePodEvent}, // no owner
	})
	k := key{netip.MustParseAddr("10.0.0.1"), wlA, index.EvidenceHeartbeat}
	got := s.pending[k]
	want := []index.Claim{
		{IP: k.ip, Start: t0, End: t0 + 2e9, Owner: wlA, Evidence: index.EvidenceHeartbeat, Seen: t0 + 2e9},
		{IP: k.ip, Start: t0 + hour, End: t0 + hour + 5, Owner: wlA, Evidence: index.EvidenceHeartbeat, Seen: t0 + hour + 5},
	}
	if len(got) != 2 || got[0] != want[0] || got[1] != want[1] || s.n != 3 || len(s.pending) != 2 {
		t.Fatalf("pending %+v (n=%d, keys=%d), want %+v and one range of wlB", got, s.n, len(s.pending), want)
	}
	if d := testutil.ToFloat64(s.m.dropped.WithLabelValues("buffer_full")); d != 1 {
		t.Errorf("buffer_full drops %v, want 1", d)
	}
	if d := testutil.ToFloat64(s.m.dropped.WithLabelValues("invalid")); d != 3 {
		t.Errorf("invalid drops %v, want 3", d)
	}
	if err := (Config{}).Validate(); err == nil {
		t.Error("config without replica validated")
	}
}

// The server restarts under running replicas: claims shared afterwards still propagate, and the
// consumer does not apply the history twice in a way that changes anything.
func TestServerRestart(t *testing.T) {
	srv := natstest.Start(t)
	a := startReplica(t, srv, "a", Config{})
	b := startReplica(t, srv, "b", Config{})
	a.s.Share([]index.Claim{heartbeat("10.0.1.1", t0, t0+1e9, wlA)})
	waitOwner(t, b.idx, netip.MustParseAddr("10.0.1.1"), t0, wlA)

	srv.Stop()
	srv.Start()
	deadline := time.Now().Add(30 * time.Second)
	ip := netip.MustParseAddr("10.0.1.2")
	for b.idx.Lookup(ip, t0).Status != index.Owned {
		if time.Now().After(deadline) {
			t.Fatal("no claim propagated within 30s of a server restart")
		}
		// Shared again until it arrives: a claim published while the client was still reconnecting is
		// dropped by design (counted as publish_error), as later records make it again.
		a.s.Share([]index.Claim{heartbeat(ip.String(), t0, t0+1e9, wlA)})
		time.Sleep(100 * time.Millisecond)
	}
	waitOwner(t, b.idx, ip, t0, wlA)
	if r, c := b.idx.Ranges(netip.MustParseAddr("10.0.1.1")); len(r) != 1 || len(c) != 0 {
		t.Fatalf("ranges of the first address after the restart: %+v, conflicts %+v", r, c)
	}
}

// Run started while the server is down waits for it, then shares and applies as usual.
func TestRunWaitsForServer(t *testing.T) {
	srv := natstest.Start(t)
	srv.Stop()
	a := startReplica(t, srv, "a", Config{}) // fleet.Connect keeps trying; Run retries the stream
	a.s.Share([]index.Claim{heartbeat("10.0.2.1", t0, t0+1e9, wlA)})
	srv.Start()
	// The claim queued before the server was up was published by a flush that failed (counted) or
	// that came after the reconnection; either way a claim shared now arrives.
	deadline := time.Now().Add(30 * time.Second)
	for a.idx.Lookup(netip.MustParseAddr("10.0.2.2"), t0).Status != index.Owned {
		if time.Now().After(deadline) {
			t.Fatal("nothing applied within 30s of the server starting")
		}
		a.s.Share([]index.Claim{heartbeat("10.0.2.2", t0, t0+1e9, wlA)})
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-a.s.Synced():
	case <-time.After(15 * time.Second):
		t.Fatal("not synced")
	}
}
