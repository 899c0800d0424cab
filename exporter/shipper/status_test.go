package shipper_test

import (
	"context"
	"maps"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/flowlens/flowlens/collector/ingest"
	"github.com/flowlens/flowlens/internal/flow"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// statuses keeps each arriving batch's status and record count.
type statuses struct {
	mu      sync.Mutex
	got     []*flowv1.ExporterStatus
	records int
}

func (s *statuses) Put(_ context.Context, b *ingest.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.got = append(s.got, b.Status)
	s.records += len(b.Records)
	return nil
}

func (s *statuses) snapshot() ([]*flowv1.ExporterStatus, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*flowv1.ExporterStatus(nil), s.got...), s.records
}

// TestStatusReportsDropsAndBacklog: with the collector down, five one-record batches meet a buffer of
// two, so three are evicted whatever the sender is doing; once the collector is up, the two left arrive
// saying so (transport/buffer_full 3, and the kernel's drops the agent hands over, zeros left out),
// with their transport and why, when the exporter started, and the backlog behind each: 1, then 0.
func TestStatusReportsDropsAndBacklog(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // the collector is down

	before := time.Now().UnixNano()
	ship, _, _ := newShipper(t, "--output", "collector", "--collector-grpc-addr", addr, "--collector-insecure",
		"--collector-transport", "grpc", "--batch-records", "1", "--buffer-batches", "2", "--send-timeout", "1s")
	after := time.Now().UnixNano()
	ship.SetKernelDrops(func() (map[string]uint64, error) {
		return map[string]uint64{"ringbuf_full": 7, "recursion": 0}, nil
	})
	for i := range 5 {
		r := flow.Record{LocalAddr: loopback, RemoteAddr: loopback, StartTime: int64(i + 1), EndTime: int64(i + 2), Close: flow.CloseNormal}
		ship.Write(&r)
	}

	got := &statuses{}
	serveIngest(t, addr, got) // the collector comes up
	if err := ship.Close(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	sts, records := got.snapshot()
	if len(sts) != 2 || records != 2 {
		t.Fatalf("%d batches, %d records arrived; want 2 and 2", len(sts), records)
	}
	wantDrops := map[string]uint64{"transport/buffer_full": 3, "kernel/ringbuf_full": 7}
	for i, st := range sts {
		if st == nil {
			t.Fatalf("batch %d: no status", i)
		}
		if st.Transport != "grpc" || st.TransportReason != "pinned in the config" {
			t.Errorf("batch %d: transport %q (%q), want grpc (pinned in the config)", i, st.Transport, st.TransportReason)
		}
		if st.StartedAt < before || st.StartedAt > after {
			t.Errorf("batch %d: started at %d, not between %d and %d", i, st.StartedAt, before, after)
		}
		if !maps.Equal(st.Drops, wantDrops) {
			t.Errorf("batch %d: drops %v, want %v", i, st.Drops, wantDrops)
		}
		if want := uint64(1 - i); st.QueuedRecords != want {
			t.Errorf("batch %d: %d records queued behind it, want %d", i, st.QueuedRecords, want)
		}
	}
}
