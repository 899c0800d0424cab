package transport

import (
	"context"
	"sync"

	"google.golang.org/protobuf/proto"

	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// Buffer holds batches between the exporter and the transport, within a budget of batches and bytes. Push
// never blocks: beyond the budget the oldest batches not in flight are dropped, and their records counted.
// A batch leaves only when the collector has answered for it. Safe for concurrent use.
type Buffer struct {
	mu         sync.Mutex
	ready      chan struct{} // signalled when a batch is pushed
	queue      []entry
	bytes      int
	maxBatches int
	maxBytes   int
	dropped    func(records int) // counts records evicted over budget
}

type entry struct {
	b        *flowv1.FlowBatch
	size     int
	inFlight bool
}

// NewBuffer holds up to maxBatches batches and maxBytes bytes (protobuf size). dropped is called with the
// number of records of every evicted batch.
func NewBuffer(maxBatches, maxBytes int, dropped func(records int)) *Buffer {
	return &Buffer{ready: make(chan struct{}, 1), maxBatches: maxBatches, maxBytes: maxBytes, dropped: dropped}
}

// Push adds b, evicting the oldest batches that are not in flight while over budget.
func (q *Buffer) Push(b *flowv1.FlowBatch) {
	size := proto.Size(b)
	q.mu.Lock()
	q.queue = append(q.queue, entry{b: b, size: size})
	q.bytes += size
	for i := 0; i < len(q.queue)-1 && (len(q.queue) > q.maxBatches || q.bytes > q.maxBytes); {
		if q.queue[i].inFlight {
			i++
			continue
		}
		q.bytes -= q.queue[i].size
		q.dropped(len(q.queue[i].b.Records))
		q.queue = append(q.queue[:i], q.queue[i+1:]...)
	}
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// Next returns the oldest batch and marks it in flight, waiting for one until ctx ends.
func (q *Buffer) Next(ctx context.Context) (*flowv1.FlowBatch, error) {
	for {
		q.mu.Lock()
		if len(q.queue) > 0 {
			q.queue[0].inFlight = true
			b := q.queue[0].b
			q.mu.Unlock()
			return b, nil
		}
		q.mu.Unlock()
		select {
		case <-q.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Done ends b's flight: answered removes it, otherwise it stays at the head to be sent again.
func (q *Buffer) Done(b *flowv1.FlowBatch, answered bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := range q.queue {
		if q.queue[i].b != b {
			continue
		}
		if answered {
			q.bytes -= q.queue[i].size
			q.queue = append(q.queue[:i], q.queue[i+1:]...)
		} else {
			q.queue[i].inFlight = false
		}
		return
	}
}

// Len returns the batches and records held.
func (q *Buffer) Len() (batches, records int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range q.queue {
		records += len(e.b.Records)
	}
	return len(q.queue), records
}
