package udpwire

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"google.golang.org/protobuf/proto"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/wire"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func newCodec(t testing.TB) *Codec {
	t.Helper()
	c, err := NewCodec(testKey)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newSplitter(t testing.TB, maxDatagram int) (*Codec, *Splitter) {
	t.Helper()
	c := newCodec(t)
	s, err := NewSplitter(c, maxDatagram)
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

// sidecar is the identity of a pod's exporter, with names as long as real ones.
var sidecar = flow.Workload{Name: "checkout", Namespace: "shop", Pod: "checkout-7d9f8c6b5-x2kqp",
	PodUID: "3f1c2a9e-8b7d-4e6f-9a1b-2c3d4e5f6a7b", Node: "ip-10-1-2-3.eu-west-1.compute.internal", Cluster: "prod-eu1"}

// realistic makes n records as a busy sidecar closes them: mostly short client calls to a dozen services,
// some inbound requests, long-tailed durations and sizes, the odd retransmit, reset and failed connect.
func realistic(n int) []flow.Record {
	rng := rand.New(rand.NewPCG(1, 2))
	tail := func(mean, spread float64) float64 { return mean * (rng.ExpFloat64()*spread + 0.1) }
	local := netip.MustParseAddr("10.1.2.3")
	end := int64(1_795_000_000_000_000_000)
	out := make([]flow.Record, n)
	for i := range out {
		end += int64(rng.IntN(2_000_000))
		dur := int64(tail(20e6, 3))
		sent, recv := uint64(tail(2_000, 4)), uint64(tail(20_000, 4))
		r := flow.Record{LocalAddr: local, Role: flow.RoleClient, StartTime: end - dur, EndTime: end,
			BytesSent: sent, BytesReceived: recv, SegsSent: uint32(sent/1448 + 4), SegsReceived: uint32(recv/1448 + 3),
			SrttUs: uint32(200 + rng.IntN(1800)), RttVarUs: uint32(50 + rng.IntN(400)), MinRttUs: uint32(100 + rng.IntN(200)),
			Close: flow.CloseNormal, Pid: 4242, Comm: "checkout", Netns: 4026532481, CgroupID: 18_446_744_073_709_551,
			LocalWorkload: sidecar}
		if rng.IntN(5) == 0 { // an inbound request on the service port
			r.Role, r.LocalPort = flow.RoleServer, 8080
			r.RemoteAddr = netip.AddrFrom4([4]byte{10, 1, byte(rng.IntN(8)), byte(rng.IntN(250))})
			r.RemotePort = uint16(32768 + rng.IntN(28000))
		} else {
			svc := rng.IntN(12)
			r.LocalPort = uint16(32768 + rng.IntN(28000))
			r.RemoteAddr = netip.AddrFrom4([4]byte{10, 2, byte(svc), byte(10 + svc)})
			r.RemotePort = [...]uint16{443, 80, 5432, 6379, 8080, 9090}[svc%6]
		}
		switch k := rng.IntN(100); {
		case k < 3:
			r.Retransmits = uint32(1 + rng.IntN(3))
		case k < 5:
			r.Close = flow.CloseResetReceived
		case k < 6:
			r.Close, r.Error, r.BytesSent, r.BytesReceived = flow.CloseConnectFailed, "ECONNREFUSED", 0, 0
		}
		out[i] = r
	}
	return out
}

// batchOf is a batch of recs as the exporter sends it, with its status.
func batchOf(recs []flow.Record) *flowv1.FlowBatch {
	b := wire.NewBatch("checkout-7d9f8c6b5-x2kqp", 7, recs[0].EndTime, sidecar, recs)
	b.Status = &flowv1.ExporterStatus{Transport: "udp", TransportReason: "high flow rate: 61234 flows/s",
		StartedAt: recs[0].EndTime - 3600e9, QueuedRecords: 512,
		Drops: map[string]uint64{"kernel/ringbuf_full": 17, "transport/buffer_full": 4096}}
	return b
}

func TestRoundTrip(t *testing.T) {
	c := newCodec(t)
	for _, tc := range []struct {
		name  string
		b     *flowv1.FlowBatch
		flags byte
	}{
		{"a few bytes, plain", &flowv1.FlowBatch{Version: 1, ExporterId: "e", Seq: 1}, 0},
		{"twenty records, zstd", batchOf(realistic(20)), FlagZstd},
	} {
		b := tc.b
		d, err := c.Append([]byte("kept"), 42, b)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(d, []byte("kept"+Magic)) || d[4+HeaderSize-1] != tc.flags {
			t.Errorf("%s: header % x, want magic after the kept bytes and flags %d", tc.name, d[:4+HeaderSize], tc.flags)
		}
		var got flowv1.FlowBatch
		seq, err := c.Decode(d[4:], &got)
		if err != nil || seq != 42 || !proto.Equal(&got, b) {
			t.Errorf("%s: decoded seq %d, err %v, equal %v", tc.name, seq, err, proto.Equal(&got, b))
		}
	}
}

// resign replaces the tag of d so that it is valid for c: how tests and the fuzzer reach past the HMAC.
func resign(c *Codec, d []byte) []byte {
	n := len(d) - TagSize
	var sum [32]byte
	return append(d[:n:n], c.mac(d[:n], sum[:0])[:TagSize]...)
}

// sealRaw builds a signed datagram around payload with the given flags, as no honest encoder would.
func sealRaw(c *Codec, seq uint64, flags byte, payload []byte) []byte {
	d, _ := c.Seal(nil, seq, []byte{0x08, 0x01}) // any valid datagram, for its header
	d = append(append(d[:HeaderSize-1], flags), payload...)
	return resign(c, append(d, make([]byte, TagSize)...))
}

func TestDecodeRefuses(t *testing.T) {
	c := newCodec(t)
	good, err := c.Append(nil, 5, batchOf(realistic(20)))
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCodec([]byte("another key, just as long as it"))
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	forged, _ := other.Append(nil, 5, batchOf(realistic(20)))
	flip := func(i int) []byte { d := bytes.Clone(good); d[i] ^= 1; return d }
	raw, _ := proto.Marshal(batchOf(realistic(2)))
	noID, _ := proto.Marshal(&flowv1.FlowBatch{Version: 1, Seq: 1})
	enc, _ := zstd.NewWriter(nil)
	bomb := enc.EncodeAll(make([]byte, MaxDecoded+1), nil)
	enc.Close()

	for _, tc := range []struct {
		name string
		d    []byte
		want error
	}{
		{"empty", nil, ErrShort},
		{"header and tag less one byte", good[:Overhead-1], ErrShort},
		{"over the largest udp payload", append(bytes.Clone(good), make([]byte, MaxDatagram)...), ErrTooLarge},
		{"garbage", bytes.Repeat([]byte{0xa5}, 300), ErrBadMagic},
		{"flipped magic", flip(0), ErrBadMagic},
		{"wrong key", forged, ErrBadHMAC},
		{"flipped sequence number", flip(7), ErrBadHMAC},
		{"flipped payload byte", flip(len(good) / 2), ErrBadHMAC},
		{"flipped tag", flip(len(good) - 1), ErrBadHMAC},
		{"truncated", good[:len(good)-5], ErrBadHMAC},
		{"sequence number 0", sealRaw(c, 0, 0, raw), ErrMalformed},
		{"unknown flag", sealRaw(c, 1, 2, raw), ErrMalformed},
		{"not protobuf", sealRaw(c, 1, 0, []byte{0xff, 0xff, 0xff}), ErrMalformed},
		{"not zstd", sealRaw(c, 1, FlagZstd, raw), ErrMalformed},
		{"no exporter id", sealRaw(c, 1, 0, noID), ErrMalformed},
		{"decompression bomb", sealRaw(c, 1, FlagZstd, bomb), ErrTooLarge},
	} {
		var b flowv1.FlowBatch
		_, err := c.Decode(tc.d, &b)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
			continue
		}
		for _, e := range []error{ErrShort, ErrBadMagic, ErrBadHMAC, ErrTooLarge, ErrMalformed} {
			if e != tc.want && errors.Is(err, e) {
				t.Errorf("%s: %v is also %v", tc.name, err, e)
			}
		}
		if Reason(err) == "other" {
			t.Errorf("%s: %v has no reason", tc.name, err)
		}
	}
}

