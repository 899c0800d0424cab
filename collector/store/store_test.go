package store

import (
	"context"
	"net/netip"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/internal/flow"
)

func openTest(t testing.TB, path string) *Store {
	t.Helper()
	s, err := Open(Config{Path: path}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// rec is a client-side record of exporter "e1" with every field set, so round trips check them all.
func rec(lport uint16, start, end int64, c flow.Close, sent uint64) flow.Enriched {
	return flow.Enriched{
		Record: flow.Record{
			LocalAddr: netip.MustParseAddr("10.0.0.1"), LocalPort: lport,
			RemoteAddr: netip.MustParseAddr("fd00::2"), RemotePort: 443,
			Role: flow.RoleClient, StartTime: start, EndTime: end,
			BytesSent: sent, BytesReceived: 2 * sent, SegsSent: 3, SegsReceived: 4, Retransmits: 5,
			SrttUs: 6, RttVarUs: 7, MinRttUs: 8, Close: c, Error: "ECONNRESET", Pid: 9, Comm: "curl",
			Netns: 10, CgroupID: 11, Preexisting: start == 0,
			LocalWorkload: flow.Workload{Name: "web", Namespace: "shop", Pod: "web-1", PodUID: "u1", Node: "n1", Cluster: "c1"},
		},
		ExporterID:     "e1",
		RemoteWorkload: flow.Workload{Name: "db", Namespace: "data", Pod: "db-0", PodUID: "u2", Node: "n2", Cluster: "c1"},
		Attribution:    flow.AttributionHeartbeat,
	}
}

func allFlows(t testing.TB, s *Store) []flow.Enriched {
	t.Helper()
	page, err := s.Flows(context.Background(), FlowQuery{From: 0, To: 1 << 62, Limit: 10000})
	if err != nil {
		t.Fatal(err)
	}
	return page.Flows
}

func TestWriteReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "flows.duckdb")
	s := openTest(t, path)
	ctx := context.Background()
	want := []flow.Enriched{rec(1000, 100, 200, flow.CloseNormal, 10), rec(1001, 0, 300, flow.CloseResetReceived, 20)}
	if err := s.Write(ctx, Write{Flows: want, Batches: []BatchKey{{"e1", 7}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, path)
	got := allFlows(t, s)
	// Newest end_time first.
	if len(got) != 2 || !reflect.DeepEqual(got[0], want[1]) || !reflect.DeepEqual(got[1], want[0]) {
		t.Fatalf("after reopen:\n got %+v\nwant %+v", got, want)
	}
	b, err := s.RecentBatches(ctx, time.Now().Add(-time.Minute))
	if err != nil || !reflect.DeepEqual(b, []BatchKey{{"e1", 7}}) {
		t.Fatalf("batches %v %v", b, err)
	}
}

func TestMergeInterimAndFinal(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.duckdb")
	s := openTest(t, path)
	ctx := context.Background()
	write := func(fs ...flow.Enriched) {
		t.Helper()
		if err := s.Write(ctx, Write{Flows: fs}); err != nil {
			t.Fatal(err)
		}
	}
	// Connection A: two interim records in separate writes, then the final.
	write(rec(1, 100, 110, flow.CloseActive, 10), rec(9, 100, 105, flow.CloseNormal, 1))
	write(rec(1, 100, 120, flow.CloseActive, 20))
	// Connection B: interim and final in one write, final first (order within a write must not matter).
	write(rec(2, 100, 130, flow.CloseNormal, 300), rec(2, 100, 125, flow.CloseActive, 250), rec(1, 100, 130, flow.CloseNormal, 30))
	// A resent interim record of A arriving after its final is stale.
	write(rec(1, 100, 115, flow.CloseActive, 15))
	// Connection C: open across a restart; its final comes after reopening.
	write(rec(3, 100, 110, flow.CloseActive, 5))
	// Same ports as A, different start: another connection.
	write(rec(1, 200, 210, flow.CloseNormal, 7))
	s.Close()
	s = openTest(t, path)
	write(rec(3, 100, 140, flow.CloseActive, 6))
	write(rec(3, 100, 150, flow.CloseTimeout, 8))
	// A late interim of C after the restart: the index no longer holds C, the table lookup finds it.
	write(rec(3, 100, 145, flow.CloseActive, 7))

	got := map[[2]int64]uint64{}
	for _, f := range allFlows(t, s) {
		k := [2]int64{int64(f.LocalPort), f.StartTime}
		if _, dup := got[k]; dup {
			t.Fatalf("connection %v stored twice", k)
		}
		got[k] = f.BytesSent
	}
	want := map[[2]int64]uint64{{1, 100}: 30, {9, 100}: 1, {2, 100}: 300, {3, 100}: 8, {1, 200}: 7}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("bytes per connection %v, want %v", got, want)
	}
	if n := len(s.open); n != 0 {
		t.Fatalf("%d connections still open in the index", n)
	}
	// Graph totals count each connection once.
	g, err := s.Edges(ctx, EdgeQuery{From: 0, To: 1 << 62})
	if err != nil {
		t.Fatal(err)
	}
	if len(g) != 1 || g[0].Flows != 5 || g[0].BytesToServer != 346 {
		t.Fatalf("edges %+v", g)
	}
}

func TestPendingRoundTripAndResolve(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.duckdb")
	reg := prometheus.NewRegistry()
	s, err := Open(Config{Path: path}, zap.NewNop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	p1 := Pending{Key: PendingKey{"e1", 4, 0}, Flow: rec(1, 100, 200, flow.CloseNormal, 1), Deadline: 5000}
	p2 := Pending{Key: PendingKey{"e1", 4, 1}, Flow: rec(2, 100, 200, flow.CloseNormal, 2), Deadline: 4000}
	p1.Flow.Attribution, p2.Flow.Attribution = flow.AttributionNone, flow.AttributionNone
	p1.Flow.RemoteWorkload, p2.Flow.RemoteWorkload = flow.Workload{}, flow.Workload{}
	if err := s.Write(ctx, Write{Pending: []Pending{p1, p2}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openTest(t, path)
	got, err := s.Pending(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []Pending{p2, p1}) {
		t.Fatalf("pending\n got %+v\nwant %+v", got, []Pending{p2, p1})
	}
	if v := testutil.ToFloat64(s.m.pending); v != 2 {
		t.Fatalf("pending gauge after reopen %v", v)
	}
	// Resolve p1: it is stored attributed and leaves pending, in the same write.
	done := p1.Flow
	done.Attribution = flow.AttributionHeartbeat
	done.RemoteWorkload = flow.Workload{Name: "db"}
	if err := s.Write(ctx, Write{Flows: []flow.Enriched{done}, Resolved: []PendingKey{p1.Key, {"e1", 99, 0}}}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Pending(ctx)
	if !reflect.DeepEqual(got, []Pending{p2}) {
		t.Fatalf("pending after resolve %+v", got)
	}
	if v := testutil.ToFloat64(s.m.pending); v != 1 {
		t.Fatalf("pending gauge %v", v)
	}
	if fs := allFlows(t, s); len(fs) != 1 || !reflect.DeepEqual(fs[0], done) {
		t.Fatalf("flows %+v", fs)
	}
}

func TestBatchesAndRetention(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.duckdb")
	s, err := Open(Config{Path: path, Retention: time.Hour, BatchRetention: time.Minute}, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	now := time.Now()
	old, fresh := now.Add(-2*time.Hour).UnixNano(), now.Add(-30*time.Minute).UnixNano()
	w := Write{
		Flows:   []flow.Enriched{rec(1, old-10, old, flow.CloseNormal, 1), rec(2, fresh-10, fresh, flow.CloseNormal, 2), rec(3, old-10, old, flow.CloseActive, 3)},
		Batches: []BatchKey{{"e1", 1}, {"e2", 1}},
	}
	if err := s.Write(ctx, w); err != nil {
		t.Fatal(err)
	}
	b, _ := s.RecentBatches(ctx, now.Add(-time.Minute))
	if !reflect.DeepEqual(b, []BatchKey{{"e1", 1}, {"e2", 1}}) {
		t.Fatalf("batches %v", b)
	}
	if b, _ := s.RecentBatches(ctx, time.Now().Add(time.Second)); len(b) != 0 {
		t.Fatalf("batches in the future %v", b)
	}
	n, err := s.Expire(ctx, now)
	if err != nil || n != 2 {
		t.Fatalf("expired %d %v", n, err)
	}
	if fs := allFlows(t, s); len(fs) != 1 || fs[0].LocalPort != 2 {
		t.Fatalf("after expire %+v", fs)
	}
	if len(s.open) != 0 {
		t.Fatalf("expired open connection still indexed")
	}
	// Batch keys older than the batch retention go too.
	if _, err := s.Expire(ctx, now.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if b, _ := s.RecentBatches(ctx, time.Time{}); len(b) != 0 {
		t.Fatalf("batches after expire %v", b)
	}
}

func TestBadWritesKeepEarlierData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flows.duckdb")
	s := openTest(t, path)
	ctx := context.Background()
	first := []flow.Enriched{rec(1, 100, 110, flow.CloseActive, 10), rec(2, 100, 110, flow.CloseNormal, 20)}
	if err := s.Write(ctx, Write{Flows: first, Pending: []Pending{{Key: PendingKey{"e1", 1, 0}, Flow: first[1]}}}); err != nil {
		t.Fatal(err)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	final := rec(1, 100, 120, flow.CloseNormal, 11)
	if err := s.Write(cancelled, Write{Flows: []flow.Enriched{final}}); err == nil || !strings.Contains(err.Error(), "context canceled") {
		t.Fatalf("cancelled write: %v", err)
	}
	// A record with a close reason the store does not know fails the whole write, which includes a
	// valid final record and a resolve: none of it may land.
	bad := rec(5, 100, 120, flow.Close(42), 1)
	err := s.Write(ctx, Write{Flows: []flow.Enriched{final, bad}, Resolved: []PendingKey{{"e1", 1, 0}}, Batches: []BatchKey{{"e1", 2}}})
	if err == nil || !strings.Contains(err.Error(), "flow 1") {
		t.Fatalf("bad write: %v", err)
	}
	got := allFlows(t, s)
	if len(got) != 2 || !reflect.DeepEqual(got[0], first[1]) || !reflect.DeepEqual(got[1], first[0]) {
		t.Fatalf("after failed writes %+v", got)
	}
	if p, _ := s.Pending(ctx); len(p) != 1 {
		t.Fatalf("pending after failed write %+v", p)
	}
	if b, _ := s.RecentBatches(ctx, time.Time{}); len(b) != 0 {
		t.Fatalf("batches after failed write %v", b)
	}
	if testutil.ToFloat64(s.m.errors.WithLabelValues("write")) != 2 {
		t.Fatalf("write errors not counted")
	}
	// The index was not touched by the failed writes: the final still merges with the interim.
	if err := s.Write(ctx, Write{Flows: []flow.Enriched{final}}); err != nil {
		t.Fatal(err)
	}
	got = allFlows(t, s)
	if len(got) != 2 || got[0].BytesSent != 11 || got[0].Close != flow.CloseNormal {
		t.Fatalf("after final %+v", got)
	}
}

func TestThreads(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ cfg, want int }{{0, 1}, {2, 2}} {
		s, err := Open(Config{Path: filepath.Join(dir, "flows.duckdb"), Threads: tc.cfg}, zap.NewNop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		var got int
		if err := s.db.QueryRow(`SELECT current_setting('threads')`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if got != tc.want {
			t.Errorf("Threads %d: DuckDB threads = %d, want %d", tc.cfg, got, tc.want)
		}
	}
	if _, err := Open(Config{Path: filepath.Join(dir, "flows.duckdb"), Threads: -1}, zap.NewNop(), nil); err == nil || !strings.Contains(err.Error(), "threads") {
		t.Fatalf("Threads -1: err = %v, want a threads error", err)
	}
}
