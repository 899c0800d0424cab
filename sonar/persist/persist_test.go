package persist

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

const sec = int64(time.Second)

func newIndex() *index.Index { return index.New(index.Config{MergeGap: 30 * time.Second}) }

// claims makes n claims over 50 addresses (v4 and v6) and 7 owners, with overlaps, so the index holds
// merged ranges, separate ranges and conflicts of both evidence classes.
func claims(from, n int) []index.Claim {
	cs := make([]index.Claim, 0, n)
	for i := from; i < from+n; i++ {
		ip := netip.AddrFrom4([4]byte{10, 0, 0, byte(i % 50)})
		if i%5 == 0 {
			ip = netip.AddrFrom16([16]byte{0xfd, 15: byte(i % 50)})
		}
		ev := index.EvidenceHeartbeat
		if i%9 == 0 {
			ev = index.EvidencePodEvent
		}
		s := int64(i) * 7 * sec
		cs = append(cs, index.Claim{IP: ip, Start: s, End: s + int64(i%40)*10*sec, Seen: s + 99*sec, Evidence: ev,
			Owner: flow.Workload{Name: fmt.Sprint("app-", i%7), Namespace: "ns", Pod: fmt.Sprintf("app-%d-x", i%7), Node: "n1", Cluster: "c"}})
	}
	return cs
}

// report does what the API does: add to the index, append, sync.
func report(t *testing.T, idx *index.Index, l *Log, cs []index.Claim) {
	t.Helper()
	for _, c := range cs {
		idx.Add(c)
	}
	if err := l.Append(cs); err != nil {
		t.Fatal(err)
	}
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}
}

type held struct {
	IP       netip.Addr
	R        index.Range
	Conflict bool
}

// dump lists everything an index holds, sorted.
func dump(x *index.Index) []held {
	var hs []held
	x.Each(func(ip netip.Addr, r index.Range, c bool) bool { hs = append(hs, held{ip, r, c}); return true })
	slices.SortFunc(hs, func(a, b held) int {
		if c := a.IP.Compare(b.IP); c != 0 {
			return c
		}
		return strings.Compare(fmt.Sprint(a.R, a.Conflict), fmt.Sprint(b.R, b.Conflict))
	})
	return hs
}

func open(t *testing.T, dir string, idx *index.Index, reg prometheus.Registerer) *Log {
	t.Helper()
	l, err := Open(dir, idx, zap.NewNop(), reg, Options{SnapshotInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestCloseAndReopen(t *testing.T) {
	dir := t.TempDir()
	idx := newIndex()
	l := open(t, dir, idx, nil)
	report(t, idx, l, claims(0, 300))
	if err := l.Snapshot(); err != nil {
		t.Fatal(err)
	}
	report(t, idx, l, claims(300, 300))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	want := dump(idx)
	if st := idx.Stats(); st.Conflicts == 0 || st.Ranges < 100 {
		t.Fatalf("test data too tame: %+v", st)
	}
	fresh := newIndex()
	l2 := open(t, dir, fresh, nil)
	defer l2.Close()
	if got := dump(fresh); !reflect.DeepEqual(got, want) {
		t.Fatalf("reopened index differs: %d vs %d entries", len(got), len(want))
	}
	if r := l2.Replayed(); r.SnapshotRanges != len(want) || r.Claims != 0 || r.Corrupt != nil {
		t.Fatalf("replay %+v, want the snapshot alone (Close writes one)", r)
	}
	for _, ip := range []string{"10.0.0.1", "fd00::a"} {
		a, b := idx.Lookup(netip.MustParseAddr(ip), 70*sec), fresh.Lookup(netip.MustParseAddr(ip), 70*sec)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("lookup %s: %+v vs %+v", ip, a, b)
		}
	}
}

// TestCrashReplay stops without Close (no final snapshot): the snapshot plus the log rebuild the index,
// and replaying claims the snapshot already holds changes nothing.
func TestCrashReplay(t *testing.T) {
	dir := t.TempDir()
	idx := newIndex()
	l := open(t, dir, idx, nil)
	report(t, idx, l, claims(0, 200))
	if err := l.Snapshot(); err != nil {
		t.Fatal(err)
	}
	report(t, idx, l, claims(200, 200))
	report(t, idx, l, claims(100, 50)) // repeats of claims the snapshot holds
	// crash: l is abandoned, nothing flushed beyond what Sync made durable
	want := dump(idx)
	fresh := newIndex()
	l2 := open(t, dir, fresh, nil)
	defer l2.Close()
	if got := dump(fresh); !reflect.DeepEqual(got, want) {
		t.Fatalf("replayed index differs:\n got %d entries\nwant %d", len(got), len(want))
	}
	if r := l2.Replayed(); r.Claims != 250 || r.Segments != 1 || r.Corrupt != nil {
		t.Fatalf("replay %+v, want 250 claims from 1 segment", r)
	}
	segs, _ := l2.segments()
	if len(segs) != 2 { // the replayed one and the new one
		t.Fatalf("segments %v", segs)
	}
}

func TestCorruptTail(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(b []byte, good int) []byte
		why    string
	}{
		{"cut mid-frame", func(b []byte, _ int) []byte { return b[:len(b)-5] }, "frame cut short"},
		{"cut in header", func(b []byte, good int) []byte { return b[:good+3] }, "frame header cut short"},
		{"flipped byte", func(b []byte, _ int) []byte { b[len(b)-3] ^= 0x40; return b }, "frame checksum mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			idx := newIndex()
			l := open(t, dir, idx, nil)
			first := claims(0, 100)
			report(t, idx, l, first)
			good, _ := os.Stat(l.segPath(l.seg))
			report(t, idx, l, claims(100, 100))
			path := l.segPath(l.seg)
			b, _ := os.ReadFile(path)
			os.WriteFile(path, tc.damage(b, int(good.Size())), 0o640)

			want := newIndex()
			for _, c := range first {
				want.Add(c)
			}
			fresh := newIndex()
			reg := prometheus.NewRegistry()
			l2 := open(t, dir, fresh, reg)
			defer l2.Close()
			if got := dump(fresh); !reflect.DeepEqual(got, dump(want)) {
				t.Fatalf("kept %d entries, want the good prefix's %d", len(got), len(dump(want)))
			}
			r := l2.Replayed()
			wantMsg := fmt.Sprintf("%s: %s at byte %d: kept 100 claims", filepath.Base(path), tc.why, good.Size())
			if r.Claims != 100 || len(r.Corrupt) != 1 || !strings.HasPrefix(r.Corrupt[0], wantMsg) {
				t.Fatalf("replay %+v, want %q", r, wantMsg)
			}
			if n := testutil.ToFloat64(l2.m.errors.WithLabelValues("corrupt_log")); n != 1 {
				t.Fatalf("corrupt_log errors %v", n)
			}
			if st, _ := os.Stat(path); st.Size() != good.Size() {
				t.Fatalf("segment is %d bytes after replay, want truncated to %d", st.Size(), good.Size())
			}
		})
	}
}

