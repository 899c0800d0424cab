package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/exporter/capture"
)

func TestKernelCountersAndDropsInOneFamily(t *testing.T) {
	reg := prometheus.NewRegistry()
	m, err := New(reg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	m.SetKernel(func() (capture.Counters, error) {
		return capture.Counters{Drops: map[string]uint64{"ringbuf_full": 3, "recursion": 0}, Untracked: 5, Retransmits: 7}, nil
	})
	m.Drops.WithLabelValues("queue", "full").Add(2)

	want := `
# HELP flowlens_exporter_drops_total ` + dropsHelp + `
# TYPE flowlens_exporter_drops_total counter
flowlens_exporter_drops_total{reason="full",stage="queue"} 2
flowlens_exporter_drops_total{reason="recursion",stage="kernel"} 0
flowlens_exporter_drops_total{reason="ringbuf_full",stage="kernel"} 3
# HELP flowlens_exporter_retransmits_total TCP retransmissions in scope, counted live by the kernel.
# TYPE flowlens_exporter_retransmits_total counter
flowlens_exporter_retransmits_total 7
# HELP flowlens_exporter_untracked_connections_total Connections that found the kernel's flows map full: reported at close as preexisting, without interim records.
# TYPE flowlens_exporter_untracked_connections_total counter
flowlens_exporter_untracked_connections_total 5
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "flowlens_exporter_drops_total",
		"flowlens_exporter_retransmits_total", "flowlens_exporter_untracked_connections_total"); err != nil {
		t.Fatal(err)
	}
	if _, err := New(reg, zap.NewNop()); err == nil {
		t.Fatal("registering twice succeeded")
	}
}
