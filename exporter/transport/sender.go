package transport

import (
	"context"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"

	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// Sender delivers batches from a Buffer through a Transport, one at a time, in order.
type Sender struct {
	Buf      *Buffer
	T        Transport
	Timeout  time.Duration     // how long one batch may wait for its ack
	Rejected func(records int) // records of batches the collector refused: never resent
	// Stamp, when set, is called with each batch just before each send of it, so that what the batch
	// says of the exporter (its status) is as of when it leaves. It runs on the sending goroutine.
	Stamp   func(b *flowv1.FlowBatch)
	Log     *zap.Logger
	backoff time.Duration
}

const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// Run delivers until ctx ends. A send in flight is not cut short: it finishes within Timeout, so that a
// stop never turns into a resend.
func (s *Sender) Run(ctx context.Context) {
	for {
		b, err := s.Buf.Next(ctx)
		if err != nil {
			return
		}
		if !s.deliver(context.WithoutCancel(ctx), b) {
			if !s.wait(ctx) {
				return
			}
		}
	}
}

// deliver sends b once and reports whether the collector answered for it for good.
func (s *Sender) deliver(ctx context.Context, b *flowv1.FlowBatch) bool {
	if s.Stamp != nil {
		s.Stamp(b)
	}
	sctx, cancel := context.WithTimeout(ctx, s.Timeout)
	status, err := s.T.Send(sctx, b)
	cancel()
	switch {
	case status == flowv1.AckStatus_ACK_STATUS_REJECTED:
		// Final, whatever came with it: a batch the collector refuses, or one a transport cannot carry at
		// all (a record too big for a UDP datagram), would only be refused again.
		s.Log.Error("batch rejected", zap.String("transport", s.T.Name()), zap.Uint64("seq", b.Seq),
			zap.Int("records", len(b.Records)), zap.Error(err))
		s.Rejected(len(b.Records))
		s.Buf.Done(b, true)
		return true
	case err != nil:
		s.Log.Warn("send batch", zap.String("transport", s.T.Name()), zap.Uint64("seq", b.Seq), zap.Error(err))
	case status == flowv1.AckStatus_ACK_STATUS_STORED || status == flowv1.AckStatus_ACK_STATUS_DUPLICATE:
		s.Buf.Done(b, true)
		s.backoff = 0
		return true
	}
	s.Buf.Done(b, false) // RETRY, or no answer: it stays first in line
	return false
}

// wait sleeps for the next backoff step, doubled each time with jitter so a fleet does not return in step.
func (s *Sender) wait(ctx context.Context) bool {
	s.backoff = min(max(2*s.backoff, minBackoff), maxBackoff)
	d := s.backoff/2 + rand.N(s.backoff/2+1)
	select {
	case <-time.After(d):
		return true
	case <-ctx.Done():
		return false
	}
}

// Drain delivers what the buffer holds until it is empty or ctx ends, for shutdown. It returns the
// records left undelivered.
func (s *Sender) Drain(ctx context.Context) int {
	for {
		if n, _ := s.Buf.Len(); n == 0 {
			return 0
		}
		b, err := s.Buf.Next(ctx)
		if err != nil {
			_, left := s.Buf.Len()
			return left
		}
		if !s.deliver(ctx, b) && !s.wait(ctx) {
			_, left := s.Buf.Len()
			return left
		}
	}
}