func TestNewCodecShortKey(t *testing.T) {
	if _, err := NewCodec(make([]byte, MinKeySize-1)); err == nil {
		t.Fatal("accepted a 15-byte key")
	}
}

// splitAll splits b and decodes every datagram back, checking size and numbering.
func splitAll(t *testing.T, c *Codec, s *Splitter, b *flowv1.FlowBatch, first uint64) []*flowv1.FlowBatch {
	t.Helper()
	dgs, err := s.Split(b, first)
	if err != nil {
		t.Fatal(err)
	}
	var out []*flowv1.FlowBatch
	for k, d := range dgs {
		if len(d.Bytes) > s.max {
			t.Errorf("datagram %d: %d bytes over %d", k, len(d.Bytes), s.max)
		}
		got := &flowv1.FlowBatch{}
		seq, err := c.Decode(d.Bytes, got)
		if err != nil || seq != first+uint64(k) || len(got.Records) != d.Records {
			t.Fatalf("datagram %d: seq %d, %d records, err %v; want seq %d and %d records", k, seq, len(got.Records), err, first+uint64(k), d.Records)
		}
		out = append(out, got)
	}
	return out
}

func TestSplit(t *testing.T) {
	c := newCodec(t)
	b := batchOf(realistic(1000))
	for _, size := range []int{400, 576, 1400, 9000, MaxDatagram} {
		s, err := NewSplitter(c, size)
		if err != nil {
			t.Fatal(err)
		}
		for round := range 2 { // the second round reuses every buffer of the first
			parts := splitAll(t, c, s, b, uint64(1+round*10_000))
			joined := proto.Clone(parts[0]).(*flowv1.FlowBatch)
			for k, p := range parts[1:] {
				joined.Records = append(joined.Records, p.Records...)
				if p.Status != nil || p.ExporterId != b.ExporterId || p.SendTime != b.SendTime {
					t.Fatalf("size %d: datagram %d: status %v, exporter %q, send time %d: want no status, the batch's fields",
						size, k+1, p.Status, p.ExporterId, p.SendTime)
				}
			}
			if !proto.Equal(joined, b) {
				t.Fatalf("size %d: the datagrams do not add up to the batch", size)
			}
			if size == 1400 && round == 0 {
				t.Logf("1400-byte datagrams: %d for %d records", len(parts), len(b.Records))
			}
		}
	}
}

