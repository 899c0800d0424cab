// Package transport moves flow batches from the exporter to the collector. Each transport is one file
// behind the Transport interface; the Sender delivers from a bounded Buffer through one of them.
package transport

import (
	"context"

	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// Transport sends one batch and returns the collector's answer. Send is called from one goroutine at a
// time; it must honour ctx's deadline.
type Transport interface {
	Name() string
	Send(ctx context.Context, b *flowv1.FlowBatch) (flowv1.AckStatus, error)
	Close() error
}

// Hinter is implemented by transports that carry the collector's preferred transport back in its answers.
// Hint returns the latest one, or "".
type Hinter interface {
	Hint() string
}
