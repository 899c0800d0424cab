package ingest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/flowlens/flowlens/exporter/transport"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/nettest"
	"github.com/flowlens/flowlens/internal/udpwire"
	"github.com/flowlens/flowlens/internal/wire"
)

var udpTestKey = []byte("collector udp ingest test key 32")

// udpTestSink counts what it is given and keeps the batches' sizes.
type udpTestSink struct {
	mu      sync.Mutex
	batches int
	records atomic.Int64
}

func (s *udpTestSink) Put(_ context.Context, b *Batch) error {
	s.mu.Lock()
	s.batches++
	s.mu.Unlock()
	s.records.Add(int64(len(b.Records)))
	return nil
}

// newUDPTestServer listens on addr, in the network namespace of the calling thread: inside Netns.Do it
// runs on another goroutine, so it returns its error rather than end the test.
func newUDPTestServer(t testing.TB, addr string, sockets int, log *zap.Logger) (*UDPServer, *udpTestSink, *prometheus.Registry, error) {
	sink, reg := &udpTestSink{}, prometheus.NewRegistry()
	h := &Handler{Sink: sink, Dedup: NewDedup(10), Metrics: NewMetrics(reg), Log: log}
	s, err := ListenUDP(addr, sockets, udpTestKey, h, reg, log)
	if err == nil {
		t.Cleanup(func() { s.Close() })
	}
	return s, sink, reg, err
}

// testRecords makes n records of a client workload, numbered from from, with ports, peers, sizes and
// timings spread as a real client's are.
func testRecords(n, from int) []flow.Record {
	rng := rand.New(rand.NewPCG(uint64(from), 7))
	out := make([]flow.Record, n)
	end := 1_795_000_000_000_000_000 + int64(from)*1_000_000
	for i := range out {
		end += rng.Int64N(2_000_000)
		out[i] = flow.Record{LocalAddr: netip.MustParseAddr("10.199.9.2"), LocalPort: uint16(32768 + rng.IntN(28000)),
			RemoteAddr: netip.AddrFrom4([4]byte{10, 3, byte(rng.IntN(4)), byte(rng.IntN(16))}), RemotePort: 443, Role: flow.RoleClient,
			StartTime: end - rng.Int64N(500_000_000), EndTime: end, BytesSent: uint64(rng.IntN(20_000)), BytesReceived: uint64(rng.IntN(200_000)),
			SegsSent: uint32(rng.IntN(40)), SegsReceived: uint32(rng.IntN(200)), SrttUs: uint32(150 + rng.IntN(2000)),
			RttVarUs: uint32(rng.IntN(500)), MinRttUs: uint32(100 + rng.IntN(100)), Close: flow.CloseNormal, Pid: 321, Comm: "client",
			Netns: 4026532000, CgroupID: 5555, LocalWorkload: flow.Workload{Name: "client", Namespace: "load", Pod: "client-0", Node: "n2"}}
	}
	return out
}

// eventually reports whether cond holds within d.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}

