// Package kafkaflows publishes enriched flows to a Kafka topic through franz-go, for shops built on
// Kafka. Each Kafka record is a flowlens.flow.v1.FlowBatch (see package fleet) of flows from one exporter
// and one local workload, keyed by that workload's namespace/name: the key picks the partition, so one
// workload's flows stay in order. Publish returns once the brokers have acknowledged every record
// (acks=all, idempotent producer), or with an error soon after Config.Timeout (the client notices
// expiry between its retries: 6.7 s for a 2 s timeout against a cluster that went away).
package kafkaflows

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/fleet"
	"github.com/flowlens/flowlens/internal/flow"
)

// MsgIDHeader carries each record's content-derived id: a consumer that must not see a retried Publish
// twice de-duplicates on it (Kafka itself drops duplicates only within one producer session).
const MsgIDHeader = "Flowlens-Msg-Id"

// Config says which cluster and topic flows go to. Zero values take the defaults.
type Config struct {
	// Brokers are the seed brokers, host:port. Required.
	Brokers []string `mapstructure:"brokers"`
	// Topic receives the flows; it must exist (or the cluster must create topics on first use).
	// Default flowlens.flows.
	Topic string `mapstructure:"topic"`
	// ClientID names this producer to the brokers. Default flowlens-collector.
	ClientID string `mapstructure:"client_id"`
	// MaxMessageBytes bounds one record's value; keep it under the topic's max.message.bytes (1 MB by
	// default). Default 512 KiB.
	MaxMessageBytes int `mapstructure:"max_message_bytes"`
	// Timeout bounds one Publish whose context has no deadline, and every record's delivery. Default 10s.
	Timeout time.Duration `mapstructure:"timeout"`
}

func (c Config) withDefaults() Config {
	if c.Topic == "" {
		c.Topic = "flowlens.flows"
	}
	if c.ClientID == "" {
		c.ClientID = "flowlens-collector"
	}
	if c.MaxMessageBytes == 0 {
		c.MaxMessageBytes = 512 << 10
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	return c
}

// Producer publishes flows to Kafka. It is safe for concurrent use; Close it when done.
type Producer struct {
	cl  *kgo.Client
	cfg Config
	log *zap.Logger
	m   fleet.OutputMetrics
}

// New returns a producer for cfg. It does not wait for the brokers: the first Publish does.
func New(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Producer, error) {
	cfg = cfg.withDefaults()
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("kafka flows: brokers required")
	}
	if cfg.MaxMessageBytes < 1024 || cfg.Timeout < 0 {
		return nil, errors.New("kafka flows: max_message_bytes >= 1024 and a non-negative timeout required")
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(cfg.Brokers...),
		kgo.ClientID(cfg.ClientID),
		kgo.DefaultProduceTopic(cfg.Topic),
		kgo.RequiredAcks(kgo.AllISRAcks()), // with the idempotent producer (franz-go's default): no loss, no reorder
		kgo.ProducerBatchMaxBytes(int32(cfg.MaxMessageBytes+64<<10)),
		kgo.RecordDeliveryTimeout(cfg.Timeout),
		// Without it a record already sent to a broker that then vanished is waited for forever (the
		// client cannot tell lost from written), and Publish would hang through a Kafka outage instead
		// of failing so that the collector answers RETRY. The cost: a publish retried after such a
		// failure may store those records twice; MsgIDHeader lets consumers drop the copy.
		kgo.AllowIdempotentProduceCancellation(),
	)
	if err != nil {
		return nil, fmt.Errorf("kafka client: %w", err)
	}
	m, err := fleet.NewOutputMetrics(reg, "kafka")
	if err != nil {
		cl.Close()
		return nil, err
	}
	return &Producer{cl: cl, cfg: cfg, log: log.With(zap.String("component", "kafkaflows")), m: m}, nil
}

// Key is the Kafka key r is published under: its local workload's namespace/name.
func Key(r *flow.Enriched) string { return r.LocalWorkload.Namespace + "/" + r.LocalWorkload.Name }

// Publish produces recs, one Kafka record per workload and exporter (split under MaxMessageBytes), and
// returns once every record is acknowledged, or the first error. On an error some records may have been
// written: publish them again; consumers de-duplicate on MsgIDHeader if they must.
func (p *Producer) Publish(ctx context.Context, recs []flow.Enriched) error {
	if len(recs) == 0 {
		return nil
	}
	ctx, cancel := fleet.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	start := time.Now()
	var out []*kgo.Record
	counts := map[*kgo.Record]int{} // results come back in completion order
	for _, g := range fleet.GroupBy(recs, Key) {
		for _, msg := range fleet.Encode(g.Exporter, g.Key, g.Records, p.cfg.MaxMessageBytes) {
			r := &kgo.Record{Key: []byte(g.Key), Value: msg.Data, Headers: []kgo.RecordHeader{
				{Key: fleet.SchemaHeader, Value: []byte(fleet.Schema)}, {Key: MsgIDHeader, Value: []byte(msg.ID)}}}
			out = append(out, r)
			counts[r] = msg.Records
		}
	}
	var first error
	for _, r := range p.cl.ProduceSync(ctx, out...) {
		result := "stored"
		if r.Err != nil {
			result = "error"
			first = cmp.Or(first, r.Err)
		}
		p.m.Done(result, counts[r.Record], len(r.Record.Value))
	}
	p.m.Seconds.Observe(time.Since(start).Seconds())
	if first != nil {
		return fmt.Errorf("kafka flows to %s: %w", p.cfg.Topic, first)
	}
	return nil
}

// Close flushes nothing (Publish already waited) and closes the client.
func (p *Producer) Close() { p.cl.Close() }