func TestCorruptSnapshotRefused(t *testing.T) {
	dir := t.TempDir()
	idx := newIndex()
	l := open(t, dir, idx, nil)
	report(t, idx, l, claims(0, 50))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "snapshot")
	b, _ := os.ReadFile(path)
	b[20] ^= 1
	os.WriteFile(path, b, 0o640)
	_, err := Open(dir, newIndex(), zap.NewNop(), nil)
	if err == nil || err.Error() != "snapshot "+path+": checksum mismatch (move it away to start from the log alone)" {
		t.Fatalf("Open with a damaged snapshot: %v", err)
	}
}

// TestBackgroundSync: appended claims become durable within the sync interval without a Sync call.
func TestBackgroundSync(t *testing.T) {
	dir := t.TempDir()
	idx := newIndex()
	l, err := Open(dir, idx, zap.NewNop(), nil, Options{SyncInterval: 10 * time.Millisecond, SnapshotInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Append(claims(0, 10)); err != nil {
		t.Fatal(err)
	}
	for {
		l.mu.Lock()
		done := l.synced == 1
		l.mu.Unlock()
		if done {
			break
		}
		time.Sleep(5 * time.Millisecond) // waits for the event; the test has no time limit of its own
	}
	st, _ := os.Stat(l.segPath(l.seg))
	if st.Size() == 0 {
		t.Fatal("synced frame not in the file")
	}
}

// TestSnapshotWhileReporting: reports (add, append, sync) run on several goroutines while snapshots
// rotate the log underneath them; after a crash every acknowledged claim is back.
func TestSnapshotWhileReporting(t *testing.T) {
	dir := t.TempDir()
	idx := newIndex()
	l := open(t, dir, idx, nil)
	const writers, each = 4, 300
	done := make(chan struct{})
	snaps := 0
	go func() {
		defer close(done)
		for snaps < 20 {
			if err := l.Snapshot(); err != nil {
				t.Error(err)
				return
			}
			snaps++
		}
	}()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				c := index.Claim{IP: netip.AddrFrom4([4]byte{10, byte(w), byte(i >> 8), byte(i)}), Start: int64(i), End: int64(i) + 10,
					Owner: flow.Workload{Name: fmt.Sprint("w", w)}, Evidence: index.EvidenceHeartbeat}
				idx.Add(c)
				if err := l.Append([]index.Claim{c}); err != nil {
					t.Error(err)
					return
				}
				if err := l.Sync(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	<-done
	// crash: no Close
	fresh := newIndex()
	l2 := open(t, dir, fresh, nil)
	defer l2.Close()
	if got, want := dump(fresh), dump(idx); len(want) != writers*each || !reflect.DeepEqual(got, want) {
		t.Fatalf("after %d snapshots: %d ranges back, want %d", snaps, len(got), len(want))
	}
}
