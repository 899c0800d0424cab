package kafkaflows

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/fleet"
	"github.com/flowlens/flowlens/collector/fleet/fleettest"
	"github.com/flowlens/flowlens/internal/flow"
)

// kfake is franz-go's in-process fake Kafka cluster: a test double that speaks the Kafka protocol on
// real loopback sockets, not a Kafka broker.
func newCluster(t testing.TB, topic string) *kfake.Cluster {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(3), kfake.SeedTopics(4, topic))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newProducer(t testing.TB, c *kfake.Cluster, cfg Config) *Producer {
	t.Helper()
	cfg.Brokers = c.ListenAddrs()
	p, err := New(cfg, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

type consumed struct {
	key       string
	partition int32
	headers   map[string]string
	recs      []flow.Enriched
}

// consume reads messages from the start of topic until it has n records.
func consume(t testing.TB, c *kfake.Cluster, topic string, n int) []consumed {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out []consumed
	for got := 0; got < n; {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", got, n, err)
		}
		fs.EachError(func(topic string, p int32, err error) { t.Fatalf("fetch %s/%d: %v", topic, p, err) })
		fs.EachRecord(func(r *kgo.Record) {
			recs, err := fleet.Decode(r.Value)
			if err != nil {
				t.Fatalf("record at %d/%d: %v", r.Partition, r.Offset, err)
			}
			h := map[string]string{}
			for _, x := range r.Headers {
				h[x.Key] = string(x.Value)
			}
			out = append(out, consumed{string(r.Key), r.Partition, h, recs})
			got += len(recs)
		})
	}
	return out
}

func TestPublishRoundTrip(t *testing.T) {
	c := newCluster(t, "flows")
	p := newProducer(t, c, Config{Topic: "flows", MaxMessageBytes: 4096})
	first, second := fleettest.Records(300, 1), fleettest.Records(300, 2)
	for _, recs := range [][]flow.Enriched{first, second} {
		if err := p.Publish(context.Background(), recs); err != nil {
			t.Fatal(err)
		}
	}
	all := append(append([]flow.Enriched(nil), first...), second...)
	// Per key, the records must come back exactly and in publish order (one partition per key);
	// exporters interleave within a key, so compare per (key, exporter).
	want := map[[2]string][]flow.Enriched{}
	for _, r := range all {
		k := [2]string{Key(&r), r.ExporterID}
		want[k] = append(want[k], r)
	}
	got := map[[2]string][]flow.Enriched{}
	partition := map[string]int32{}
	msgs := consume(t, c, "flows", len(all))
	for _, m := range msgs {
		if pt, ok := partition[m.key]; ok && pt != m.partition {
			t.Fatalf("key %s on partitions %d and %d", m.key, pt, m.partition)
		}
		partition[m.key] = m.partition
		if m.headers[fleet.SchemaHeader] != fleet.Schema || m.headers[MsgIDHeader] == "" {
			t.Fatalf("headers %v", m.headers)
		}
		for _, r := range m.recs {
			if Key(&r) != m.key {
				t.Fatalf("record of %s in a message keyed %s", Key(&r), m.key)
			}
			k := [2]string{m.key, r.ExporterID}
			got[k] = append(got[k], r)
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("consumed records differ from those published (%d groups, want %d)", len(got), len(want))
	}
	if len(partition) != 5 || len(msgs) < 10 {
		t.Fatalf("%d keys in %d messages, want the 5 workloads in >= 10 messages (4 KiB bound)", len(partition), len(msgs))
	}
	if n := testutil.ToFloat64(p.m.Records.WithLabelValues("stored")); n != 600 {
		t.Fatalf("stored records metric %v, want 600", n)
	}
}

// With the cluster gone, Publish returns an error within its timeout.
func TestPublishToClosedClusterFails(t *testing.T) {
	c := newCluster(t, "flows")
	p := newProducer(t, c, Config{Topic: "flows", Timeout: 2 * time.Second})
	if err := p.Publish(context.Background(), fleettest.Records(10, 3)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	start := time.Now()
	err := p.Publish(context.Background(), fleettest.Records(10, 4))
	if err == nil {
		t.Fatal("Publish to a closed cluster returned nil")
	}
	t.Logf("publish with the cluster closed, after %v: %v", time.Since(start).Round(time.Millisecond), err)
	if n := testutil.ToFloat64(p.m.Records.WithLabelValues("error")); n != 10 {
		t.Fatalf("error records metric %v, want 10", n)
	}
}

func TestConfig(t *testing.T) {
	if _, err := New(Config{}, zap.NewNop(), prometheus.NewRegistry()); err == nil {
		t.Fatal("config without brokers accepted")
	}
}
