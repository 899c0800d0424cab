// Package metrics holds the exporter's Prometheus metrics. Every drop is counted at the stage where it
// happens, in one family: flowlens_exporter_drops_total{stage, reason}.
package metrics

import (
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/exporter/capture"
)

// Metrics are the exporter's counters. Create them with New.
type Metrics struct {
	EventsRead *prometheus.CounterVec // by kind: close, active, reset_sent
	Records    *prometheus.CounterVec // emitted records by close reason
	Drops      *prometheus.CounterVec // user-space drops by stage and reason
	LateResets *prometheus.CounterVec // late RST notices, by whether they found their record
	Snapshots  *prometheus.CounterVec // interim-record rounds, by outcome
	kernel     *kernelCollector
}

const dropsHelp = "Flow records lost, by the stage that dropped them and why."

// New registers the metrics on reg. Until SetKernel, the kernel's counters are not reported.
func New(reg prometheus.Registerer, log *zap.Logger) (*Metrics, error) {
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
		LateResets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_exporter_late_resets_total",
			Help: "RSTs sent just after a close; matched ones turned the record's close reason to RESET_SENT.",
		}, []string{"matched"}),
		Snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_exporter_snapshots_total", Help: "Interim-record rounds over the live connections, by outcome.",
		}, []string{"outcome"}),
	}
	m.kernel = &kernelCollector{drops: m.Drops, log: log}
	for _, c := range []prometheus.Collector{m.EventsRead, m.Records, m.LateResets, m.Snapshots, m.kernel} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register exporter metrics: %w", err)
		}
	}
	return m, nil
}

// SetKernel makes every scrape read the BPF side's counters with read.
func (m *Metrics) SetKernel(read func() (capture.Counters, error)) { m.kernel.read.Store(&read) }

// kernelCollector is the whole drops family (the user-space counters plus the BPF side's, read at scrape
// time so they are never stale: one collector, because a registry refuses two for one family) and the
// kernel's other counters.
type kernelCollector struct {
	drops *prometheus.CounterVec
	read  atomic.Pointer[func() (capture.Counters, error)]
	log   *zap.Logger
}

var (
	dropsDesc     = prometheus.NewDesc("flowlens_exporter_drops_total", dropsHelp, []string{"stage", "reason"}, nil)
	untrackedDesc = prometheus.NewDesc("flowlens_exporter_untracked_connections_total",
		"Connections that found the kernel's flows map full: reported at close as preexisting, without interim records.", nil, nil)
	retransDesc = prometheus.NewDesc("flowlens_exporter_retransmits_total",
		"TCP retransmissions in scope, counted live by the kernel.", nil, nil)
)

func (k *kernelCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dropsDesc
	ch <- untrackedDesc
	ch <- retransDesc
}

func (k *kernelCollector) Collect(ch chan<- prometheus.Metric) {
	k.drops.Collect(ch)
	read := k.read.Load()
	if read == nil {
		return
	}
	c, err := (*read)()
	if err != nil {
		k.log.Warn("read kernel counters", zap.Error(err))
		return
	}
	for reason, n := range c.Drops {
		ch <- prometheus.MustNewConstMetric(dropsDesc, prometheus.CounterValue, float64(n), "kernel", reason)
	}
	ch <- prometheus.MustNewConstMetric(untrackedDesc, prometheus.CounterValue, float64(c.Untracked))
	ch <- prometheus.MustNewConstMetric(retransDesc, prometheus.CounterValue, float64(c.Retransmits))
}
