package natsflows

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flowlens/flowlens/collector/fleet/fleettest"
	"github.com/flowlens/flowlens/internal/natstest"
)

// BenchmarkPublish measures flows/s published to a real nats-server (file storage, this machine) and
// acknowledged, in calls of 1,000 records (15 messages: 5 workloads x 3 exporters), from one caller and
// from four at once. The server shares the machine's two cores with the benchmark.
func BenchmarkPublish(b *testing.B) {
	const batch = 1000
	for _, callers := range []int{1, 4} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			srv := natstest.Start(b)
			p, _ := newPublisher(b, srv, Config{})
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for c := range callers {
				r := fleettest.Records(batch, uint64(c))
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := c; i < b.N; i += callers {
						for j := range r { // new exporter ids, else the content-derived ids de-duplicate
							r[j].ExporterID = fmt.Sprintf("bench-%d-%d", i, j%3)
						}
						if err := p.Publish(context.Background(), r); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			b.ReportMetric(float64(b.N*batch)/el.Seconds(), "flows/s")
			b.ReportMetric(testutil.ToFloat64(p.m.Bytes)/float64(b.N*batch), "B/flow")
		})
	}
}
