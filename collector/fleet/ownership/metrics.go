package ownership

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowlens/flowlens/collector/fleet"
)

type metrics struct {
	shared    prometheus.Counter
	published prometheus.Counter
	messages  prometheus.Counter
	dropped   *prometheus.CounterVec
	received  *prometheus.CounterVec
	applied   prometheus.Counter
	conflicts prometheus.Counter
	lag       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) (metrics, error) {
	m := metrics{
		shared: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowlens_ownership_claims_shared_total", Help: "Claims handed to Share, before coalescing.",
		}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowlens_ownership_claims_published_total",
			Help: "Ranges (coalesced claims) this replica published to the ownership stream.",
		}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowlens_ownership_messages_published_total", Help: "Messages published to the ownership stream.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_ownership_claims_dropped_total",
			Help: "Claims not shared, by reason: invalid (the index would refuse them), buffer_full (more than " +
				"max_pending ranges waiting), publish_error (the stream did not take the message).",
		}, []string{"reason"}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_ownership_messages_received_total",
			Help: "Ownership stream messages consumed, by result: ok, bad (not a valid report: skipped).",
		}, []string{"result"}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowlens_ownership_claims_applied_total",
			Help: "Ranges from the ownership stream added to the local index, this replica's own included.",
		}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowlens_ownership_claims_conflicting_total",
			Help: "Applied ranges that overlapped a different owner in the index (kept aside as conflicts).",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flowlens_ownership_consumer_lag_messages",
			Help: "Ownership stream messages not yet delivered to this replica, as of the last one delivered.",
		}),
	}
	return m, fleet.Register(reg, "ownership", m.shared, m.published, m.messages, m.dropped, m.received, m.applied,
		m.conflicts, m.lag)
}
