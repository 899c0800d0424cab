package store

import (
	"context"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/flowlens/flowlens/internal/flow"
)

// rawEdges answers q from the flows table alone, ignoring the rollup: the oracle for the rollup.
func rawEdges(t *testing.T, s *Store, q EdgeQuery) []Edge {
	t.Helper()
	s.mu.Lock()
	wm := s.watermark
	s.watermark = 0
	s.mu.Unlock()
	defer func() { s.mu.Lock(); s.watermark = wm; s.mu.Unlock() }()
	e, err := s.Edges(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestRollupMatchesRaw(t *testing.T) {
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "flows.duckdb"), RollupInterval: -1}, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	now := time.Now().Truncate(time.Minute).Add(20 * time.Second)
	base := now.Add(-30 * time.Minute).UnixNano()
	mk := func(i int, end int64, c flow.Close) flow.Enriched {
		f := rec(uint16(1000+i), end-int64(time.Second), end, c, uint64(i))
		f.LocalWorkload.Name = fmt.Sprintf("client-%d", i%3)
		f.RemoteWorkload.Namespace = fmt.Sprintf("ns-%d", i%2)
		f.SrttUs = uint32(100 * (1 + i%17))
		if i%5 == 0 {
			f.Role, f.Attribution = flow.RoleServer, flow.AttributionPodEvent
		}
		return f
	}
	var fs []flow.Enriched
	for i := 0; i < 400; i++ { // 20 minutes, 20 connections each, spread over each minute
		fs = append(fs, mk(i, base+int64(i)*int64(3*time.Second), flow.CloseNormal))
	}
	interim := mk(900, base+5*int64(time.Minute)+1, flow.CloseActive)
	fs = append(fs, interim)
	if err := s.Write(ctx, Write{Flows: fs}); err != nil {
		t.Fatal(err)
	}
	windows := []EdgeQuery{
		{From: 0, To: now.UnixNano()},
		{From: base + int64(90*time.Second), To: base + int64(10*time.Minute+30*time.Second)},
		{From: base + int64(2*time.Minute), To: base + int64(4*time.Minute) - 1, OrderBy: "bytes", Limit: 2},
		{From: 0, To: now.UnixNano(), GroupBy: "namespace"},
		{From: 0, To: now.UnixNano(), Namespace: "ns-1", OrderBy: "failures"},
		{From: 0, To: math.MaxInt64, OrderBy: "flows"},
	}
	check := func(stage string) {
		t.Helper()
		for _, q := range windows {
			got, err := s.Edges(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if want := rawEdges(t, s, q); !reflect.DeepEqual(got, want) || len(want) == 0 && q.OrderBy != "failures" && stage != "after expire" {
				t.Fatalf("%s, %+v:\n got %+v\nwant %+v", stage, q, got, want)
			}
		}
	}
	check("before the rollup")
	if err := s.Rollup(ctx, now); err != nil {
		t.Fatal(err)
	}
	if want := now.Truncate(time.Minute).UnixNano(); s.watermark != want { // the last minute ended 20 s ago, past the grace
		t.Fatalf("watermark %d, want %d", s.watermark, want)
	}
	check("rolled up")

	// Late rows in rolled-up minutes: the interim record's final (its row in minute 5 deleted, the
	// new one in minute 12), a batch resent late into minute 3, a failed connect in minute 7.
	final := interim
	final.Close, final.EndTime, final.BytesSent = flow.CloseResetSent, base+12*int64(time.Minute), 12345
	late := mk(1000, base+3*int64(time.Minute)+7, flow.CloseNormal)
	failed := mk(1001, base+7*int64(time.Minute)+9, flow.CloseConnectFailed)
	failed.SrttUs = 0
	if err := s.Write(ctx, Write{Flows: []flow.Enriched{final, late, failed}}); err != nil {
		t.Fatal(err)
	}
	if len(s.dirty) != 4 { // minutes 3, 5, 7, 12
		t.Fatalf("dirty minutes %v", s.dirty)
	}
	check("dirty minutes read raw")
	total := func() int64 {
		var n int64
		for _, e := range rawEdges(t, s, windows[0]) {
			n += e.Flows
		}
		return n
	}
	if n := total(); n != 403 {
		t.Fatalf("%d connections, want 403", n)
	}
	// Reopen: the watermark and the dirty minutes are durable.
	path := s.cfg.Path
	s.Close()
	if s, err = Open(Config{Path: path, RollupInterval: -1}, zap.NewNop(), nil); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(s.dirty) != 4 || s.watermark == 0 {
		t.Fatalf("after reopen: watermark %d dirty %v", s.watermark, s.dirty)
	}
	check("after reopen")
	if err := s.Rollup(ctx, now); err != nil {
		t.Fatal(err)
	}
	if len(s.dirty) != 0 {
		t.Fatalf("dirty after rebuild %v", s.dirty)
	}
	check("rebuilt")
	// Retention cutting through a minute: that minute's remaining flows still add up.
	s.cfg.Retention = now.Sub(time.Unix(0, base+int64(4*time.Minute+30*time.Second)))
	if n, err := s.Expire(ctx, now); err != nil || n == 0 {
		t.Fatalf("expire %d %v", n, err)
	}
	check("after expire")
}

func TestRollupEmptyStore(t *testing.T) {
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "flows.duckdb"), RollupInterval: -1}, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	now := time.Now()
	if err := s.Rollup(ctx, now); err != nil || s.watermark != rollupTarget(now) {
		t.Fatalf("empty store: watermark %d, want %d (%v)", s.watermark, rollupTarget(now), err)
	}
	// A row for a minute the empty rollup already covers is read raw, then rolled up.
	f := rec(1, now.Add(-5*time.Minute).UnixNano(), now.Add(-4*time.Minute).UnixNano(), flow.CloseNormal, 9)
	if err := s.Write(ctx, Write{Flows: []flow.Enriched{f}}); err != nil {
		t.Fatal(err)
	}
	q := EdgeQuery{From: 0, To: now.UnixNano()}
	for _, stage := range []string{"dirty", "rebuilt"} {
		e, err := s.Edges(ctx, q)
		if err != nil || len(e) != 1 || e[0].BytesToServer != 9 {
			t.Fatalf("%s: %+v %v", stage, e, err)
		}
		if err := s.Rollup(ctx, now); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRollupLoop(t *testing.T) {
	s, err := Open(Config{Path: filepath.Join(t.TempDir(), "flows.duckdb"), RollupInterval: 20 * time.Millisecond}, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	f := rec(1, now.Add(-3*time.Minute).UnixNano(), now.Add(-2*time.Minute).UnixNano(), flow.CloseNormal, 9)
	if err := s.Write(context.Background(), Write{Flows: []flow.Enriched{f}}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		s.mu.Lock()
		wm := s.watermark
		s.mu.Unlock()
		if wm > f.EndTime {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the loop did not build the rollup: watermark %d", wm)
		}
	}
	var n int
	if err := s.db.QueryRow(`SELECT count(*) FROM edges_minute`).Scan(&n); err != nil || n != 1 {
		t.Fatalf("rollup rows %d %v", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
