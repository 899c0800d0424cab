package natsflows

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/fleet"
	"github.com/flowlens/flowlens/collector/store"
)

// Storer is the part of the flow store a Consumer writes to.
type Storer interface {
	StreamCursor(ctx context.Context, stream string) (uint64, error)
	Write(ctx context.Context, w store.Write) error
}

// ConsumerConfig says which stream to store and whose messages to skip.
type ConsumerConfig struct {
	// Stream is the flows stream (default FLOWLENS_FLOWS).
	Stream string
	// Origin is this replica's name: messages it published (OriginHeader) are already in its store.
	Origin string
	// Batch is how many messages one store write takes at most. Default 256.
	Batch int
	// Retry is the pause after a failed store write before the same write is tried again. Default 1s.
	Retry time.Duration
}

// Consumer stores in this replica's flow store the flows that the other collector replicas
// published, so that every replica's query API and console answer for the whole fleet rather than for
// the exporters that happened to connect to it. Its position in the stream is kept in the store itself
// (store.Write.Cursor, in the transaction that stores the messages), so a restart resumes exactly
// after the last message stored: nothing twice, nothing skipped that the stream still holds.
type Consumer struct {
	js    jetstream.JetStream
	cfg   ConsumerConfig
	store Storer
	log   *zap.Logger

	messages *prometheus.CounterVec
	records  prometheus.Counter
	lag      prometheus.Gauge
	failures prometheus.Counter
}

// NewConsumer returns a consumer of cfg.Stream into st; Run starts it.
func NewConsumer(js jetstream.JetStream, cfg ConsumerConfig, st Storer, log *zap.Logger, reg prometheus.Registerer) (*Consumer, error) {
	if cfg.Stream == "" {
		cfg.Stream = "FLOWLENS_FLOWS"
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 256
	}
	if cfg.Retry <= 0 {
		cfg.Retry = time.Second
	}
	c := &Consumer{js: js, cfg: cfg, store: st, log: log.With(zap.String("component", "natsflows-consumer")),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_nats_flows_consumed_messages_total",
			Help: "Messages of the flows stream read by this replica, by result: stored, own (published by this replica, already stored), bad (not a flow batch: skipped).",
		}, []string{"result"}),
		records: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowlens_nats_flows_consumed_records_total", Help: "Flow records other replicas published, stored by this one.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowlens_nats_flows_consumer_write_errors_total",
			Help: "Failed writes of the stream's flows to the store; the same messages are written again, never skipped, so a store that keeps failing holds the consumer (watch the pending messages grow).",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flowlens_nats_flows_consumer_pending_messages", Help: "Messages of the flows stream not yet read by this replica.",
		}),
	}
	for _, r := range []string{"stored", "own", "bad"} {
		c.messages.WithLabelValues(r)
	}
	if err := fleet.Register(reg, "nats consumer", c.messages, c.records, c.lag, c.failures); err != nil {
		return nil, err
	}
	return c, nil
}

// Run stores the stream's messages until ctx ends. It returns an error only when the stream cannot be
// read at start; later failures (the server gone, a store write refused) are logged and retried.
func (c *Consumer) Run(ctx context.Context) error {
	cons, err := c.open(ctx)
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		batch, err := cons.Fetch(c.cfg.Batch, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			c.log.Warn("fetch flows", zap.Error(err))
			sleep(ctx, c.cfg.Retry)
			continue
		}
		w := store.Write{}
		for m := range batch.Messages() {
			meta, err := m.Metadata()
			if err != nil {
				continue // not a stream message; never sent by an ordered consumer
			}
			w.Cursor = &store.Cursor{Stream: c.cfg.Stream, Seq: meta.Sequence.Stream}
			c.lag.Set(float64(meta.NumPending))
			if c.cfg.Origin != "" && m.Headers().Get(OriginHeader) == c.cfg.Origin {
				c.messages.WithLabelValues("own").Inc()
				continue
			}
			recs, err := fleet.Decode(m.Data())
			if err != nil {
				c.messages.WithLabelValues("bad").Inc()
				c.log.Warn("skipping a message of the flows stream", zap.Uint64("seq", meta.Sequence.Stream), zap.Error(err))
				continue
			}
			c.messages.WithLabelValues("stored").Inc()
			w.Flows = append(w.Flows, recs...)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.Canceled) {
			c.log.Debug("fetch ended", zap.Error(err))
		}
		if w.Cursor == nil {
			continue
		}
		if !c.write(ctx, w) {
			return nil
		}
		c.records.Add(float64(len(w.Flows)))
	}
	return nil
}

// open starts an ordered consumer just after the store's cursor.
func (c *Consumer) open(ctx context.Context) (jetstream.Consumer, error) {
	seq, err := c.store.StreamCursor(ctx, c.cfg.Stream)
	if err != nil {
		return nil, err
	}
	cc := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if seq > 0 {
		cc = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: seq + 1}
	}
	cons, err := c.js.OrderedConsumer(ctx, c.cfg.Stream, cc)
	if err != nil {
		return nil, fmt.Errorf("consume stream %s: %w", c.cfg.Stream, err)
	}
	c.log.Info("storing the fleet's flows", zap.String("stream", c.cfg.Stream), zap.Uint64("after_seq", seq))
	return cons, nil
}

// write stores w, retrying until it is stored or ctx ends (false): the messages are held, not skipped.
func (c *Consumer) write(ctx context.Context, w store.Write) bool {
	for {
		err := c.store.Write(ctx, w)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		c.failures.Inc()
		c.log.Warn("store flows of the stream, retrying", zap.Int("records", len(w.Flows)), zap.Error(err))
		if !sleep(ctx, c.cfg.Retry) {
			return false
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
