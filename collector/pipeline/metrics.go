package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowlens/flowlens/internal/flow"
)

type metrics struct {
	rejected      prometheus.Counter
	early         prometheus.Counter
	heartbeats    prometheus.Counter
	conflicts     prometheus.Counter
	parkedIn      prometheus.Counter
	parkedOut     prometheus.Counter
	publishErrors prometheus.Counter
	attributed    [flow.AttributionUnattributed + 1]prometheus.Counter
	latency       prometheus.Histogram
	writeSeconds  prometheus.Histogram
}

func newMetrics(reg prometheus.Registerer, p *Pipeline) *metrics {
	const ns = "flowlens_collector"
	drops := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "pipeline_records_total",
		Help: "Records the pipeline refused (queue_full: the exporter resends) or decided before their deadline (parked_full)."}, []string{"outcome"})
	attributed := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "attributed_records_total",
		Help: "Records stored, by how their remote workload was decided."}, []string{"attribution"})
	parked := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "parked_records_total",
		Help: "Records parked to wait for their remote address's owner (in), and decided after waiting (out)."}, []string{"direction"})
	m := &metrics{
		rejected: drops.WithLabelValues("queue_full"),
		early:    drops.WithLabelValues("parked_full"),
		heartbeats: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "heartbeats_total",
			Help: "Ownership claims fed to the index from records' local sides."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "heartbeat_conflicts_total",
			Help: "Heartbeats that overlapped a different owner's range: kept aside, never resolved silently."}),
		parkedIn:  parked.WithLabelValues("in"),
		parkedOut: parked.WithLabelValues("out"),
		publishErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "publish_errors_total",
			Help: "Writes whose publication to a stream failed: not committed, the exporter resends."}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "attribution_latency_seconds",
			Help:    "From a connection's close (end_time) to its record committed, attributed.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 16)}),
		writeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "store_commit_seconds",
			Help:    "Time to publish and commit one group of batches.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}),
	}
	for a := range m.attributed {
		m.attributed[a] = attributed.WithLabelValues(flow.Attribution(a).String())
	}
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "queue_records",
		Help: "Records accepted and not yet committed."}, func() float64 { return float64(p.queued.Load()) })
	parkedNow := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "parked_records",
		Help: "Records waiting for their remote address's owner (the delay queue)."}, func() float64 { return float64(p.parkedLen()) })
	reg.MustRegister(drops, attributed, parked, m.heartbeats, m.conflicts, m.publishErrors, m.latency, m.writeSeconds, queued, parkedNow)
	return m
}
