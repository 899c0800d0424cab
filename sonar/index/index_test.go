package index

import (
	"fmt"
	"net/netip"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/flowlens/flowlens/internal/flow"
)

const sec = int64(time.Second)

var (
	wA = flow.Workload{Name: "a", Namespace: "ns", Pod: "a-1", Cluster: "c"}
	wB = flow.Workload{Name: "b", Namespace: "ns", Pod: "b-1", Cluster: "c"}
	wC = flow.Workload{Name: "c", Namespace: "other", Pod: "c-1", Cluster: "c"}
	wD = flow.Workload{Name: "internet"}
	ip = netip.MustParseAddr("10.0.0.5")
)

func hb(w flow.Workload, start, end int64) Claim {
	return Claim{IP: ip, Start: start * sec, End: end * sec, Owner: w, Evidence: EvidenceHeartbeat}
}

func ev(w flow.Workload, e Evidence, start, end int64) Claim {
	return Claim{IP: ip, Start: start * sec, End: end * sec, Owner: w, Evidence: e}
}

func rg(w flow.Workload, e Evidence, start, end int64) Range {
	return Range{Start: start * sec, End: end * sec, LastSeen: end * sec, Owner: w, Evidence: e}
}

func newTest() *Index { return New(Config{MergeGap: 30 * time.Second}) }