func TestSplitEdges(t *testing.T) {
	c, s := newSplitter(t, 1400)
	empty := batchOf(realistic(1))
	empty.Records = nil
	if parts := splitAll(t, c, s, empty, 1); len(parts) != 1 || !proto.Equal(parts[0], empty) {
		t.Errorf("a batch without records made %d datagrams", len(parts))
	}

	recs := realistic(50)
	rng := rand.New(rand.NewPCG(3, 4))
	comm := make([]byte, 3000) // random letters: about 1,800 bytes however well compressed
	for i := range comm {
		comm[i] = byte('a' + rng.IntN(26))
	}
	recs[30].Comm = string(comm)
	if _, err := s.Split(batchOf(recs), 1); !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "record 30") {
		t.Errorf("a 3000-byte record in 1400-byte datagrams: %v, want ErrTooLarge naming record 30", err)
	}
	recs[30].Comm = strings.Repeat("x", 3000) // as large, but compressible: it fits
	splitAll(t, c, s, batchOf(recs), 1)

	for _, size := range []int{0, Overhead + 99, MaxDatagram + 1} {
		if _, err := NewSplitter(c, size); err == nil {
			t.Errorf("datagram size %d accepted", size)
		}
	}
}

// FuzzDecode: Decode never panics, refuses only with one of its errors, and whatever it accepts seals and
// decodes again to the same batch. With resign set the fuzzer's bytes get a valid tag, so it reaches the
// decompressor and the protobuf parser behind the HMAC.
func FuzzDecode(f *testing.F) {
	c := newCodec(f)
	for _, n := range []int{1, 30} {
		d, _ := c.Append(nil, uint64(n), batchOf(realistic(n)))
		f.Add(d, false)
		f.Add(d, true)
	}
	f.Add([]byte(Magic+"\x00\x00\x00\x00\x00\x00\x00\x01\x01\x28\xb5\x2f\xfd"+strings.Repeat("\x00", 20)), true)
	f.Fuzz(func(t *testing.T, d []byte, sign bool) {
		if sign && len(d) >= Overhead {
			d = resign(c, d)
		}
		var b flowv1.FlowBatch
		seq, err := c.Decode(d, &b)
		if err != nil {
			if Reason(err) == "other" {
				t.Fatalf("error without a reason: %v", err)
			}
			return
		}
		again, err := c.Append(nil, seq, &b)
		if err != nil {
			// A payload compressed better than our encoder manages may not fit a datagram once we seal it.
			if errors.Is(err, ErrTooLarge) && d[HeaderSize-1] == FlagZstd {
				return
			}
			t.Fatalf("a decoded batch does not seal: %v", err)
		}
		var b2 flowv1.FlowBatch
		seq2, err := c.Decode(again, &b2)
		if err != nil || seq2 != seq || !proto.Equal(&b, &b2) {
			t.Fatalf("re-sealed batch: seq %d (want %d), err %v, equal %v", seq2, seq, err, proto.Equal(&b, &b2))
		}
	})
}