func TestSeqTracker(t *testing.T) {
	type step struct {
		seq      uint64
		at       int64 // send_time
		want     seqVerdict
		newLost  uint64
		lost     uint64
		received uint64
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"in order", []step{{1, 1, seqNext, 0, 0, 1}, {2, 1, seqNext, 0, 0, 2}, {3, 2, seqNext, 0, 0, 3}}},
		{"first seen late in the first window", []step{{4, 1, seqNext, 3, 3, 1}, {2, 1, seqLate, 0, 2, 2}}},
		{"gap then reordered", []step{{1, 1, seqNext, 0, 0, 1}, {5, 2, seqNext, 3, 3, 2}, {3, 2, seqLate, 0, 2, 3},
			{4, 2, seqLate, 0, 1, 4}, {4, 2, seqDuplicate, 0, 1, 4}, {5, 2, seqDuplicate, 0, 1, 4}, {6, 3, seqNext, 0, 1, 5}}},
		{"window edge", []step{{1, 1, seqNext, 0, 0, 1}, {1030, 2, seqNext, 1028, 1028, 2},
			{6, 1, seqStale, 0, 1028, 2}, {7, 1, seqLate, 0, 1027, 3}, {7, 1, seqDuplicate, 0, 1027, 3}}},
		{"jump beyond the window clears it", []step{{1, 1, seqNext, 0, 0, 1}, {2, 1, seqNext, 0, 0, 2},
			{3000, 2, seqNext, 2997, 2997, 3}, {2500, 2, seqLate, 0, 2996, 4}, {1976, 1, seqStale, 0, 2996, 4}, {1977, 1, seqLate, 0, 2995, 5}}},
		{"joined a running exporter", []step{{5000, 9, seqNext, 0, 0, 1}, {4990, 9, seqEarly, 0, 0, 2},
			{4990, 9, seqDuplicate, 0, 0, 2}, {5002, 9, seqNext, 1, 1, 3}, {5001, 9, seqLate, 0, 0, 4}}},
		{"restart", []step{{1, 1, seqNext, 0, 0, 1}, {2, 1, seqNext, 0, 0, 2}, {3, 2, seqNext, 0, 0, 3},
			{1, 1, seqDuplicate, 0, 0, 3}, // a replay: its send time is old
			{1, 5, seqRestart, 0, 0, 4}, {3, 5, seqNext, 1, 1, 5}, {2, 5, seqLate, 0, 0, 6}}},
		{"restart far from the first window", []step{{1, 1, seqNext, 0, 0, 1}, {5000, 2, seqNext, 4998, 4998, 2},
			{2, 3, seqRestart, 1, 4999, 3}, {1, 3, seqLate, 0, 4998, 4}}},
	} {
		tr := newSeqTracker(10)
		for i, s := range tc.steps {
			v, newLost, missing := tr.see("e", s.seq, s.at)
			e := tr.get("e")
			if v != s.want || newLost != s.newLost || e.lost != s.lost || missing != s.lost || e.received != s.received {
				t.Errorf("%s, step %d (seq %d): %v, %d newly lost, %d lost (%d said), %d received; want %v, %d, %d, %d",
					tc.name, i, s.seq, v, newLost, e.lost, missing, e.received, s.want, s.newLost, s.lost, s.received)
			}
		}
	}
}

func TestSeqTrackerForgetsLeastRecent(t *testing.T) {
	tr := newSeqTracker(3)
	for _, id := range []string{"a", "b", "c", "a", "d"} { // b is then the least recently seen
		tr.see(id, 1, 1)
	}
	for id, want := range map[string]bool{"a": true, "b": false, "c": true, "d": true} {
		if got := tr.get(id).received > 0; got != want {
			t.Errorf("%s tracked: %v, want %v", id, got, want)
		}
	}
	if len(tr.byID) != 3 || tr.lru.Len() != 3 {
		t.Errorf("%d exporters in the map, %d in the list: want 3", len(tr.byID), tr.lru.Len())
	}
}