func TestAddRanges(t *testing.T) {
	H := EvidenceHeartbeat
	tests := []struct {
		name            string
		claims          []Claim
		ranges, conflts []Range
		nConflicts      int64
	}{
		{name: "merge within gap", claims: []Claim{hb(wA, 0, 10), hb(wA, 30, 40)},
			ranges: []Range{rg(wA, H, 0, 40)}},
		{name: "merge at exactly the gap", claims: []Claim{hb(wA, 0, 10), hb(wA, 40, 50)},
			ranges: []Range{rg(wA, H, 0, 50)}},
		{name: "no merge beyond gap", claims: []Claim{hb(wA, 0, 10), hb(wA, 41, 50)},
			ranges: []Range{rg(wA, H, 0, 10), rg(wA, H, 41, 50)}},
		{name: "repeat and contained claims", claims: []Claim{hb(wA, 0, 100), hb(wA, 10, 20), hb(wA, 0, 100)},
			ranges: []Range{rg(wA, H, 0, 100)}},
		{name: "out of order claims merge", claims: []Claim{hb(wA, 50, 60), hb(wA, 0, 10), hb(wA, 25, 30)},
			ranges: []Range{rg(wA, H, 0, 60)}},
		{name: "claim bridges two ranges", claims: []Claim{hb(wA, 0, 10), hb(wA, 100, 110), hb(wA, 35, 75)},
			ranges: []Range{rg(wA, H, 0, 110)}},
		{name: "no merge across another owner", claims: []Claim{hb(wA, 0, 10), hb(wB, 15, 20), hb(wA, 25, 30)},
			ranges: []Range{rg(wA, H, 0, 10), rg(wB, H, 15, 20), rg(wA, H, 25, 30)}},
		{name: "no merge across another owner, out of order", claims: []Claim{hb(wA, 25, 30), hb(wB, 15, 20), hb(wA, 0, 10)},
			ranges: []Range{rg(wA, H, 0, 10), rg(wB, H, 15, 20), rg(wA, H, 25, 30)}},
		{name: "overlap with another owner is a conflict",
			claims:     []Claim{hb(wA, 0, 100), hb(wB, 50, 150)},
			ranges:     []Range{rg(wA, H, 0, 100), {Start: 100 * sec, End: 150 * sec, LastSeen: 150 * sec, Owner: wB, Evidence: H}},
			conflts:    []Range{{Start: 50 * sec, End: 100 * sec, LastSeen: 150 * sec, Owner: wB, Evidence: H}},
			nConflicts: 1},
		{name: "claim spanning another owner's range: two pieces, one conflict",
			claims: []Claim{hb(wB, 40, 60), hb(wA, 0, 100)},
			ranges: []Range{
				{Start: 0, End: 40 * sec, LastSeen: 100 * sec, Owner: wA, Evidence: H},
				rg(wB, H, 40, 60),
				{Start: 60 * sec, End: 100 * sec, LastSeen: 100 * sec, Owner: wA, Evidence: H},
			},
			conflts:    []Range{{Start: 40 * sec, End: 60 * sec, LastSeen: 100 * sec, Owner: wA, Evidence: H}},
			nConflicts: 1},
		{name: "claim covered by two other owners: two conflicts",
			claims: []Claim{hb(wA, 0, 10), hb(wB, 10, 20), hb(wC, 5, 15)},
			ranges: []Range{rg(wA, H, 0, 10), rg(wB, H, 10, 20)},
			// The two parts touch and have one owner: kept as one.
			conflts:    []Range{{Start: 5 * sec, End: 15 * sec, LastSeen: 15 * sec, Owner: wC, Evidence: H}},
			nConflicts: 2},
		{name: "repeated conflicting claims fold into one part",
			claims:     []Claim{hb(wA, 0, 100), hb(wB, 10, 20), hb(wB, 20, 30), hb(wB, 10, 20), hb(wB, 50, 60)},
			ranges:     []Range{rg(wA, H, 0, 100)},
			conflts:    []Range{rg(wB, H, 10, 30), rg(wB, H, 50, 60)},
			nConflicts: 4},
		{name: "claim ending at the largest time still merges", claims: []Claim{
			{IP: ip, Start: 0, End: maxTime, Owner: wA, Evidence: H}, hb(wA, 10, 20), hb(wA, maxTime/sec-5, maxTime/sec-4)},
			ranges: []Range{{Start: 0, End: maxTime, LastSeen: maxTime, Owner: wA, Evidence: H}}},
		{name: "heartbeats and events kept apart",
			claims: []Claim{hb(wA, 0, 10), ev(wB, EvidencePodEvent, 0, 10)},
			ranges: []Range{rg(wA, H, 0, 10), rg(wB, EvidencePodEvent, 0, 10)}},
		{name: "last seen is the latest evidence", claims: []Claim{
			{IP: ip, Start: 0, End: 10 * sec, Seen: 20 * sec, Owner: wA, Evidence: EvidencePodEvent},
			{IP: ip, Start: 5 * sec, End: 8 * sec, Seen: 12 * sec, Owner: wA, Evidence: EvidencePodEvent},
		}, ranges: []Range{{Start: 0, End: 10 * sec, LastSeen: 20 * sec, Owner: wA, Evidence: EvidencePodEvent}}},
		{name: "zero-length claim holds one nanosecond", claims: []Claim{hb(wA, 5, 5)},
			ranges: []Range{{Start: 5 * sec, End: 5*sec + 1, LastSeen: 5*sec + 1, Owner: wA, Evidence: H}}},
		{name: "invalid claims refused", claims: []Claim{
			{IP: netip.Addr{}, Start: 0, End: 1, Owner: wA, Evidence: H},
			{IP: ip, Start: 2, End: 1, Owner: wA, Evidence: H},
			{IP: ip, Start: 0, End: 1, Owner: wA, Evidence: EvidenceNone},
			{IP: ip, Start: 0, End: 1, Owner: wA, Evidence: EvidenceCIDR},
			{IP: ip, Start: 0, End: 1, Owner: wA, Evidence: 9},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newTest()
			for _, c := range tt.claims {
				x.Add(c)
			}
			ranges, conflicts := x.Ranges(ip)
			if !reflect.DeepEqual(ranges, tt.ranges) {
				t.Errorf("ranges:\n got %+v\nwant %+v", ranges, tt.ranges)
			}
			if !reflect.DeepEqual(conflicts, tt.conflts) {
				t.Errorf("conflicts:\n got %+v\nwant %+v", conflicts, tt.conflts)
			}
			st := x.Stats()
			if want := len(tt.ranges) + len(tt.conflts); st.Ranges != want {
				t.Errorf("Stats.Ranges = %d, want %d", st.Ranges, want)
			}
			if st.Conflicts != tt.nConflicts {
				t.Errorf("Stats.Conflicts = %d, want %d", st.Conflicts, tt.nConflicts)
			}
		})
	}
}

func TestAddReportsConflict(t *testing.T) {
	x := newTest()
	for i, tc := range []struct {
		c    Claim
		want bool
	}{{hb(wA, 0, 10), false}, {hb(wA, 5, 20), false}, {hb(wB, 15, 30), true}, {hb(wB, 25, 40), false}, {ev(wC, EvidenceNode, 0, 40), false}} {
		if got := x.Add(tc.c); got != tc.want {
			t.Errorf("claim %d: Add = %v, want %v", i, got, tc.want)
		}
	}
}

