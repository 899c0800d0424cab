package kube

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	events    *prometheus.CounterVec // kind, type: add, update, delete, resync
	claims    *prometheus.CounterVec // kind
	conflicts *prometheus.CounterVec // kind
	skipped   *prometheus.CounterVec // kind, reason
	errors    *prometheus.CounterVec // kind, reason
}

func newMetrics(reg prometheus.Registerer, s *Source) *metrics {
	const ns = "flowlens_sonar_kube"
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_total",
			Help: "Informer notifications handled (add, update, delete) and resync passes, by kind."}, []string{"kind", "type"}),
		claims: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "claims_total",
			Help: "Ownership claims added to the index, by kind."}, []string{"kind"}),
		conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "claim_conflicts_total",
			Help: "Claims that overlapped a different owner's range: kept aside by the index, never resolved silently."}, []string{"kind"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "skipped_total",
			Help: "Observations that claimed nothing, by reason (host_network, no_ip, completed, phase_unknown, headless, external_name, resync_held_back)."},
			[]string{"kind", "reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "errors_total",
			Help: "Watch failures and unusable objects (bad_ip, unexpected_type), by kind."}, []string{"kind", "reason"}),
	}
	tracked := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: ns, Name: "tracked_objects",
		Help: "Pods, services and nodes whose ranges the source is extending."}, func() float64 { return float64(s.tracked()) })
	reg.MustRegister(m.events, m.claims, m.conflicts, m.skipped, m.errors, tracked)
	return m
}