// TestUDPForged: forged and damaged datagrams are dropped and counted by reason, a replay is dropped as a
// duplicate, and a valid datagram after them all is stored. The sockets share one port.
func TestUDPForged(t *testing.T) {
	s, sink, reg, err := newUDPTestServer(t, "127.0.0.1:0", 3, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	port := s.Addr().(*net.UDPAddr).Port
	for _, c := range s.conns {
		if p := c.LocalAddr().(*net.UDPAddr).Port; p != port {
			t.Fatalf("sockets on ports %d and %d", port, p)
		}
	}
	codec, err := udpwire.NewCodec(udpTestKey)
	if err != nil {
		t.Fatal(err)
	}
	defer codec.Close()
	wrong, err := udpwire.NewCodec([]byte("not the collector's key, but 32b"))
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	batch := func(seq uint64) []byte {
		d, err := codec.Append(nil, seq, wire.NewBatch("exp-f", seq, int64(seq), flow.Workload{Name: "f"}, testRecords(5, int(seq))))
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// sign makes a datagram with a valid tag around content no honest encoder makes.
	sign := func(d []byte) []byte {
		m := hmac.New(sha256.New, udpTestKey)
		m.Write(d)
		return m.Sum(d)[:len(d)+udpwire.TagSize]
	}
	good := batch(1)
	forged, _ := wrong.Append(nil, 2, wire.NewBatch("exp-f", 2, 2, flow.Workload{Name: "f"}, testRecords(5, 2)))
	flipped := batch(2)
	flipped[len(flipped)/2] ^= 0x10
	notProtobuf, _ := codec.Seal(nil, 5, []byte{0xff, 0xff, 0xff})
	enc, _ := zstd.NewWriter(nil)
	bomb := sign(enc.EncodeAll(make([]byte, udpwire.MaxDecoded+1),
		append([]byte(udpwire.Magic), 0, 0, 0, 0, 0, 0, 0, 6, udpwire.FlagZstd)))
	enc.Close()

	conn, err := net.DialUDP("udp", nil, s.Addr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, d := range [][]byte{
		good,          // stored
		good,          // a replay: duplicate
		forged,        // bad_hmac
		flipped,       // bad_hmac
		batch(3)[:40], // truncated: bad_hmac
		batch(3)[:10], // short
		[]byte("GET / HTTP/1.1\r\nHost: collector\r\n\r\n"), // bad_magic
		append([]byte(udpwire.Magic), make([]byte, 100)...), // bad_hmac
		notProtobuf, // malformed
		bomb,        // too_large
		batch(7),    // stored: one exporter's datagrams reach one socket in order, so all before it were handled
	} {
		if _, err := conn.Write(d); err != nil {
			t.Fatal(err)
		}
	}
	if !eventually(5*time.Second, func() bool { return sink.records.Load() == 10 }) {
		t.Fatalf("%d records stored, want the 10 of the two valid datagrams", sink.records.Load())
	}
	want := map[string]float64{"duplicate": 1, "bad_hmac": 4, "short": 1, "bad_magic": 1, "malformed": 1, "too_large": 1}
	for reason, n := range want {
		if got := testutil.ToFloat64(s.m.dropped.WithLabelValues(reason)); got != n {
			t.Errorf("dropped{reason=%q} = %v, want %v", reason, got, n)
		}
	}
	if n, err := testutil.GatherAndCount(reg, "flowlens_collector_udp_dropped_total"); err != nil || n != len(want) {
		t.Errorf("%d dropped series (%v), want %d", n, err, len(want))
	}
	// Of the exporter's datagrams 1 to 7, only 1 and 7 were genuine and whole: 2 to 6 count as lost.
	if got, lost := s.Received("exp-f"), s.Lost("exp-f"); got != 2 || lost != 5 {
		t.Errorf("%d received, %d lost; want 2 and 5", got, lost)
	}
	if err := s.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
}

// TestUDPLoss: an exporter in one network namespace sends through a veth to a collector in another,
// whose nftables drop every 20th datagram to the collector's port. The collector's count of lost
// datagrams is exactly what the sender sent less what it received, and that is what the rule drops.
func TestUDPLoss(t *testing.T) {
	nettest.RequirePrivileged(t)
	colNS, expNS := nettest.NewNetns(t), nettest.NewNetns(t)
	nettest.Veth(t, colNS, expNS, "10.199.9.1/24", "10.199.9.2/24")

	var s *UDPServer
	var err error
	colNS.Do(t, func() { s, _, _, err = newUDPTestServer(t, "10.199.9.1:0", 2, zap.NewNop()) })
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(s.Addr().(*net.UDPAddr).Port)
	colNS.Exec(t, "nft", "add table inet fltest")
	colNS.Exec(t, "nft", "add chain inet fltest in { type filter hook input priority 0 ; }")
	colNS.Exec(t, "nft", "add rule inet fltest in udp dport "+port+" numgen inc mod 20 0 drop")

	var u *transport.UDP
	expNS.Do(t, func() { u, err = transport.NewUDP("10.199.9.1:"+port, udpTestKey, 0) })
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()

	const id, target = "exp-loss", 2000
	w := flow.Workload{Name: "client", Namespace: "load", Pod: "client-0", Node: "n2"}
	send := func(seq uint64, recs []flow.Record) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if _, err := u.Send(ctx, wire.NewBatch(id, seq, time.Now().UnixNano(), w, recs)); err != nil {
			t.Fatal(err)
		}
	}
	seq, next := uint64(0), 0
	for u.Stats().Datagrams < target {
		seq++
		send(seq, testRecords(250, next))
		next += 250
		// Keep what is in flight well inside the receive queue, so that only the rule drops. Received +
		// Lost is the highest sequence number placed.
		if !eventually(5*time.Second, func() bool { return u.Stats().Datagrams-s.Received(id)-s.Lost(id) < 500 }) {
			t.Fatal("the collector does not keep up")
		}
	}
	// The rule may have dropped the last datagram, which no later one would then show lost: send single
	// records until the highest sequence number sent is the highest placed.
	for tries := 0; !eventually(300*time.Millisecond, func() bool { return s.Received(id)+s.Lost(id) == u.Stats().Datagrams }); tries++ {
		if tries == 20 {
			t.Fatal("20 datagrams in a row did not arrive")
		}
		seq++
		send(seq, testRecords(1, next))
		next++
	}
	st := u.Stats()
	sent := st.Datagrams
	dropped := (sent + 19) / 20 // numgen counts from 0: the 1st, 21st, 41st ... datagram through the rule
	// Let datagrams still queued on the other CPU arrive: they are late, and leave the lost count.
	deadline := time.Now().Add(5 * time.Second)
	for s.Lost(id) != dropped && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	got, lost := s.Received(id), s.Lost(id)
	t.Logf("sent %d datagrams (%d records, %d batches), received %d, lost %d (%.2f%%)",
		sent, st.Records, seq, got, lost, 100*float64(lost)/float64(sent))
	if st.Abandoned != 0 || lost != sent-got || lost != dropped {
		snmp, _ := os.ReadFile("/proc/net/snmp") // the test's own namespace: only a hint
		t.Fatalf("%d abandoned, lost %d, sent-received %d, the rule drops %d\n%s", st.Abandoned, lost, sent-got, dropped, snmp)
	}
	if m := testutil.ToFloat64(s.m.lost) - testutil.ToFloat64(s.m.late); m != float64(lost) {
		t.Errorf("lost - late metrics = %v, want %d", m, lost)
	}
}

// BenchmarkUDPIngest: datagrams of realistic records, 1400 bytes each, from decode to the sink, on the
// calling goroutine (run with -cpu 1 for one core). Reports flows/s.
func BenchmarkUDPIngest(b *testing.B) {
	s, err := newUDPServer(udpTestKey, &Handler{Sink: &udpTestSink{}, Dedup: NewDedup(10),
		Metrics: NewMetrics(prometheus.NewRegistry()), Log: zap.NewNop()}, prometheus.NewRegistry(), zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	split, err := udpwire.NewSplitter(s.codec, transport.DefaultMaxDatagram)
	if err != nil {
		b.Fatal(err)
	}
	// A ring of distinct datagrams; the tracker starts over at each turn, else the second would be replays.
	var ring [][]byte
	var flows []int
	for len(ring) < 2048 {
		recs := testRecords(256, len(ring)*64)
		dgs, err := split.Split(wire.NewBatch("exp-bench", uint64(len(ring)+1), 1, recs[0].LocalWorkload, recs), uint64(len(ring)+1))
		if err != nil {
			b.Fatal(err)
		}
		for _, d := range dgs {
			ring = append(ring, append([]byte(nil), d.Bytes...))
			flows = append(flows, d.Records)
		}
	}
	from := netip.MustParseAddrPort("10.0.0.1:5000")
	total, i := 0, 0
	for b.Loop() {
		if i == len(ring) {
			b.StopTimer()
			s.seqs, i = newSeqTracker(maxUDPExporters), 0
			b.StartTimer()
		}
		s.handle(ring[i], from)
		total += flows[i]
		i++
	}
	if d := testutil.ToFloat64(s.m.dropped.WithLabelValues("duplicate")); d != 0 {
		b.Fatalf("%v datagrams dropped as duplicates", d)
	}
	perSec := float64(total) / b.Elapsed().Seconds()
	b.ReportMetric(perSec, "flows/s")
	fmt.Printf("figure | %-52s | %12.2f %-8s | goal %s\n", "udp ingest, decode to sink, one core", perSec, "flows/s", "-")
}