func TestLookup(t *testing.T) {
	H, P := EvidenceHeartbeat, EvidencePodEvent
	owned := func(r Range) Answer { return Answer{Status: Owned, Range: r} }
	conflict := func(rs ...Range) Answer { return Answer{Status: Conflict, Conflicting: rs} }
	part := func(w flow.Workload, e Evidence, start, end, seen int64) Range {
		return Range{Start: start * sec, End: end * sec, LastSeen: seen * sec, Owner: w, Evidence: e}
	}
	type q struct {
		at   int64 // seconds
		want Answer
	}
	tests := []struct {
		name    string
		claims  []Claim
		queries []q
	}{
		{name: "owned inside, start inclusive, end exclusive", claims: []Claim{hb(wA, 10, 20)}, queries: []q{
			{9, Answer{}}, {10, owned(rg(wA, H, 10, 20))}, {15, owned(rg(wA, H, 10, 20))}, {20, Answer{}},
		}},
		{name: "merged gap is owned", claims: []Claim{hb(wA, 0, 10), hb(wA, 30, 40)}, queries: []q{
			{20, owned(rg(wA, H, 0, 40))},
		}},
		{name: "conflict answers both owners", claims: []Claim{hb(wA, 0, 100), hb(wB, 50, 150)}, queries: []q{
			{10, owned(rg(wA, H, 0, 100))},
			{60, conflict(rg(wA, H, 0, 100), part(wB, H, 50, 100, 150))},
			{120, owned(part(wB, H, 100, 150, 150))},
		}},
		{name: "heartbeat outranks event", claims: []Claim{ev(wB, P, 0, 100), hb(wA, 40, 60)}, queries: []q{
			{10, owned(rg(wB, P, 0, 100))}, {50, owned(rg(wA, H, 40, 60))}, {70, owned(rg(wB, P, 0, 100))},
		}},
		{name: "event conflicts do not affect heartbeat answers",
			claims: []Claim{ev(wB, P, 0, 100), ev(wC, EvidenceService, 0, 100), hb(wA, 40, 60)}, queries: []q{
				{50, owned(rg(wA, H, 40, 60))},
				{10, conflict(rg(wB, P, 0, 100), rg(wC, EvidenceService, 0, 100))},
			}},
		{name: "heartbeat conflict is not resolved by events",
			claims: []Claim{ev(wC, P, 0, 100), hb(wA, 0, 50), hb(wB, 40, 60)}, queries: []q{
				{45, conflict(rg(wA, H, 0, 50), part(wB, H, 40, 50, 60))},
				{55, owned(part(wB, H, 50, 60, 60))},
				{70, owned(rg(wC, P, 0, 100))},
			}},
		{name: "three owners", claims: []Claim{hb(wA, 0, 100), hb(wB, 10, 20), hb(wC, 15, 30)}, queries: []q{
			{12, conflict(rg(wA, H, 0, 100), part(wB, H, 10, 20, 20))},
			{17, conflict(rg(wA, H, 0, 100), part(wB, H, 10, 20, 20), part(wC, H, 15, 30, 30))},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x := newTest()
			for _, c := range tt.claims {
				x.Add(c)
			}
			for _, q := range tt.queries {
				if got := x.Lookup(ip, q.at*sec); !reflect.DeepEqual(got, q.want) {
					t.Errorf("Lookup at %ds:\n got %+v\nwant %+v", q.at, got, q.want)
				}
			}
		})
	}
}

