package app

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/flowlens/flowlens/collector/ingest"
	"github.com/flowlens/flowlens/collector/pipeline"
	"github.com/flowlens/flowlens/collector/store"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/nettest"
	"github.com/flowlens/flowlens/internal/wire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
	"github.com/flowlens/flowlens/sonar/index"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIngestIntoDuckDB: the collector's whole path for gRPC batches after the bytes arrive —
// protobuf decoding, validation, de-duplication, heartbeats into the index, attribution, group commit
// into the DuckDB file — with 16 concurrent streams, as from 16 exporters. 64 workloads talk to each other,
// so every flow is attributed by heartbeat. Printed as flows per CPU-second (all cores the process used)
// and per wall second.
func BenchmarkIngestIntoDuckDB(b *testing.B) {
	const per, streams, workloads = 512, 16, 64
	st, err := store.Open(store.Config{Path: filepath.Join(b.TempDir(), "flows.duckdb")}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	idx := index.New(index.Config{})
	base := time.Now().Add(-time.Minute).UnixNano()
	ip := func(w int) netip.Addr { return netip.AddrFrom4([4]byte{10, 20, byte(w), 1}) }
	// Every workload has said it owns its address for the whole run.
	for w := range workloads {
		idx.Add(index.Claim{IP: ip(w), Start: base - 1e12, End: base + 1e12, Owner: flow.Workload{Name: fmt.Sprint("w", w)}, Evidence: index.EvidenceHeartbeat})
	}
	p := pipeline.New(pipeline.Config{Deadline: time.Minute}, idx, st, nil, nil, zap.NewNop(), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	go p.Run(ctx)
	defer func() { cancel(); <-p.Done() }()
	h := &ingest.Handler{Sink: p, Dedup: ingest.NewDedup(1000), Metrics: ingest.NewMetrics(prometheus.NewRegistry()), Log: zap.NewNop()}

	raws := make([][]byte, streams)
	for s := range streams {
		w := s % workloads
		recs := make([]flow.Record, per)
		for i := range recs {
			recs[i] = flow.Record{LocalAddr: ip(w), LocalPort: uint16(20000 + i), RemoteAddr: ip((w + 1 + i) % workloads), RemotePort: 443,
				Role: flow.RoleClient, StartTime: base + int64(i)*1000, EndTime: base + 2e6 + int64(i)*1000,
				BytesSent: uint64(100 + i), BytesReceived: uint64(5000 + i), SegsSent: 9, SegsReceived: 11, SrttUs: 250,
				Close: flow.CloseNormal, Pid: 4242, Comm: "checkout", Netns: 4026531833, CgroupID: 7777}
		}
		raws[s], _ = proto.Marshal(wire.NewBatch(fmt.Sprint("bench-", s), 1, base, flow.Workload{Name: fmt.Sprint("w", w), Namespace: "shop"}, recs))
	}
	var flows int64
	var mu sync.Mutex
	cpu0, start := cpuTime(), time.Now()
	b.ResetTimer()
	var wg sync.WaitGroup
	for s := range streams {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := int64(0)
			for seq := uint64(1); seq <= uint64(b.N); seq++ {
				var batch flowv1.FlowBatch
				if err := proto.Unmarshal(raws[s], &batch); err != nil {
					b.Error(err)
					return
				}
				batch.Seq = seq
				batch.BaseTime -= int64(seq) * 1e6 // distinct connections in every batch, still inside the owners' ranges
				if ack := h.Handle(context.Background(), "grpc", &batch); ack.Status != flowv1.AckStatus_ACK_STATUS_STORED {
					b.Errorf("ack %v %s", ack.Status, ack.Message)
					return
				}
				n += per
			}
			mu.Lock()
			flows += n
			mu.Unlock()
		}()
	}
	wg.Wait()
	wall, cpu := time.Since(start), cpuTime()-cpu0
	perCPU := float64(flows) / cpu.Seconds()
	b.ReportMetric(perCPU, "flows/cpu-s")
	b.ReportMetric(float64(flows)/wall.Seconds(), "flows/s")
	fmt.Printf("figure | %-52s | %12.0f %-8s | goal %s\n", "collector gRPC batches into DuckDB, attributed, per core", perCPU, "flows/s", ">= 250,000 flows/s per core")
	fmt.Printf("figure | %-52s | %12.0f %-8s | (%d flows, 2 vCPUs)\n", "same, wall clock", float64(flows)/wall.Seconds(), "flows/s", flows)
}

// BenchmarkAttributionLatency: from a connection's close (in the client) to both of its records stored
// and attributed by heartbeat, through real exporters in two namespaces and the real collector. The
// exporter holds a final record for its late-RST grace (200 ms by default) before shipping it.
func BenchmarkAttributionLatency(b *testing.B) {
	nettest.RequirePrivileged(b)
	blue, red := nettest.NewNetns(b), nettest.NewNetns(b)
	nettest.Veth(b, blue, red, "10.197.0.1/24", "10.197.0.2/24")
	dir, addr := b.TempDir(), freeAddr(b)
	col := startCollector(b, dir, addr)
	defer stopCollector(col)
	startExporter(b, blue, addr, "blue", "--close-grace", "200ms")
	startExporter(b, red, addr, "red", "--close-grace", "200ms")
	serve(b, blue, "10.197.0.1:8080", 10, 10)
	var lat []time.Duration
	for i := 0; b.Loop(); i++ {
		exchange(b, red, "10.197.0.1:8080", 10, 10)
		closed := time.Now()
		for {
			n := 0
			for _, f := range flows(b, col, store.FlowQuery{Port: 8080}) {
				if f.Attribution == flow.AttributionHeartbeat {
					n++
				}
			}
			if n == 2*(i+1) {
				break
			}
			if time.Since(closed) > 30*time.Second {
				b.Fatalf("connection %d not stored attributed within 30 s", i)
			}
			time.Sleep(2 * time.Millisecond)
		}
		lat = append(lat, time.Since(closed))
	}
	slices.Sort(lat)
	p := func(q float64) time.Duration { return lat[int(q*float64(len(lat)-1))] }
	b.ReportMetric(float64(p(0.5).Milliseconds()), "p50-ms")
	b.ReportMetric(float64(p(0.99).Milliseconds()), "p99-ms")
	fmt.Printf("figure | %-52s | %5d / %5d ms  | close grace 200 ms, %d connections\n", "attribution latency, close to stored, p50 / p99", p(0.5).Milliseconds(), p(0.99).Milliseconds(), len(lat))
}
