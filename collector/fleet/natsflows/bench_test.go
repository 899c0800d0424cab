package natsflows

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/fleet/fleettest"
	"github.com/flowlens/flowlens/collector/store"
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

// BenchmarkConsume measures how fast a replica stores its peers' flows from the stream: 100,000 flows
// published by another replica (100 calls of 1,000), then read by a Consumer into a fresh DuckDB store
// until its cursor reaches the end. Reports flows/s and the CPU-seconds of this process per 100k flows
// (the consumer and DuckDB; the nats-server is another process).
func BenchmarkConsume(b *testing.B) {
	const calls, batch = 100, 1000
	srv := natstest.Start(b)
	p, _ := newPublisher(b, srv, Config{Origin: "peer"})
	for i := range calls {
		r := fleettest.Records(batch, uint64(i))
		for j := range r {
			r[j].ExporterID = fmt.Sprintf("bench-%d-%d", i, j%3)
		}
		if err := p.Publish(context.Background(), r); err != nil {
			b.Fatal(err)
		}
	}
	last := lastSeq(b, p)
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		st, err := store.Open(store.Config{Path: filepath.Join(b.TempDir(), "s.duckdb"), RollupInterval: -1}, zap.NewNop(), prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		_, js := srv.Connect(b)
		c, err := NewConsumer(js, ConsumerConfig{Origin: "me"}, st, zap.NewNop(), prometheus.NewRegistry())
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cpu0 := cpuSeconds()
		start := time.Now()
		b.StartTimer()
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		for {
			seq, err := st.StreamCursor(context.Background(), "FLOWLENS_FLOWS")
			if err != nil {
				b.Fatal(err)
			}
			if seq == last {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
		b.StopTimer()
		el, cpu := time.Since(start), cpuSeconds()-cpu0
		cancel()
		<-done
		if got := testutil.ToFloat64(c.records); got != calls*batch {
			b.Fatalf("stored %v flows, want %d", got, calls*batch)
		}
		st.Close()
		b.ReportMetric(calls*batch/el.Seconds(), "flows/s")
		b.ReportMetric(cpu, "cpu-s/100k-flows")
	}
}

// cpuSeconds is this process's user and system CPU time.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
