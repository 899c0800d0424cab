// Package ingest is the collector's receiving half: listeners that decode batches, refuse bad ones, drop
// duplicates, and hand the rest to one Sink, acknowledging each batch only once the sink has made it durable.
package ingest

import (
	"context"
	"errors"
	"time"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/wire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// Batch is one decoded FlowBatch.
type Batch struct {
	ExporterID string
	Seq        uint64
	Transport  string // grpc, https or udp
	Records    []flow.Record

	// What the collector's fleet view (collector/exporters) keeps of each exporter, beside the records.
	Host       string
	Workload   flow.Workload          // the exporter's own
	SendTime   int64                  // Unix ns when the exporter sent it
	ReceivedAt int64                  // Unix ns when the collector had decoded it
	WireBytes  int                    // as it arrived: the gRPC message, the HTTPS body, the datagram
	Status     *flowv1.ExporterStatus // what the exporter says of itself; nil if it said nothing
	// LostDatagrams is, for UDP, how many of the exporter's datagrams are missing so far (sequence numbers
	// skipped and not arrived since); 0 for the acked transports, which lose nothing on the way.
	LostDatagrams uint64
}

// Arrival is how a batch reached the collector.
type Arrival struct {
	Transport     string    // grpc, https or udp
	Bytes         int       // as it arrived (Batch.WireBytes)
	At            time.Time // when it was decoded
	LostDatagrams uint64    // Batch.LostDatagrams
}

// Sink takes decoded batches. Put returns nil once the batch is durable, ErrFull when the pipeline cannot
// take it now (the exporter backs off and resends), or another error.
type Sink interface {
	Put(ctx context.Context, b *Batch) error
}

// Refuser is implemented by a Sink that wants to hear of batches refused for backpressure before they
// reached it: HTTPS ingest's limit of requests in flight. ErrFull from the sink itself it sees itself.
type Refuser interface {
	Refused(transport string)
}

// ErrFull says the pipeline is full: the batch was not taken and should be resent later.
var ErrFull = errors.New("pipeline full")

// newBatch is what the sink gets of b, whose records are decoded.
func newBatch(b *flowv1.FlowBatch, records []flow.Record, a Arrival) *Batch {
	return &Batch{ExporterID: b.ExporterId, Seq: b.Seq, Transport: a.Transport, Records: records,
		Host: b.Host, Workload: wire.WorkloadFromProto(b.Workload), SendTime: b.SendTime, ReceivedAt: a.At.UnixNano(),
		WireBytes: a.Bytes, Status: b.Status, LostDatagrams: a.LostDatagrams}
}
