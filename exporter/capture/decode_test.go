package capture

import (
	"net/netip"
	"testing"
	"unsafe"

	"github.com/flowlens/flowlens/bpf"
	"github.com/flowlens/flowlens/internal/flow"
)

func raw(k *bpf.FlowFlowEvent) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(k)), unsafe.Sizeof(*k))
}

func TestDecode(t *testing.T) {
	c := clock{offset: 1_000_000_000}
	mapped := [16]uint8{10: 0xff, 11: 0xff, 12: 10, 13: 0, 14: 0, 15: 7}
	v6 := [16]uint8{0x20, 0x01, 0x0d, 0xb8, 15: 1}
	tests := []struct {
		name string
		in   bpf.FlowFlowEvent
		want Event
	}{
		{"ipv4 final record with an error",
			bpf.FlowFlowEvent{Sk: 9, Kind: uint8(KindClose), Family: 2, Laddr: [16]uint8{127, 0, 0, 1}, Raddr: [16]uint8{10, 1, 2, 3},
				Lport: 5000, Rport: 80, Role: 1, Close: 4, SkErr: 111, StartNs: 5, EndNs: 9, BytesSent: 3, BytesReceived: 4,
				SegsOut: 1, SegsIn: 2, TotalRetrans: 6, SrttUs: 7, RttvarUs: 8, MinRttUs: 2, Pid: 42, Netns: 77, CgroupId: 88,
				Comm: [16]int8{'c', 'u', 'r', 'l'}},
			Event{Kind: KindClose, Sock: 9, Record: flow.Record{
				LocalAddr: netip.MustParseAddr("127.0.0.1"), LocalPort: 5000, RemoteAddr: netip.MustParseAddr("10.1.2.3"), RemotePort: 80,
				Role: flow.RoleClient, StartTime: 1_000_000_005, EndTime: 1_000_000_009, BytesSent: 3, BytesReceived: 4,
				SegsSent: 1, SegsReceived: 2, Retransmits: 6, SrttUs: 7, RttVarUs: 8, MinRttUs: 2, Close: flow.CloseConnectFailed,
				Error: "ECONNREFUSED", Pid: 42, Comm: "curl", Netns: 77, CgroupID: 88}}},
		{"v4-mapped IPv6 is reported as IPv4; interim records carry no error",
			bpf.FlowFlowEvent{Kind: uint8(KindActive), Family: 10, Laddr: mapped, Raddr: v6, Role: 2, SkErr: 104, StartNs: 1},
			Event{Kind: KindActive, Record: flow.Record{LocalAddr: netip.MustParseAddr("10.0.0.7"),
				RemoteAddr: netip.MustParseAddr("2001:db8::1"), Role: flow.RoleServer, StartTime: 1_000_000_001, EndTime: 1_000_000_000}}},
		{"preexisting connection has no start time",
			bpf.FlowFlowEvent{Kind: uint8(KindClose), Family: 2, Flags: uint8(bpf.FlowEventFlagFLAG_PREEXISTING), StartNs: 0, EndNs: 3, Close: 1},
			Event{Kind: KindClose, Record: flow.Record{LocalAddr: netip.MustParseAddr("0.0.0.0"), RemoteAddr: netip.MustParseAddr("0.0.0.0"),
				Preexisting: true, EndTime: 1_000_000_003, Close: flow.CloseNormal}}},
		{"late RST carries only the socket",
			bpf.FlowFlowEvent{Kind: uint8(KindResetSent), Sk: 0xffff},
			Event{Kind: KindResetSent, Sock: 0xffff}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Event
			if err := Decode(raw(&tt.in), c, &got); err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got  %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	var ev Event
	if err := Decode(make([]byte, 10), clock{}, &ev); err == nil {
		t.Error("a short record decoded")
	}
	k := bpf.FlowFlowEvent{Kind: 99}
	if err := Decode(raw(&k), clock{}, &ev); err == nil {
		t.Error("an unknown kind decoded")
	}
}

// FuzzDecode: whatever the bytes, Decode returns an event or an error, never a panic.
func FuzzDecode(f *testing.F) {
	k := bpf.FlowFlowEvent{Kind: uint8(KindClose), Family: 10, Comm: [16]int8{'a', 'b'}}
	f.Add(raw(&k))
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev Event
		if err := Decode(b, clock{}, &ev); err == nil && ev.Kind != KindResetSent {
			if !ev.Record.LocalAddr.IsValid() || len(ev.Record.Comm) > 16 {
				t.Fatalf("decoded %+v", ev)
			}
		}
	})
}
