// Package metrics holds the exporter's Prometheus metrics. Every drop is counted at the stage where it
// happens, in one family: flowlens_exporter_drops_total{stage, reason}.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Metrics are the exporter's counters. Create them with New.
type Metrics struct {
	EventsRead *prometheus.CounterVec // by kind: close, active, reset_sent
	Records    *prometheus.CounterVec // emitted records by close reason
	Drops      *prometheus.CounterVec // user-space drops by stage and reason
	Snapshots  prometheus.Counter
}

const dropsHelp = "Flow records lost, by the stage that dropped them and why."

// New registers the metrics on reg. kernelDrops, when not nil, is read at every scrape for the drops the
// BPF programs counted (stage "kernel").
func New(reg prometheus.Registerer, kernelDrops func() (map[string]uint64, error), log *zap.Logger) *Metrics {
	m := &Metrics{
		EventsRead: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_exporter_events_read_total", Help: "Events read from the kernel ring buffer, by kind.",
		}, []string{"kind"}),
		Records: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_exporter_records_emitted_total", Help: "Flow records handed to the output, by close reason.",
		}, []string{"close"}),
		Drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_exporter_drops_total", Help: dropsHelp,
		}, []string{"stage", "reason"}),
		Snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowlens_exporter_snapshots_total", Help: "Interim-record rounds run over the live connections.",
		}),
	}
	reg.MustRegister(m.EventsRead, m.Records, m.Snapshots,
		&dropsCollector{vec: m.Drops, kernel: kernelDrops, log: log})
	return m
}

// dropsCollector is the whole drops family: the user-space counters, plus the BPF programs' counters read
// at scrape time (stage "kernel") so they are never stale. One collector, because a registry refuses two
// collectors for one family.
type dropsCollector struct {
	vec    *prometheus.CounterVec
	kernel func() (map[string]uint64, error)
	log    *zap.Logger
}

var dropsDesc = prometheus.NewDesc("flowlens_exporter_drops_total", dropsHelp, []string{"stage", "reason"}, nil)

func (d *dropsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- dropsDesc }

func (d *dropsCollector) Collect(ch chan<- prometheus.Metric) {
	d.vec.Collect(ch)
	if d.kernel == nil {
		return
	}
	drops, err := d.kernel()
	if err != nil {
		d.log.Warn("read kernel drop counters", zap.Error(err))
		return
	}
	for reason, n := range drops {
		ch <- prometheus.MustNewConstMetric(dropsDesc, prometheus.CounterValue, float64(n), "kernel", reason)
	}
}