func TestAddressForms(t *testing.T) {
	x := newTest()
	v4 := netip.MustParseAddr("10.1.2.3")
	mapped := netip.MustParseAddr("::ffff:10.1.2.4")
	v6 := netip.MustParseAddr("fd00::1")
	zoned := netip.MustParseAddr("fe80::1%eth0")
	x.Add(Claim{IP: v4, Start: 0, End: 10, Owner: wA, Evidence: EvidenceHeartbeat})
	x.Add(Claim{IP: mapped, Start: 0, End: 10, Owner: wB, Evidence: EvidenceHeartbeat})
	x.Add(Claim{IP: v6, Start: 0, End: 10, Owner: wC, Evidence: EvidenceHeartbeat})
	x.Add(Claim{IP: zoned, Start: 0, End: 10, Owner: wA, Evidence: EvidenceHeartbeat})
	for _, tc := range []struct {
		ip   string
		want flow.Workload
	}{
		{"10.1.2.3", wA}, {"::ffff:10.1.2.3", wA}, {"10.1.2.4", wB}, {"::ffff:10.1.2.4", wB},
		{"fd00::1", wC}, {"fd00:0:0:0:0:0:0:1", wC}, {"fe80::1", wA}, {"fe80::1%eth1", wA},
	} {
		a := x.Lookup(netip.MustParseAddr(tc.ip), 5)
		if a.Status != Owned || a.Range.Owner != tc.want {
			t.Errorf("Lookup(%s) = %+v, want owner %v", tc.ip, a, tc.want)
		}
	}
	if a := x.Lookup(netip.MustParseAddr("fd00::2"), 5); a.Status != Unknown {
		t.Errorf("fd00::2: %+v, want Unknown", a)
	}
	if a := x.Lookup(netip.MustParseAddr("10.1.2.5"), 5); a.Status != Unknown {
		t.Errorf("10.1.2.5: %+v, want Unknown", a)
	}
	if st := x.Stats(); st.IPs != 4 {
		t.Errorf("IPs = %d, want 4 (mapped and zoned forms are the same address)", st.IPs)
	}
	seen := map[netip.Addr]bool{}
	x.Each(func(ip netip.Addr, _ Range, _ bool) bool { seen[ip] = true; return true })
	want := map[netip.Addr]bool{v4: true, mapped.Unmap(): true, v6: true, zoned.WithZone(""): true}
	if !reflect.DeepEqual(seen, want) {
		t.Errorf("Each saw %v, want %v", seen, want)
	}
}

func TestCIDR(t *testing.T) {
	cidr := func(w flow.Workload) Range {
		return Range{Start: minTime, End: maxTime, Owner: w, Evidence: EvidenceCIDR}
	}
	x := newTest()
	x.SetCIDRs([]CIDR{
		{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Owner: wA},
		{Prefix: netip.MustParsePrefix("10.1.0.0/16"), Owner: wB},
		{Prefix: netip.MustParsePrefix("10.2.0.0/16"), Owner: wB},
		{Prefix: netip.MustParsePrefix("10.2.0.7/16"), Owner: wC}, // masked to 10.2.0.0/16: equal prefix, other owner
		{Prefix: netip.MustParsePrefix("10.3.0.0/16"), Owner: wC},
		{Prefix: netip.MustParsePrefix("10.3.0.0/16"), Owner: wC}, // same owner twice: no conflict
		{Prefix: netip.MustParsePrefix("fd00::/64"), Owner: wC},
		{Prefix: netip.MustParsePrefix("::ffff:192.0.2.0/120"), Owner: wA}, // v4-mapped: 192.0.2.0/24
		{Prefix: netip.MustParsePrefix("0.0.0.0/0"), Owner: wD},            // everything else IPv4
		{Prefix: netip.Prefix{}, Owner: wA},                                // invalid: ignored
	})
	x.Add(Claim{IP: netip.MustParseAddr("10.1.0.9"), Start: 100, End: 200, Owner: wC, Evidence: EvidenceHeartbeat})
	for _, tc := range []struct {
		ip   string
		at   int64
		want Answer
	}{
		{"10.9.9.9", 0, Answer{Status: Owned, Range: cidr(wA)}},
		{"10.1.0.1", 0, Answer{Status: Owned, Range: cidr(wB)}},
		{"::ffff:10.1.0.1", 0, Answer{Status: Owned, Range: cidr(wB)}},
		{"10.2.3.4", 0, Answer{Status: Conflict, Conflicting: []Range{cidr(wB), cidr(wC)}}},
		{"10.3.3.4", 0, Answer{Status: Owned, Range: cidr(wC)}},
		{"fd00::5", 0, Answer{Status: Owned, Range: cidr(wC)}},
		{"fd01::5", 0, Answer{}},
		{"11.0.0.1", 0, Answer{Status: Owned, Range: cidr(wD)}},
		{"192.0.2.200", 0, Answer{Status: Owned, Range: cidr(wA)}},
		{"10.1.0.9", 150, Answer{Status: Owned, Range: Range{Start: 100, End: 200, LastSeen: 200, Owner: wC, Evidence: EvidenceHeartbeat}}},
		{"10.1.0.9", 250, Answer{Status: Owned, Range: cidr(wB)}},
	} {
		if got := x.Lookup(netip.MustParseAddr(tc.ip), tc.at); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Lookup(%s, %d):\n got %+v\nwant %+v", tc.ip, tc.at, got, tc.want)
		}
	}
	x.SetCIDRs(nil)
	if got := x.Lookup(netip.MustParseAddr("10.9.9.9"), 0); got.Status != Unknown {
		t.Errorf("after SetCIDRs(nil): %+v", got)
	}
}

