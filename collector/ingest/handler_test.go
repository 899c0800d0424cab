package ingest

import (
	"context"
	"errors"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/wire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// scriptedSink does what the test says, once per call.
type scriptedSink struct {
	next   func() error
	stored int
}

func (s *scriptedSink) Put(context.Context, *Batch) error {
	if err := s.next(); err != nil {
		return err
	}
	s.stored++
	return nil
}

// TestResendDuringAFailingStore: a resend that arrives while the first copy is being stored is told to
// retry, not that it is a duplicate; when the first store fails, the retry is stored. Once.
func TestResendDuringAFailingStore(t *testing.T) {
	sink := &scriptedSink{}
	h := &Handler{Sink: sink, Dedup: NewDedup(10), Metrics: NewMetrics(prometheus.NewRegistry()), Log: zaptest.NewLogger(t)}
	b := wire.NewBatch("e", 1, 1, flow.Workload{}, nil)

	var resend *flowv1.BatchAck
	sink.next = func() error {
		resend = h.Handle(context.Background(), "https", b) // arrives while this store is in progress
		return errors.New("disk full")
	}
	if ack := h.Handle(context.Background(), "grpc", b); ack.Status != flowv1.AckStatus_ACK_STATUS_RETRY {
		t.Fatalf("failed store answered %v, want RETRY", ack.Status)
	}
	if resend.Status != flowv1.AckStatus_ACK_STATUS_RETRY {
		t.Fatalf("resend during the store answered %v, want RETRY (DUPLICATE would lose the batch)", resend.Status)
	}
	sink.next = func() error { return nil }
	if ack := h.Handle(context.Background(), "https", b); ack.Status != flowv1.AckStatus_ACK_STATUS_STORED {
		t.Fatalf("retry after the failed store answered %v, want STORED", ack.Status)
	}
	if ack := h.Handle(context.Background(), "grpc", b); ack.Status != flowv1.AckStatus_ACK_STATUS_DUPLICATE || sink.stored != 1 {
		t.Fatalf("a further resend: %v with %d stores, want DUPLICATE and 1", ack.Status, sink.stored)
	}
}

// TestPanickingSink: a sink that panics gets RETRY, the server goroutine survives, and the claim is
// released so the resend is stored.
func TestPanickingSink(t *testing.T) {
	sink := &scriptedSink{next: func() error { panic("bug in the store") }}
	h := &Handler{Sink: sink, Dedup: NewDedup(10), Metrics: NewMetrics(prometheus.NewRegistry()), Log: zaptest.NewLogger(t)}
	b := wire.NewBatch("e", 1, 1, flow.Workload{}, nil)
	if ack := h.Handle(context.Background(), "grpc", b); ack.Status != flowv1.AckStatus_ACK_STATUS_RETRY {
		t.Fatalf("panicking sink answered %v, want RETRY", ack.Status)
	}
	sink.next = func() error { return nil }
	if ack := h.Handle(context.Background(), "grpc", b); ack.Status != flowv1.AckStatus_ACK_STATUS_STORED {
		t.Fatalf("resend after the panic answered %v, want STORED", ack.Status)
	}
}

// TestStoreSkipsBatchesStoredOverAckedTransports: a batch stored over gRPC and resent over UDP is counted
// as a duplicate, not stored twice.
func TestStoreSkipsBatchesStoredOverAckedTransports(t *testing.T) {
	sink := &scriptedSink{next: func() error { return nil }}
	h := &Handler{Sink: sink, Dedup: NewDedup(10), Metrics: NewMetrics(prometheus.NewRegistry()), Log: zaptest.NewLogger(t)}
	b := wire.NewBatch("e", 7, 1, flow.Workload{}, nil)
	h.Handle(context.Background(), "grpc", b)
	if n, err := h.Store(context.Background(), Arrival{Transport: "udp"}, b); err != nil || n != 0 || sink.stored != 1 {
		t.Fatalf("resend over UDP: stored %d records (%v), sink %d; want 0 and 1", n, err, sink.stored)
	}
}
