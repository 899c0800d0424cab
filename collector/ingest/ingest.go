// Package ingest is the collector's receiving half: listeners that decode batches, refuse bad ones, drop
// duplicates, and hand the rest to one Sink, acknowledging each batch only once the sink has made it durable.
package ingest

import (
	"context"
	"errors"

	"github.com/flowlens/flowlens/internal/flow"
)

// Batch is one decoded FlowBatch.
type Batch struct {
	ExporterID string
	Seq        uint64
	Transport  string // grpc, https or udp
	Records    []flow.Record
}

// Sink takes decoded batches. Put returns nil once the batch is durable, ErrFull when the pipeline cannot
// take it now (the exporter backs off and resends), or another error.
type Sink interface {
	Put(ctx context.Context, b *Batch) error
}

// ErrFull says the pipeline is full: the batch was not taken and should be resent later.
var ErrFull = errors.New("pipeline full")
