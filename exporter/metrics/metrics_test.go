package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
)

func TestDropsOneFamilyForEveryStage(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := New(reg, func() (map[string]uint64, error) {
		return map[string]uint64{"ringbuf_full": 3, "flows_map_full": 0}, nil
	}, zap.NewNop())
	m.Drops.WithLabelValues("queue", "full").Add(2)

	want := `
# HELP flowlens_exporter_drops_total ` + dropsHelp + `
# TYPE flowlens_exporter_drops_total counter
flowlens_exporter_drops_total{reason="flows_map_full",stage="kernel"} 0
flowlens_exporter_drops_total{reason="full",stage="queue"} 2
flowlens_exporter_drops_total{reason="ringbuf_full",stage="kernel"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "flowlens_exporter_drops_total"); err != nil {
		t.Fatal(err)
	}
}
