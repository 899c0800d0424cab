package sim

import "testing"

// BenchmarkAttribution runs the default scenario (what `make bench-attribution` prints) and reports
// each strategy's misattributed and unattributed flows in percent, and the heartbeat strategy's p99
// attribution latency.
func BenchmarkAttribution(b *testing.B) {
	var r *Report
	for b.Loop() {
		var err error
		if r, err = Run(Defaults()); err != nil {
			b.Fatal(err)
		}
	}
	for _, res := range r.Results {
		total := float64(res.Flows.Total())
		b.ReportMetric(100*float64(res.Flows.Misattributed)/total, res.Strategy+"-misattributed-%")
		b.ReportMetric(100*float64(res.Flows.Unattributed)/total, res.Strategy+"-unattributed-%")
		b.ReportMetric(float64(res.Edges.Misattributed), res.Strategy+"-misattributed-edges")
	}
	b.ReportMetric(result(b, r, Heartbeat).Latency[2].Seconds(), "heartbeat-p99-latency-s")
}
