package natsflows

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowlens/flowlens/collector/fleet"
)

type metrics struct {
	messages *prometheus.CounterVec // by result: stored, duplicate, error
	records  *prometheus.CounterVec // by result
	bytes    prometheus.Counter
	seconds  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_nats_flows_messages_total",
			Help: "Flow messages published to JetStream, by result: stored, duplicate (a retry JetStream had " +
				"already stored), error (not acknowledged: the Publish call failed and the caller retries).",
		}, []string{"result"}),
		records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_nats_flows_records_total",
			Help: "Flow records in the messages of flowlens_nats_flows_messages_total, by the same result.",
		}, []string{"result"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowlens_nats_flows_bytes_total", Help: "Payload bytes of the flow messages sent.",
		}),
		seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flowlens_nats_flows_publish_seconds", Help: "Time of one Publish call, until every ack.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
	return m, fleet.Register(reg, "nats flows", m.messages, m.records, m.bytes, m.seconds)
}