func printFigure(name string, value float64, unit, goal string) {
	fmt.Printf("figure | %-52s | %12.2f %-8s | goal %s\n", name, value, unit, goal)
}

// BenchmarkBytesPerFlow prints the bytes a flow costs on the wire in full 1400-byte datagrams of realistic
// records: the UDP payload (header, batch fields, records, HMAC), and with the IPv4 and UDP headers. It
// times Split, which is what the exporter spends per batch.
func BenchmarkBytesPerFlow(b *testing.B) {
	_, s := newSplitter(b, 1400)
	batch := batchOf(realistic(4096))
	var dgs []Datagram
	var err error
	for b.Loop() {
		if dgs, err = s.Split(batch, 1); err != nil {
			b.Fatal(err)
		}
	}
	full := dgs[:len(dgs)-1] // the last datagram holds what was left over
	bytes, flows, zstdDgs := 0, 0, 0
	for _, d := range full {
		bytes += len(d.Bytes)
		flows += d.Records
		if d.Bytes[HeaderSize-1] == FlagZstd {
			zstdDgs++
		}
	}
	perFlow := float64(bytes) / float64(flows)
	withIP := float64(bytes+28*len(full)) / float64(flows)
	plain := float64(proto.Size(batch)) / float64(len(batch.Records))
	b.ReportMetric(perFlow, "B/flow")
	b.ReportMetric(float64(flows)/float64(len(full)), "flows/datagram")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(batch.Records)), "ns/flow")
	printFigure("udp bytes per flow, 1400 B datagrams, payload", perFlow, "B", "<= 64 B")
	printFigure("udp bytes per flow, 1400 B datagrams, with IPv4+UDP", withIP, "B", "<= 64 B")
	printFigure("udp flows per 1400 B datagram", float64(flows)/float64(len(full)), "flows", "-")
	printFigure("udp datagrams compressed (zstd), share", float64(zstdDgs)/float64(len(full)), "", "-")
	printFigure("protobuf bytes per flow, same records, one batch", plain, "B", "-")
	printFigure("udp split+seal time per flow (exporter)", float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(batch.Records)), "ns", "-")
}

// BenchmarkDecode times Decode of a full 1400-byte datagram, per flow.
func BenchmarkDecode(b *testing.B) {
	c, s := newSplitter(b, 1400)
	dgs, err := s.Split(batchOf(realistic(200)), 1)
	if err != nil {
		b.Fatal(err)
	}
	d := dgs[0]
	for b.Loop() {
		var batch flowv1.FlowBatch
		if _, err := c.Decode(d.Bytes, &batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(d.Records), "ns/flow")
}
