package ingest

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/flowlens/flowlens/exporter/transport"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/udpwire"
	"github.com/flowlens/flowlens/internal/wire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// keepSink keeps every batch it is given.
type keepSink struct {
	mu  sync.Mutex
	got []*Batch
}

func (s *keepSink) Put(_ context.Context, b *Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, b)
	return nil
}

func (s *keepSink) batches() []*Batch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Batch(nil), s.got...)
}

var arrivalWorkload = flow.Workload{Name: "checkout", Namespace: "shop", Pod: "checkout-0", Node: "node-3", Cluster: "lab"}

// statusBatch is exporter e's batch seq of n records, sent now, with a status.
func statusBatch(seq uint64, n int) *flowv1.FlowBatch {
	b := wire.NewBatch("e", seq, time.Now().UnixNano(), arrivalWorkload, testRecords(n, int(seq)*1000))
	b.Status = &flowv1.ExporterStatus{Transport: "udp", TransportReason: "pinned in the config", StartedAt: 42,
		Drops: map[string]uint64{"queue/full": 3}, QueuedRecords: 7}
	return b
}

// checkArrival: what the sink got says who sent it, when, how it came and how large it was.
func checkArrival(t *testing.T, got *Batch, sent *flowv1.FlowBatch, transport string, before time.Time) {
	t.Helper()
	if got.Transport != transport || got.ExporterID != "e" || got.Seq != sent.Seq || got.Host != "node-3" ||
		got.Workload != arrivalWorkload || got.SendTime != sent.SendTime || len(got.Records) != len(sent.Records) {
		t.Errorf("%s: batch %+v", transport, got)
	}
	if got.ReceivedAt < before.UnixNano() || got.ReceivedAt > time.Now().UnixNano() {
		t.Errorf("%s: received at %d, not between %d and now", transport, got.ReceivedAt, before.UnixNano())
	}
	if !proto.Equal(got.Status, sent.Status) {
		t.Errorf("%s: status %v, want %v", transport, got.Status, sent.Status)
	}
}

// TestArrivalGRPC: over a real gRPC stream from the exporter's transport, the batch's size is the message
// as it came: compressed (zstd), with gRPC's 5-byte frame header.
func TestArrivalGRPC(t *testing.T) {
	sink := &keepSink{}
	h := &Handler{Sink: sink, Dedup: NewDedup(10), Metrics: NewMetrics(prometheus.NewRegistry()), Log: zaptest.NewLogger(t)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewGRPCServer(h)
	go srv.Serve(ln)
	defer srv.Stop()
	g, err := transport.NewGRPC(ln.Addr().String(), insecure.NewCredentials())
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	before := time.Now()
	b := statusBatch(1, 200)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if st, err := g.Send(ctx, b); err != nil || st != flowv1.AckStatus_ACK_STATUS_STORED {
		t.Fatalf("send: %v %v", st, err)
	}
	got := sink.batches()
	if len(got) != 1 {
		t.Fatalf("%d batches", len(got))
	}
	checkArrival(t, got[0], b, "grpc", before)
	if size := proto.Size(b); got[0].WireBytes <= 5 || got[0].WireBytes >= size {
		t.Errorf("wire bytes %d: want the zstd message, above 5 and below its %d bytes of protobuf", got[0].WireBytes, size)
	}
}

// TestArrivalHTTPS: over HTTPS the size is the body as it came.
func TestArrivalHTTPS(t *testing.T) {
	sink := &keepSink{}
	h := &Handler{Sink: sink, Dedup: NewDedup(10), Metrics: NewMetrics(prometheus.NewRegistry()), Log: zaptest.NewLogger(t)}
	hs, err := NewHTTPS(h, HTTPSOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer hs.Close()
	before := time.Now()
	b := statusBatch(1, 20)
	body, _ := proto.Marshal(b)
	req := httptest.NewRequest("POST", BatchPath, bytes.NewReader(body))
	req.Header.Set("Content-Type", ProtobufType)
	w := httptest.NewRecorder()
	hs.ServeHTTP(w, req)
	got := sink.batches()
	if w.Code != http.StatusOK || len(got) != 1 {
		t.Fatalf("answer %d, %d batches", w.Code, len(got))
	}
	checkArrival(t, got[0], b, "https", before)
	if got[0].WireBytes != len(body) {
		t.Errorf("wire bytes %d, want the body's %d", got[0].WireBytes, len(body))
	}
}

// TestArrivalUDP: over UDP the size is the datagram, and each batch carries how many of the exporter's
// datagrams are missing by then: 2 after a jump over two sequence numbers, 1 once one of them turns up.
func TestArrivalUDP(t *testing.T) {
	sink := &keepSink{}
	h := &Handler{Sink: sink, Dedup: NewDedup(10), Metrics: NewMetrics(prometheus.NewRegistry()), Log: zaptest.NewLogger(t)}
	s, err := newUDPServer(udpTestKey, h, prometheus.NewRegistry(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := udpwire.NewCodec(udpTestKey)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := time.Now()
	from := netip.MustParseAddrPort("127.0.0.1:5000")
	var sent []*flowv1.FlowBatch
	var sizes []int
	made := map[uint64]*flowv1.FlowBatch{} // sent in order, so their send times rise with their numbers
	for _, seq := range []uint64{1, 3, 4} {
		made[seq] = statusBatch(seq, 5)
	}
	for _, seq := range []uint64{1, 4, 3} { // arriving: 2 and 3 skipped, then 3 late
		b := made[seq]
		d, err := c.Append(nil, seq, b)
		if err != nil {
			t.Fatal(err)
		}
		s.handle(d, from)
		sent, sizes = append(sent, b), append(sizes, len(d))
	}
	got := sink.batches()
	if len(got) != 3 {
		t.Fatalf("%d batches", len(got))
	}
	for i, want := range []uint64{0, 2, 1} {
		checkArrival(t, got[i], sent[i], "udp", before)
		if got[i].LostDatagrams != want || got[i].WireBytes != sizes[i] {
			t.Errorf("datagram %d: %d missing, %d bytes; want %d, %d", i, got[i].LostDatagrams, got[i].WireBytes, want, sizes[i])
		}
	}
}
