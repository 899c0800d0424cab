package exporters

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the registry's counters, and a collector that reads the fleet at scrape time.
type metrics struct {
	bytes     [len(Transports)]prometheus.Counter
	refused   [len(Transports)]prometheus.Counter
	overflow  prometheus.Counter
	forgotten prometheus.Counter
}

var (
	exportersDesc = prometheus.NewDesc("flowlens_collector_exporters",
		"Exporters remembered, by the transport their latest batch came over.", []string{"transport"}, nil)
	staleDesc = prometheus.NewDesc("flowlens_collector_exporters_stale",
		"Exporters remembered but not heard from for the stale interval (3m by default).", nil, nil)
	reportedDropsDesc = prometheus.NewDesc("flowlens_collector_exporters_reported_drops",
		"Records the exporters report they dropped (each one's latest cumulative count, summed), by stage/reason.",
		[]string{"reason"}, nil)
	queuedDesc = prometheus.NewDesc("flowlens_collector_exporters_queued_records",
		"Records waiting in the exporters' buffers, as their latest batches said, summed.", nil, nil)
)

func newMetrics(r *Registry, reg prometheus.Registerer) (*metrics, error) {
	bytes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowlens_collector_ingest_bytes_total",
		Help: "Bytes of accepted batches as they arrived (gRPC message, HTTPS body, UDP datagram), by transport.",
	}, []string{"transport"})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowlens_collector_ingest_refused_total",
		Help: "Batches refused because the collector was full (the exporter resends them), by transport.",
	}, []string{"transport"})
	m := &metrics{
		overflow: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowlens_collector_exporters_overflow_total",
			Help: "Batches of exporters not remembered because the most exporters were, or their id was over 256 bytes (stored all the same).",
		}),
		forgotten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowlens_collector_exporters_forgotten_total",
			Help: "Exporters forgotten after not being heard from for a day.",
		}),
	}
	for i, t := range Transports {
		m.bytes[i] = bytes.WithLabelValues(t)
		m.refused[i] = refused.WithLabelValues(t)
	}
	for _, c := range []prometheus.Collector{bytes, refused, m.overflow, m.forgotten, fleetCollector{r}} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register exporters metrics: %w", err)
		}
	}
	return m, nil
}

// fleetCollector reports the exporters remembered at scrape time.
type fleetCollector struct{ r *Registry }

func (fleetCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- exportersDesc
	ch <- staleDesc
	ch <- reportedDropsDesc
	ch <- queuedDesc
}

func (c fleetCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.r
	byTransport := map[string]int{}
	drops := map[string]uint64{}
	var queued uint64
	stale := 0
	r.mu.Lock()
	horizon := r.cfg.Now().Add(-r.cfg.StaleAfter).UnixNano()
	for _, e := range r.byID {
		byTransport[e.receivedOver]++
		if e.lastSeen < horizon {
			stale++
		}
		if e.status != nil {
			queued += e.status.QueuedRecords
			for k, v := range e.status.Drops {
				drops[k] += v
			}
		}
	}
	r.mu.Unlock()
	for _, t := range Transports {
		ch <- prometheus.MustNewConstMetric(exportersDesc, prometheus.GaugeValue, float64(byTransport[t]), t)
	}
	ch <- prometheus.MustNewConstMetric(staleDesc, prometheus.GaugeValue, float64(stale))
	for k, v := range drops {
		ch <- prometheus.MustNewConstMetric(reportedDropsDesc, prometheus.GaugeValue, float64(v), k)
	}
	ch <- prometheus.MustNewConstMetric(queuedDesc, prometheus.GaugeValue, float64(queued))
}
