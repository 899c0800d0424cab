package shipper

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowlens/flowlens/exporter/transport"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// BenchmarkStamp is what filling a batch's status costs the exporter as the batch leaves: the drops
// family read (the exporter's eight user-space drop series, two of them nonzero), the kernel's drops
// (read once a second), the buffer's backlog. Reported per batch and per flow of a default 512-record
// batch.
func BenchmarkStamp(b *testing.B) {
	drops := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "drops_total"}, []string{"stage", "reason"})
	for _, l := range [][2]string{{"queue", "full"}, {"reader", "decode"}, {"output", "error"}, {"output", "shutdown_timeout"},
		{"transport", "buffer_full"}, {"transport", "rejected"}, {"transport", "udp_abandoned"}, {"transport", "shutdown"}} {
		drops.WithLabelValues(l[0], l[1])
	}
	drops.WithLabelValues("queue", "full").Add(12)
	drops.WithLabelValues("transport", "buffer_full").Add(512)
	buf := transport.NewBuffer(1024, 16<<20, func(int) {})
	batch := &flowv1.FlowBatch{Records: make([]*flowv1.FlowRecord, 512)}
	buf.Push(batch) // in the buffer, as a batch being sent is, with eight behind it
	for range 8 {
		buf.Push(&flowv1.FlowBatch{Records: make([]*flowv1.FlowRecord, 512)})
	}
	st := &status{started: time.Now().UnixNano(), drops: drops, buf: buf}
	read := func() (map[string]uint64, error) {
		return map[string]uint64{"ringbuf_full": 3, "reset_notice_lost": 0, "recursion": 0}, nil
	}
	st.kernelRead.Store(&read)
	b.ReportAllocs()
	for b.Loop() {
		st.stamp(batch)
	}
	if len(batch.Status.Drops) != 3 || batch.Status.QueuedRecords != 8*512 {
		b.Fatalf("status %v", batch.Status)
	}
	ns := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(ns, "ns/batch")
	b.ReportMetric(ns/512, "ns/flow")
}
