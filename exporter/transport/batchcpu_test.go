package transport_test

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/udpwire"
	"github.com/flowlens/flowlens/internal/wire"
)

// realistic returns n records with the variety of a busy host: random peers, ports, sizes, RTTs and times.
func realistic(n int) []flow.Record {
	rng := rand.New(rand.NewPCG(1, 2))
	recs := make([]flow.Record, n)
	base := int64(1_795_000_000_000_000_000)
	for i := range recs {
		end := base + rng.Int64N(2e9)
		recs[i] = flow.Record{LocalAddr: netip.MustParseAddr("10.1.2.3"), LocalPort: uint16(32768 + rng.IntN(28000)),
			RemoteAddr: netip.AddrFrom4([4]byte{10, byte(rng.IntN(4)), byte(rng.IntN(256)), byte(rng.IntN(256))}),
			RemotePort: []uint16{443, 80, 5432, 6379, 8080}[rng.IntN(5)], Role: flow.RoleClient,
			StartTime: end - rng.Int64N(5e8), EndTime: end, BytesSent: uint64(rng.IntN(20000)),
			BytesReceived: uint64(rng.IntN(200000)), SegsSent: uint32(3 + rng.IntN(40)), SegsReceived: uint32(3 + rng.IntN(60)),
			SrttUs: uint32(50 + rng.IntN(5000)), RttVarUs: uint32(rng.IntN(2000)), MinRttUs: uint32(30 + rng.IntN(500)),
			Close: flow.CloseNormal, Pid: 4242, Comm: "checkout", Netns: 4026531833, CgroupID: 7777}
	}
	return recs
}

// BenchmarkExporterBatchCPU: the exporter's CPU to turn 512 records into what each transport writes to its
// socket (the syscalls and TLS are not included), and the resulting bytes per flow, on realistic records.
func BenchmarkExporterBatchCPU(b *testing.B) {
	recs := realistic(512)
	w := flow.Workload{Name: "checkout", Namespace: "shop", Node: "n1"}
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedFastest)) // as the transports
	codec, _ := udpwire.NewCodec([]byte("0123456789abcdef0123456789abcdef"))
	defer codec.Close()
	split, _ := udpwire.NewSplitter(codec, 1400)
	var out []byte
	for _, tc := range []struct {
		name string
		run  func(seq uint64) int // returns the bytes produced
	}{
		{"grpc/https: batch, protobuf, zstd", func(seq uint64) int {
			raw, _ := proto.Marshal(wire.NewBatch("e", seq, 0, w, recs))
			out = enc.EncodeAll(raw, out[:0])
			return len(out)
		}},
		{"udp: batch, split into signed datagrams", func(seq uint64) int {
			dgs, err := split.Split(wire.NewBatch("e", seq, 0, w, recs), seq*100)
			if err != nil {
				b.Fatal(err)
			}
			n := 0
			for _, d := range dgs {
				n += len(d.Bytes)
			}
			return n
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var seq uint64
			bytes := 0
			for b.Loop() {
				seq++
				bytes = tc.run(seq)
			}
			perBatch := float64(b.Elapsed().Microseconds()) / float64(seq)
			b.ReportMetric(perBatch, "µs/batch")
			fmt.Printf("figure | %-52s | %12.1f %-8s | goal %s\n", "exporter CPU per 512-flow batch, "+tc.name, perBatch, "µs", "-")
			fmt.Printf("figure | %-52s | %12.2f %-8s | goal %s\n", "  bytes per flow, realistic records, "+tc.name[:strings.Index(tc.name, ":")], float64(bytes)/512, "B", "<= 32 (grpc/https), <= 64 (udp)")
		})
	}
}
