// Package natsflows publishes enriched flows to a NATS JetStream stream, one subject per cluster and
// namespace of the flows' local workload, so consumers subscribe to exactly the slice they need:
//
//	flowlens.flows.<cluster>.<namespace>   e.g. flowlens.flows.prod-eu.payments, flowlens.flows.*.payments
//
// Each message is a flowlens.flow.v1.FlowBatch (see package fleet). Publish returns only when JetStream
// has acknowledged every message, so a caller may acknowledge its own sources after that.
package natsflows

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/fleet"
	"github.com/flowlens/flowlens/internal/flow"
)

// Config says where flows go and how long the stream keeps them. Zero values take the defaults.
type Config struct {
	// Stream defaults: FLOWLENS_FLOWS, subjects flowlens.flows.<cluster>.<namespace>, 24h, no size cap.
	fleet.StreamSettings `mapstructure:",squash"`
	// Duplicates is the window in which JetStream drops a message whose Nats-Msg-Id it has seen: a
	// retried Publish of the same records within it stores them once. Default 2m.
	Duplicates time.Duration `mapstructure:"duplicates"`
	// MaxMessageBytes bounds one message's payload; it is lowered to the server's max_payload less room
	// for headers. Default 256 KiB (about 2,000 flows).
	MaxMessageBytes int `mapstructure:"max_message_bytes"`
	// Timeout bounds one Publish whose context has no deadline. Default 10s.
	Timeout time.Duration `mapstructure:"timeout"`
	// Origin names the publishing replica in each message's OriginHeader, so that a replica that
	// stores the stream (Consumer) skips the flows it stored itself.
	Origin string `mapstructure:"-"`
}

// OriginHeader names the collector replica that published a message.
const OriginHeader = "Flowlens-Origin"

func (c Config) withDefaults() Config {
	c.StreamSettings = c.StreamSettings.WithDefaults("FLOWLENS_FLOWS", "flowlens.flows")
	if c.Duplicates == 0 {
		c.Duplicates = 2 * time.Minute
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 256 << 10
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	return c
}

// StreamConfig is the stream New creates, from c with its defaults.
func (c Config) StreamConfig() jetstream.StreamConfig {
	c = c.withDefaults()
	sc := c.StreamSettings.Config("flowlens enriched flows: flowlens.flow.v1.FlowBatch per message")
	sc.Duplicates = c.Duplicates
	return sc
}

// Publisher publishes flows. It is safe for concurrent use.
type Publisher struct {
	js  jetstream.JetStream
	cfg Config
	log *zap.Logger
	m   fleet.OutputMetrics
}

// New creates or updates the stream and returns a publisher on js (see fleet.Connect). It fails when
// the server cannot be reached or refuses the stream config.
func New(ctx context.Context, js jetstream.JetStream, cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Publisher, error) {
	cfg = cfg.withDefaults()
	if cfg.MaxMessageBytes < 1024 || cfg.MaxAge < 0 || cfg.Duplicates < 0 || cfg.Timeout < 0 {
		return nil, fmt.Errorf("natsflows config: max_message_bytes >= 1024 and non-negative durations required")
	}
	if _, err := js.CreateOrUpdateStream(ctx, cfg.StreamConfig()); err != nil {
		return nil, fmt.Errorf("create stream %s: %w", cfg.Stream, err)
	}
	m, err := fleet.NewOutputMetrics(reg, "nats")
	if err != nil {
		return nil, err
	}
	return &Publisher{js: js, cfg: cfg, log: log.With(zap.String("component", "natsflows")), m: m}, nil
}

// Subject is where r is published: the prefix, then its local workload's cluster and namespace, each
// made a valid token ("_" when empty).
func (p *Publisher) Subject(r *flow.Enriched) string {
	return p.cfg.SubjectPrefix + "." + fleet.Token(r.LocalWorkload.Cluster) + "." + fleet.Token(r.LocalWorkload.Namespace)
}

// Publish sends recs, grouped into one message per subject and exporter (split to stay under the size
// bound), publishing them all asynchronously, and returns once JetStream has acknowledged every one. An
// error means some may not be stored: publish the same records again. Each message carries a
// Nats-Msg-Id derived from its content, so the messages that were stored the first time are dropped as
// duplicates (within Config.Duplicates) and the records are stored once.
func (p *Publisher) Publish(ctx context.Context, recs []flow.Enriched) error {
	if len(recs) == 0 {
		return nil
	}
	ctx, cancel := fleet.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	start := time.Now()
	type pending struct {
		f             jetstream.PubAckFuture
		records, size int
	}
	var (
		sent  []pending
		errs  []error
		total int
	)
	fail := func(n int, err error) {
		p.m.Done("error", n, 0)
		errs = append(errs, err)
	}
	limit := p.maxMessageBytes()
	for _, g := range fleet.GroupBy(recs, p.Subject) {
		for _, msg := range fleet.Encode(g.Exporter, g.Key, g.Records, limit) {
			total++
			m := &nats.Msg{Subject: g.Key, Data: msg.Data, Header: nats.Header{fleet.SchemaHeader: []string{fleet.Schema}}}
			if p.cfg.Origin != "" {
				m.Header.Set(OriginHeader, p.cfg.Origin)
			}
			f, err := p.js.PublishMsgAsync(m, jetstream.WithMsgID(msg.ID), jetstream.WithExpectStream(p.cfg.Stream))
			if err != nil {
				fail(msg.Records, fmt.Errorf("publish to %s: %w", g.Key, err))
				continue
			}
			sent = append(sent, pending{f, msg.Records, len(msg.Data)})
		}
	}
	for _, s := range sent {
		select {
		case ack := <-s.f.Ok():
			result := "stored"
			if ack.Duplicate {
				result = "duplicate"
			}
			p.m.Done(result, s.records, s.size)
		case err := <-s.f.Err():
			fail(s.records, fmt.Errorf("publish to %s: %w", s.f.Msg().Subject, err))
		case <-ctx.Done():
			fail(s.records, fmt.Errorf("publish to %s: no ack: %w", s.f.Msg().Subject, ctx.Err()))
		}
	}
	p.m.Seconds.Observe(time.Since(start).Seconds())
	if len(errs) > 0 {
		// The first error says why; the rest are nearly always the same cause.
		return fmt.Errorf("nats flows: %d of %d messages not acknowledged, first: %w", len(errs), total, errs[0])
	}
	return nil
}

// maxMessageBytes is the configured bound, lowered to what the server takes with room for headers.
func (p *Publisher) maxMessageBytes() int {
	limit := p.cfg.MaxMessageBytes
	if mp := p.js.Conn().MaxPayload(); mp > 0 && int(mp)-4096 < limit {
		limit = max(int(mp)-4096, 1024)
	}
	return limit
}
