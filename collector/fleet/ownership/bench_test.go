package ownership

import (
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/internal/natstest"
	"github.com/flowlens/flowlens/sonar/index"
)

// BenchmarkPropagation measures how long a claim takes from Share on replica A to a Lookup on replica
// B that answers OWNER, through a real nats-server. Each op shares 200 claims, one every 2 ms (so they
// fall at every phase of the flush timer); after every message B applies, the benchmark looks the
// waiting addresses up in B's index (a hook instead of polling, which on two loaded cores delays what it
// measures). p50 and p99 are over every claim of every op. Most of the delay is the wait for A's next
// flush, so it is measured at the default FlushInterval (100 ms) and at 10 ms.
func BenchmarkPropagation(b *testing.B) {
	for _, flush := range []time.Duration{100 * time.Millisecond, 10 * time.Millisecond} {
		b.Run(fmt.Sprintf("flush=%v", flush), func(b *testing.B) {
			srv := natstest.Start(b)
			a := startReplica(b, srv, "a", Config{FlushInterval: flush})
			applied := make(chan struct{}, 1)
			r := startReplica(b, srv, "b", Config{FlushInterval: flush}, func(s *Sharer) {
				s.afterApply = func() {
					select {
					case applied <- struct{}{}:
					default:
					}
				}
			})
			const perOp = 200
			var lat []time.Duration
			b.ResetTimer()
			for op := range b.N {
				shared := make([]atomic.Int64, perOp) // Unix ns, written by the sharer, read by the watcher
				seen := make([]time.Duration, perOp)
				ips := make([]netip.Addr, perOp)
				for i := range ips {
					ips[i] = netip.AddrFrom4([4]byte{10, byte(op >> 8), byte(op), byte(i)})
				}
				done := make(chan struct{})
				go func() { // watcher: after each applied message, which waiting claims are visible?
					defer close(done)
					for left := perOp; left > 0; {
						select {
						case <-applied:
						case <-time.After(time.Millisecond): // a claim applied before its timestamp was read
						}
						now := time.Now().UnixNano()
						for i, ip := range ips {
							if at := shared[i].Load(); seen[i] == 0 && at != 0 && r.idx.Lookup(ip, t0).Status == index.Owned {
								seen[i] = time.Duration(now - at)
								left--
							}
						}
					}
				}()
				for i, ip := range ips {
					shared[i].Store(time.Now().UnixNano())
					a.s.Share([]index.Claim{{IP: ip, Start: t0, End: t0 + 1e9, Owner: wlA, Evidence: index.EvidenceHeartbeat}})
					time.Sleep(2 * time.Millisecond)
				}
				select {
				case <-done:
				case <-time.After(60 * time.Second):
					b.Fatal("claims not all propagated in 60s")
				}
				lat = append(lat, seen...)
			}
			b.StopTimer()
			slices.Sort(lat)
			q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
			b.ReportMetric(q(0.5), "p50_ms")
			b.ReportMetric(q(0.99), "p99_ms")
			b.ReportMetric(q(1), "max_ms")
			b.ReportMetric(float64(len(lat)), "claims")
		})
	}
}

// BenchmarkReplay measures how fast a replica that starts late catches up: the stream holds 200,000
// ranges (100,000 addresses, two owners' turns each, in messages of up to 256 KiB as Share writes them);
// each op starts a new replica and waits for Synced.
func BenchmarkReplay(b *testing.B) {
	srv := natstest.Start(b)
	a := startReplica(b, srv, "writer", Config{})
	const ips = 100_000
	claims := make([]index.Claim, 0, 2*ips)
	for i := range ips {
		ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		claims = append(claims,
			index.Claim{IP: ip, Start: t0, End: t0 + 1e9, Owner: wlA, Evidence: index.EvidenceHeartbeat, Seen: t0 + 1e9},
			index.Claim{IP: ip, Start: t0 + 1e11, End: t0 + 2e11, Owner: wlB, Evidence: index.EvidenceHeartbeat, Seen: t0 + 2e11})
	}
	msgs := Encode(claims, 256<<10)
	for _, m := range msgs {
		if _, err := a.js.Publish(b.Context(), "flowlens.ownership.writer", m.Data); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	var total time.Duration
	for op := range b.N {
		start := time.Now()
		r := startReplica(b, srv, fmt.Sprintf("late-%d", op), Config{})
		select {
		case <-r.s.Synced():
		case <-time.After(5 * time.Minute):
			b.Fatal("not synced in 5 minutes")
		}
		total += time.Since(start)
		if st := r.idx.Stats(); st.IPs < ips || st.Ranges < 2*ips {
			b.Fatalf("replica synced with %d addresses and %d ranges, want %d and %d", st.IPs, st.Ranges, ips, 2*ips)
		}
	}
	b.ReportMetric(float64(len(claims)*b.N)/total.Seconds(), "ranges/s")
	b.ReportMetric(total.Seconds()/float64(b.N), "s/replay")
	b.ReportMetric(float64(len(msgs)), "messages")
}

// BenchmarkShare measures Share on the collector's hot path: calls of 1,000 heartbeat claims from 100
// addresses, as a busy exporter's batch makes them (each address's connections overlapping in time).
// ranges/claim is what is left to publish after coalescing; the buffer is emptied every 16 calls, as a
// flush would.
func BenchmarkShare(b *testing.B) {
	s, err := New(nil, Config{Replica: "bench", MaxPending: 1 << 20}, index.New(index.Config{}), zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	batch := make([]index.Claim, 1000)
	for i := range batch {
		start := t0 + int64(i)*1e6
		batch[i] = index.Claim{IP: netip.AddrFrom4([4]byte{10, 3, 0, byte(i % 100)}), Start: start, End: start + 500e6,
			Owner: wlA, Evidence: index.EvidenceHeartbeat}
	}
	var ranges int
	b.ResetTimer()
	for i := range b.N {
		s.Share(batch)
		if i%16 == 15 || i == b.N-1 {
			s.mu.Lock()
			ranges += s.n
			s.pending, s.n = make(map[key][]index.Claim), 0
			s.mu.Unlock()
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(batch)), "ns/claim")
	b.ReportMetric(float64(ranges)/float64(b.N*len(batch)), "ranges/claim")
}
