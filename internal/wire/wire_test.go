package wire

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/flowlens/flowlens/internal/flow"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

func sample(i int) flow.Record {
	return flow.Record{
		LocalAddr: netip.MustParseAddr("10.1.2.3"), LocalPort: uint16(40000 + i), RemoteAddr: netip.MustParseAddr("10.9.8.7"),
		RemotePort: 443, Role: flow.RoleClient, StartTime: 1_795_000_000_000_000_000 + int64(i)*1_000_000,
		EndTime: 1_795_000_000_000_000_000 + int64(i)*1_000_000 + 2_500_000, BytesSent: 517 + uint64(i), BytesReceived: 5_123,
		SegsSent: 9, SegsReceived: 11, SrttUs: 250, RttVarUs: 40, MinRttUs: 180, Close: flow.CloseNormal,
		Pid: 4242, Comm: "checkout", Netns: 4026531833, CgroupID: 7777,
		LocalWorkload: flow.Workload{Name: "checkout", Namespace: "shop", Pod: "checkout-7d9f", Node: "n1"},
	}
}

func TestRoundTrip(t *testing.T) {
	w := sample(0).LocalWorkload
	recs := []flow.Record{sample(0), sample(1), sample(2)}
	recs[1].Preexisting, recs[1].StartTime, recs[1].Role = true, 0, flow.RoleUnknown
	recs[2].LocalWorkload = flow.Workload{Name: "other"}
	recs[2].RemoteAddr = netip.MustParseAddr("2001:db8::1")
	recs[2].Close, recs[2].Error = flow.CloseConnectFailed, "ECONNREFUSED"

	b := NewBatch("exp-1", 7, 1, w, recs)
	raw, err := proto.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	var back flowv1.FlowBatch
	if err := proto.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	got, err := Records(&back)
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		if got[i] != recs[i] {
			t.Errorf("record %d:\n got %+v\nwant %+v", i, got[i], recs[i])
		}
	}
}

func TestRecordsRejects(t *testing.T) {
	good := func() *flowv1.FlowBatch { return NewBatch("e", 1, 1, flow.Workload{}, []flow.Record{sample(0)}) }
	for _, tc := range []struct {
		name  string
		spoil func(*flowv1.FlowBatch)
	}{
		{"unknown version", func(b *flowv1.FlowBatch) { b.Version = 2 }},
		{"no exporter id", func(b *flowv1.FlowBatch) { b.ExporterId = "" }},
		{"no seq", func(b *flowv1.FlowBatch) { b.Seq = 0 }},
		{"5-byte address", func(b *flowv1.FlowBatch) { b.Records[0].LocalAddr = []byte{1, 2, 3, 4, 5} }},
		{"port out of range", func(b *flowv1.FlowBatch) { b.Records[0].RemotePort = 70000 }},
		{"unknown close", func(b *flowv1.FlowBatch) { b.Records[0].Close = 99 }},
		{"unset close", func(b *flowv1.FlowBatch) { b.Records[0].Close = 0 }},
		{"unknown role", func(b *flowv1.FlowBatch) { b.Records[0].Role = 9 }},
	} {
		b := good()
		tc.spoil(b)
		if _, err := Records(b); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

// FuzzRecords: any bytes that parse as a batch either decode or are refused with an error, never a panic.
func FuzzRecords(f *testing.F) {
	raw, _ := proto.Marshal(NewBatch("e", 1, 1, flow.Workload{}, []flow.Record{sample(0), sample(1)}))
	f.Add(raw)
	f.Fuzz(func(t *testing.T, b []byte) {
		var batch flowv1.FlowBatch
		if proto.Unmarshal(b, &batch) != nil {
			return
		}
		Records(&batch)
	})
}

// BenchmarkBytesPerFlow prints the wire size of a flow in a batch of 256, plain and gzip-compressed (the
// compression gRPC and HTTPS use).
func BenchmarkBytesPerFlow(b *testing.B) {
	recs := make([]flow.Record, 256)
	for i := range recs {
		recs[i] = sample(i)
		recs[i].RemoteAddr = netip.AddrFrom4([4]byte{10, 9, byte(i % 7), byte(i % 23)})
		recs[i].BytesSent = uint64(100 + i*37%5000)
		recs[i].BytesReceived = uint64(1000 + i*91%50000)
		recs[i].SrttUs = uint32(100 + i%400)
	}
	batch := NewBatch("exp-1", 1, recs[0].EndTime, recs[0].LocalWorkload, recs)
	raw, _ := proto.Marshal(batch)
	var z bytes.Buffer
	for b.Loop() {
		z.Reset()
		w := gzip.NewWriter(&z)
		w.Write(raw)
		w.Close()
	}
	plain, gz := float64(len(raw))/256, float64(z.Len())/256
	b.ReportMetric(plain, "B/flow")
	b.ReportMetric(gz, "B/flow-gzip")
	fmt.Printf("figure | %-52s | %12.2f %-8s | goal %s\n", "wire bytes per flow, protobuf, batch of 256", plain, "B", "<= 64 B (UDP)")
	fmt.Printf("figure | %-52s | %12.2f %-8s | goal %s\n", "wire bytes per flow, protobuf+gzip, batch of 256", gz, "B", "<= 32 B (gRPC, HTTPS)")
}