func TestExpireByAge(t *testing.T) {
	x := New(Config{MergeGap: time.Second, MaxAge: 100 * time.Second})
	other := netip.MustParseAddr("10.0.0.6")
	x.Add(hb(wA, 0, 10))
	x.Add(hb(wA, 50, 60))
	x.Add(hb(wB, 55, 70)) // conflict part [55,60) ends with wA's range
	x.Add(Claim{IP: other, Start: 0, End: 10 * sec, Owner: wC, Evidence: EvidenceNode})
	if st := x.Stats(); st.Ranges != 5 || st.IPs != 2 {
		t.Fatalf("before: %+v", st)
	}
	if n := x.Expire(105 * sec); n != 0 { // horizon 5s: nothing ended before it
		t.Fatalf("Expire(105s) dropped %d, want 0", n)
	}
	if n := x.Expire(111 * sec); n != 2 { // horizon 11s: [0,10) on both addresses
		t.Fatalf("Expire(111s) dropped %d, want 2", n)
	}
	ranges, conflicts := x.Ranges(ip)
	want := []Range{rg(wA, EvidenceHeartbeat, 50, 60), {Start: 60 * sec, End: 70 * sec, LastSeen: 70 * sec, Owner: wB, Evidence: EvidenceHeartbeat}}
	if !reflect.DeepEqual(ranges, want) || len(conflicts) != 1 {
		t.Fatalf("after: ranges %+v conflicts %+v", ranges, conflicts)
	}
	if st := x.Stats(); st.Ranges != 3 || st.IPs != 1 {
		t.Fatalf("after: %+v, want 3 ranges on 1 IP (the emptied address is removed)", st)
	}
	if n := x.Expire(200 * sec); n != 3 {
		t.Fatalf("Expire(200s) dropped %d, want 3", n)
	}
	if st := x.Stats(); st.Ranges != 0 || st.IPs != 0 {
		t.Fatalf("end: %+v", st)
	}
}

func TestExpireByMaxRanges(t *testing.T) {
	const n, max = 1000, 100
	x := New(Config{MergeGap: time.Nanosecond, MaxAge: 24 * time.Hour, MaxRanges: max})
	now := 10_000 * sec
	for i := range int64(n) {
		// Range i ends at now-1000s+i s: all young, far inside MaxAge.
		x.Add(Claim{IP: addr(int(i % 37)), Start: now - 1000*sec + i*sec - sec/2, End: now - 1000*sec + i*sec, Owner: wA, Evidence: EvidenceHeartbeat})
	}
	if st := x.Stats(); st.Ranges != n {
		t.Fatalf("before: %d ranges", st.Ranges)
	}
	dropped := x.Expire(now)
	// The end times are 1s apart and the histogram's buckets far narrower: the cut is exact.
	if st := x.Stats(); st.Ranges != max || dropped != n-max {
		t.Fatalf("after Expire: %d ranges held (dropped %d), want %d", st.Ranges, dropped, max)
	}
	// The oldest went first: every range left ends later than every range dropped.
	oldest := int64(1 << 62)
	x.Each(func(_ netip.Addr, r Range, _ bool) bool { oldest = min(oldest, r.End); return true })
	if first := now - 1000*sec + int64(n-x.Stats().Ranges)*sec; oldest != first {
		t.Fatalf("oldest range left ends at %d, want %d", oldest, first)
	}
}

func addr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

