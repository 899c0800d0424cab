package transport_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/flowlens/flowlens/collector/ingest"
	"github.com/flowlens/flowlens/exporter/transport"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/wire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

var udpKey = []byte("flowlens udp transport test key!")

var _ transport.Transport = (*transport.UDP)(nil)

// udpSink keeps every record stored, in arrival order.
type udpSink struct {
	mu      sync.Mutex
	records []flow.Record
}

func (s *udpSink) Put(_ context.Context, b *ingest.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records = append(s.records, b.Records...)
	return nil
}

func (s *udpSink) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.records)
}

// startUDP starts a collector on loopback and a UDP transport to it, with datagrams of maxDatagram bytes.
func startUDP(t *testing.T, maxDatagram int) (*udpSink, *ingest.UDPServer, *transport.UDP) {
	t.Helper()
	sink := &udpSink{}
	h := &ingest.Handler{Sink: sink, Dedup: ingest.NewDedup(10), Metrics: ingest.NewMetrics(prometheus.NewRegistry()), Log: zaptest.NewLogger(t)}
	srv, err := ingest.ListenUDP("127.0.0.1:0", 2, udpKey, h, prometheus.NewRegistry(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	u, err := transport.NewUDP(srv.Addr().String(), udpKey, maxDatagram)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return sink, srv, u
}

// udpRecord varies every field a record has, so that a field lost or mangled on the way shows.
func udpRecord(i int) flow.Record {
	r := flow.Record{LocalAddr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), LocalPort: uint16(20000 + i%40000),
		RemoteAddr: netip.MustParseAddr("10.0.200.1"), RemotePort: uint16(443 + i%3), Role: flow.Role(1 + i%2),
		StartTime: int64(1_795_000_000_000_000_000 + i*1_000_000), EndTime: int64(1_795_000_000_020_000_000 + i*1_000_000),
		BytesSent: uint64(i), BytesReceived: uint64(i) * 977, SegsSent: uint32(i % 91), SegsReceived: uint32(i % 97),
		Retransmits: uint32(i % 5), SrttUs: uint32(100 + i%1000), RttVarUs: uint32(i % 300), MinRttUs: uint32(50 + i%70),
		Close: flow.Close(i % 6), Pid: uint32(1000 + i%7), Comm: []string{"api", "worker", "envoy"}[i%3],
		Netns: 4026531840 + uint32(i%3), CgroupID: uint64(9000 + i%11), LocalWorkload: flow.Workload{Name: "api", Namespace: "prod", Node: "n1"}}
	switch i % 10 {
	case 3:
		r.RemoteAddr = netip.MustParseAddr("2001:db8::7")
		r.Close, r.Error = flow.CloseConnectFailed, "ECONNREFUSED"
	case 5:
		r.Preexisting, r.StartTime, r.Role, r.Pid = true, 0, flow.RoleUnknown, 0
	case 7:
		r.LocalWorkload = flow.Workload{Name: "sidecar-job", Namespace: "batch", Pod: "job-1", PodUID: "u-1", Node: "n1", Cluster: "c"}
	}
	return r
}

// TestUDPEndToEnd: batches cross real sockets on loopback, several of them split over datagrams, and the
// sink holds exactly the records sent, field for field, with no datagram lost.
func TestUDPEndToEnd(t *testing.T) {
	sink, srv, u := startUDP(t, 0)

	const batches = 60
	want := map[uint64]flow.Record{}
	w := flow.Workload{Name: "api", Namespace: "prod", Node: "n1"}
	i := 0
	for seq := 1; seq <= batches; seq++ {
		recs := make([]flow.Record, 1+seq*7%150) // 1 to 149 records: one datagram to several
		for k := range recs {
			recs[k] = udpRecord(i)
			want[recs[k].BytesSent] = recs[k]
			i++
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		status, err := u.Send(ctx, wire.NewBatch("exp-udp", uint64(seq), time.Now().UnixNano(), w, recs))
		cancel()
		if err != nil || status != flowv1.AckStatus_ACK_STATUS_STORED {
			t.Fatalf("send batch %d: %v %v", seq, status, err)
		}
	}
	st := u.Stats()
	if st.Datagrams <= batches || st.Records != uint64(len(want)) || st.Abandoned != 0 {
		t.Fatalf("stats %+v: want more datagrams than %d batches, %d records, none abandoned", st, batches, len(want))
	}
	t.Logf("%d records in %d batches made %d datagrams, %.1f B per record", len(want), batches, st.Datagrams, float64(st.Bytes)/float64(st.Records))

	deadline := time.Now().Add(10 * time.Second)
	for sink.len() < len(want) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.records) != len(want) {
		t.Fatalf("%d records stored, want %d", len(sink.records), len(want))
	}
	for _, r := range sink.records {
		if want[r.BytesSent] != r {
			t.Fatalf("record differs:\n got %+v\nwant %+v", r, want[r.BytesSent])
		}
		delete(want, r.BytesSent)
	}
	if lost, got := srv.Lost("exp-udp"), srv.Received("exp-udp"); lost != 0 || got != st.Datagrams {
		t.Errorf("collector: %d lost, %d received; want 0 and %d", lost, got, st.Datagrams)
	}
}

// TestUDPSendRefuses: what cannot be sent spends no sequence number, so the collector sees no gap.
func TestUDPSendRefuses(t *testing.T) {
	sink, srv, u := startUDP(t, 600)
	w := flow.Workload{Name: "api"}

	big := udpRecord(1)
	rng := rand.New(rand.NewPCG(1, 1))
	var sb strings.Builder
	for range 1200 { // random letters: zstd cannot shrink them below 600 bytes
		sb.WriteByte(byte('a' + rng.IntN(26)))
	}
	big.Comm = sb.String()
	status, err := u.Send(context.Background(), wire.NewBatch("exp-r", 1, 1, w, []flow.Record{udpRecord(0), big}))
	if err == nil || status != flowv1.AckStatus_ACK_STATUS_REJECTED {
		t.Errorf("a record larger than a datagram: %v, %v; want REJECTED and an error", status, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := u.Send(ctx, wire.NewBatch("exp-r", 2, 1, w, []flow.Record{udpRecord(2)})); !errors.Is(err, context.Canceled) {
		t.Errorf("send with an ended context: %v", err)
	}
	if st := u.Stats(); st != (transport.UDPStats{}) {
		t.Errorf("stats after two refusals: %+v, want nothing sent", st)
	}
	if _, err := u.Send(context.Background(), wire.NewBatch("exp-r", 3, 1, w, []flow.Record{udpRecord(3)})); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for sink.len() < 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got, lost := srv.Received("exp-r"), srv.Lost("exp-r"); got != 1 || lost != 0 {
		t.Errorf("collector: %d received, %d lost; want 1 and 0 (the refused sends spent no sequence number)", got, lost)
	}
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Send(context.Background(), wire.NewBatch("exp-r", 4, 1, w, []flow.Record{udpRecord(4)})); err == nil {
		t.Error("send after close succeeded")
	}
}

func TestNewUDPRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, addr string
		key        []byte
		size       int
	}{
		{"short key", "127.0.0.1:9", []byte("short"), 0},
		{"datagram too small", "127.0.0.1:9", udpKey, 100},
		{"datagram too large", "127.0.0.1:9", udpKey, 70000},
		{"no port", "127.0.0.1", udpKey, 0},
	} {
		if u, err := transport.NewUDP(tc.addr, tc.key, tc.size); err == nil {
			u.Close()
			t.Errorf("%s: accepted", tc.name)
		}
	}
}
