package fleet

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Register registers every collector on reg, or none: on an error it unregisters those it registered,
// so a failed constructor leaves the registry as it was. what names the metrics in the error.
func Register(reg prometheus.Registerer, what string, cs ...prometheus.Collector) error {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, r := range cs[:i] {
				reg.Unregister(r)
			}
			return fmt.Errorf("register %s metrics: %w", what, err)
		}
	}
	return nil
}

// OutputMetrics are the counters of a flow output (NATS, Kafka).
type OutputMetrics struct {
	Messages *prometheus.CounterVec // by result: stored, duplicate, error
	Records  *prometheus.CounterVec // by the same result
	Bytes    prometheus.Counter
	Seconds  prometheus.Histogram
}

// NewOutputMetrics registers flowlens_<name>_flows_* on reg.
func NewOutputMetrics(reg prometheus.Registerer, name string) (OutputMetrics, error) {
	p := "flowlens_" + name + "_flows_"
	m := OutputMetrics{
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: p + "messages_total",
			Help: "Flow messages published, by result: stored, duplicate (a retry already stored: JetStream only), " +
				"error (not acknowledged: the Publish call failed and the caller publishes again).",
		}, []string{"result"}),
		Records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: p + "records_total",
			Help: "Flow records in the messages of " + p + "messages_total, by the same result.",
		}, []string{"result"}),
		Bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: p + "bytes_total", Help: "Payload bytes of the flow messages acknowledged.",
		}),
		Seconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: p + "publish_seconds", Help: "Time of one Publish call, until every ack.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
	}
	return m, Register(reg, name+" flows", m.Messages, m.Records, m.Bytes, m.Seconds)
}

// Done counts one message's outcome.
func (m OutputMetrics) Done(result string, records, bytes int) {
	m.Messages.WithLabelValues(result).Inc()
	m.Records.WithLabelValues(result).Add(float64(records))
	if result != "error" {
		m.Bytes.Add(float64(bytes))
	}
}