func TestEach(t *testing.T) {
	x := newTest()
	x.Add(hb(wA, 0, 100))
	x.Add(hb(wB, 50, 150))
	x.Add(Claim{IP: addr(9), Start: 0, End: 1, Owner: wC, Evidence: EvidenceService})
	var got []string
	x.Each(func(ip netip.Addr, r Range, conflict bool) bool {
		got = append(got, fmt.Sprintf("%s %s %d-%d %v", ip, r.Owner.Name, r.Start/sec, r.End/sec, conflict))
		return true
	})
	want := map[string]bool{"10.0.0.5 a 0-100 false": true, "10.0.0.5 b 100-150 false": true, "10.0.0.5 b 50-100 true": true, "10.0.0.9 c 0-0 false": true}
	if len(got) != len(want) {
		t.Fatalf("Each: %q", got)
	}
	for _, g := range got {
		if !want[g] {
			t.Fatalf("Each: unexpected %q in %q", g, got)
		}
	}
	calls := 0
	x.Each(func(netip.Addr, Range, bool) bool { calls++; return false })
	if calls != 1 {
		t.Fatalf("Each after false: %d calls", calls)
	}
}

// TestConcurrent runs writers and readers together (meant for -race) and checks the result exactly.
func TestConcurrent(t *testing.T) {
	x := newTest()
	const writers, perWriter, readers = 4, 2000, 4
	owners := []flow.Workload{wA, wB, wC, {Name: "d"}}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for r := range readers {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				a := x.Lookup(addr(i%(writers*10)), int64(i%perWriter)*sec)
				if a.Status == Conflict {
					t.Errorf("reader %d: conflict %+v", r, a)
					return
				}
				if i%100 == 0 {
					x.Ranges(addr(i % 40))
					x.Stats()
				}
			}
		})
	}
	var ww sync.WaitGroup
	for w := range writers {
		ww.Go(func() {
			for i := range perWriter {
				// Writer w owns addresses w*10 .. w*10+9; one-second claims 2s apart merge into one range.
				ip := addr(w*10 + i%10)
				s := int64(i/10) * 2 * sec
				x.Add(Claim{IP: ip, Start: s, End: s + sec, Owner: owners[w], Evidence: EvidenceHeartbeat})
			}
		})
	}
	ww.Wait()
	close(stop)
	wg.Wait()
	for w := range writers {
		for j := range 10 {
			ranges, conflicts := x.Ranges(addr(w*10 + j))
			want := []Range{{Start: 0, End: int64(perWriter/10-1)*2*sec + sec, LastSeen: int64(perWriter/10-1)*2*sec + sec, Owner: owners[w], Evidence: EvidenceHeartbeat}}
			if !reflect.DeepEqual(ranges, want) || conflicts != nil {
				t.Fatalf("addr %d: %+v %+v, want %+v", w*10+j, ranges, conflicts, want)
			}
		}
	}
	if st := x.Stats(); st.Claims != writers*perWriter || st.Ranges != writers*10 || st.IPs != writers*10 || st.Owners != writers {
		t.Fatalf("stats %+v", st)
	}
}

// TestRestore puts back what Each reports into a fresh index: identical ranges, conflicts and answers.
func TestRestore(t *testing.T) {
	x := newTest()
	x.Add(hb(wA, 0, 100))
	x.Add(hb(wB, 50, 150))
	x.Add(hb(wA, 200, 210))
	x.Add(hb(wB, 220, 230))
	x.Add(hb(wA, 240, 250)) // within the gap of [200,210) but not across wB's range
	x.Add(ev(wC, EvidenceNode, 0, 300))
	y := newTest()
	x.Each(func(ip netip.Addr, r Range, conflict bool) bool { y.Restore(ip, r, conflict); return true })
	r1, c1 := x.Ranges(ip)
	r2, c2 := y.Ranges(ip)
	if !reflect.DeepEqual(r1, r2) || !reflect.DeepEqual(c1, c2) {
		t.Fatalf("restored:\n%+v %+v\nwant\n%+v %+v", r2, c2, r1, c1)
	}
	if st := y.Stats(); st.Ranges != x.Stats().Ranges {
		t.Fatalf("restored %d ranges, want %d", st.Ranges, x.Stats().Ranges)
	}
	// Restoring over what is there already merges as a claim would.
	y.Restore(ip, rg(wA, EvidenceHeartbeat, 5, 20), false)
	if r3, _ := y.Ranges(ip); !reflect.DeepEqual(r3, r1) {
		t.Fatalf("overlapping restore changed the ranges: %+v", r3)
	}
}
