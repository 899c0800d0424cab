package index

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/flowlens/flowlens/internal/flow"
)

// churn fills x the way a busy cluster does: nIPs pod addresses, each reused by perIP owners in turn
// (one range each, separated by more than the merge gap), owners drawn from a pool of 2,000 workloads.
// It returns the time span the ranges cover.
func churn(x *Index, nIPs, perIP int) (end int64) {
	const rangeLen, pause = 10 * 60 * sec, 2 * 60 * sec
	owners := make([]flow.Workload, 2000)
	for i := range owners {
		owners[i] = flow.Workload{Name: fmt.Sprintf("app-%d", i%400), Namespace: fmt.Sprintf("ns-%d", i%40),
			Pod: fmt.Sprintf("app-%d-%08x", i%400, i), Node: fmt.Sprintf("node-%d", i%50), Cluster: "prod"}
	}
	for j := range perIP {
		for i := range nIPs {
			s := int64(j) * (rangeLen + pause)
			x.Add(Claim{IP: benchAddr(i), Start: s, End: s + rangeLen, Owner: owners[(i*7+j*13)%len(owners)], Evidence: EvidenceHeartbeat})
		}
	}
	return int64(perIP) * (rangeLen + pause)
}

func benchAddr(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// BenchmarkLookup measures single-goroutine lookups over 100k addresses holding 10 ranges each.
// "recent": times within the latest owner's range, as the collector asks about flows that just ended;
// "history": any time over the ten owners (most inside a range, some in the pauses between owners),
// as an operator asks "who had this IP yesterday". Addresses are uniformly random either way, so
// nearly every lookup misses the CPU caches: that, not the code, bounds the figure.
// "hot" is "recent" over 1,000 addresses, small enough to stay in the CPU caches: the code's own cost.
func BenchmarkLookup(b *testing.B) {
	x := New(Config{MergeGap: 30 * time.Second})
	const big = 100_000
	end := churn(x, big, 10)
	for _, tc := range []struct {
		name string
		n    int
		from int64
	}{{"recent", big, end - 12*60*sec}, {"history", big, 0}, {"hot", 1000, end - 12*60*sec}} {
		n := tc.n
		b.Run(tc.name, func(b *testing.B) {
			rng := rand.New(rand.NewPCG(1, 2))
			qs := make([]struct {
				ip netip.Addr
				t  int64
			}, 1<<16)
			for i := range qs {
				qs[i].ip, qs[i].t = benchAddr(rng.IntN(n)), tc.from+rng.Int64N(end-tc.from-2*60*sec)
			}
			owned, i := 0, 0
			for b.Loop() {
				q := &qs[i&(len(qs)-1)]
				if x.Lookup(q.ip, q.t).Status == Owned {
					owned++
				}
				i++
			}
			b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "lookups/s")
			if owned == 0 {
				b.Fatal("no lookup found an owner")
			}
		})
	}
}

// BenchmarkLookupParallel is the same over all cores.
func BenchmarkLookupParallel(b *testing.B) {
	x := New(Config{MergeGap: 30 * time.Second})
	const n = 100_000
	end := churn(x, n, 10)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 2))
		for pb.Next() {
			x.Lookup(benchAddr(rng.IntN(n)), rng.Int64N(end))
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "lookups/s")
}

// BenchmarkMemory reports the heap held per stored range: 1M ranges as 100k addresses with 10
// owners each, and as 1M addresses with one range each.
func BenchmarkMemory(b *testing.B) {
	for _, shape := range []struct{ ips, perIP int }{{100_000, 10}, {1_000_000, 1}} {
		b.Run(fmt.Sprintf("ips=%d/ranges=%d", shape.ips, shape.perIP), func(b *testing.B) {
			var perRange float64
			for b.Loop() {
				before := heap()
				x := New(Config{MergeGap: 30 * time.Second})
				churn(x, shape.ips, shape.perIP)
				after := heap()
				if st := x.Stats(); st.Ranges != shape.ips*shape.perIP {
					b.Fatalf("%d ranges, want %d", st.Ranges, shape.ips*shape.perIP)
				}
				perRange = float64(after-before) / float64(shape.ips*shape.perIP)
				runtime.KeepAlive(x)
			}
			b.ReportMetric(perRange, "B/range")
		})
	}
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkAdd measures heartbeats ingested per second: the common case of owners extending their
// current range (100k addresses, claims every 10 s), and the churn case where each claim opens a range.
func BenchmarkAdd(b *testing.B) {
	b.Run("extend", func(b *testing.B) {
		x := New(Config{MergeGap: 30 * time.Second})
		w := flow.Workload{Name: "app", Namespace: "ns", Pod: "app-1"}
		const n = 100_000
		i := 0
		for b.Loop() {
			s := int64(i/n) * 10 * sec
			x.Add(Claim{IP: benchAddr(i % n), Start: s, End: s + 5*sec, Owner: w, Evidence: EvidenceHeartbeat})
			i++
		}
		b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "claims/s")
	})
	b.Run("new-range", func(b *testing.B) {
		x := New(Config{MergeGap: 30 * time.Second, MaxAge: 1000 * time.Second})
		ws := []flow.Workload{{Name: "a"}, {Name: "b"}}
		const n = 100_000
		i := 0
		for b.Loop() {
			s := int64(i/n) * 100 * sec
			x.Add(Claim{IP: benchAddr(i % n), Start: s, End: s + 5*sec, Owner: ws[(i/n)%2], Evidence: EvidenceHeartbeat})
			i++
			if i%(n*20) == 0 {
				x.Expire(s + 100*sec) // keep the lists short, as retention does
			}
		}
		b.ReportMetric(float64(i)/b.Elapsed().Seconds(), "claims/s")
	})
}
