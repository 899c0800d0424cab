package ingest

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/wire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

type nullSink struct{}

func (nullSink) Put(context.Context, *Batch) error { return nil }

// BenchmarkGRPCDecodeToSink: what one core of the collector does per gRPC batch after the bytes arrive:
// protobuf decoding, validation and conversion, de-duplication, the sink. Printed as flows/s per core.
func BenchmarkGRPCDecodeToSink(b *testing.B) {
	const per = 512
	recs := make([]flow.Record, per)
	for i := range recs {
		recs[i] = flow.Record{LocalAddr: netip.MustParseAddr("10.1.2.3"), LocalPort: uint16(30000 + i),
			RemoteAddr: netip.AddrFrom4([4]byte{10, 9, byte(i), 7}), RemotePort: 443, Role: flow.RoleClient,
			StartTime: 1_795_000_000_000_000_000 + int64(i)*1000, EndTime: 1_795_000_000_002_000_000 + int64(i)*1000,
			BytesSent: uint64(100 + i), BytesReceived: uint64(5000 + i), SegsSent: 9, SegsReceived: 11, SrttUs: 250,
			Close: flow.CloseNormal, Pid: 4242, Comm: "checkout", Netns: 4026531833, CgroupID: 7777}
	}
	h := &Handler{Sink: nullSink{}, Dedup: NewDedup(1000), Metrics: NewMetrics(prometheus.NewRegistry()), Log: zap.NewNop()}
	ctx := context.Background()
	raw, _ := proto.Marshal(wire.NewBatch("bench", 1, 0, flow.Workload{Name: "w"}, recs))
	var seq uint64
	start := time.Now()
	for b.Loop() {
		var batch flowv1.FlowBatch
		if err := proto.Unmarshal(raw, &batch); err != nil {
			b.Fatal(err)
		}
		seq++
		batch.Seq = seq
		if ack := h.Handle(ctx, "grpc", &batch); ack.Status != flowv1.AckStatus_ACK_STATUS_STORED {
			b.Fatalf("ack %v", ack.Status)
		}
	}
	rate := float64(seq*per) / time.Since(start).Seconds()
	b.ReportMetric(rate, "flows/s")
	fmt.Printf("figure | %-52s | %12.0f %-8s | goal %s\n", "collector gRPC ingest, decode to sink, one core", rate, "flows/s", ">= 250,000 flows/s")
}
