package output

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/flowlens/flowlens/internal/flow"
)

// TestJSONFieldNames: stdout prints the design's record fields with their snake_case names, enums by name,
// one object per line, and the record reads back unchanged.
func TestJSONFieldNames(t *testing.T) {
	var buf bytes.Buffer
	s := NewJSON(&buf)
	in := flow.Record{LocalAddr: netip.MustParseAddr("10.0.0.1"), LocalPort: 1, RemoteAddr: netip.MustParseAddr("::1"),
		RemotePort: 2, Role: flow.RoleServer, StartTime: 3, EndTime: 4, BytesSent: 5, BytesReceived: 6, SegsSent: 7,
		SegsReceived: 8, Retransmits: 9, SrttUs: 10, RttVarUs: 11, MinRttUs: 12, Close: flow.CloseResetReceived,
		Error: "ECONNRESET", Pid: 13, Comm: "nginx", Netns: 14, CgroupID: 15,
		LocalWorkload: flow.Workload{Name: "web", Namespace: "shop", Pod: "web-1"}}
	for range 2 {
		if err := s.Write(&in); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2", len(lines))
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &m); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"bytes_received", "bytes_sent", "cgroup_id", "close", "comm", "end_time", "error", "local_addr",
		"local_port", "local_workload", "min_rtt_us", "netns", "pid", "remote_addr", "remote_port", "retransmits",
		"role", "rtt_var_us", "segs_received", "segs_sent", "srtt_us", "start_time"}
	if !slices.Equal(keys, want) {
		t.Errorf("fields %v\nwant   %v", keys, want)
	}
	if m["role"] != "SERVER" || m["close"] != "RESET_RECEIVED" || m["remote_addr"] != "::1" {
		t.Errorf("role %v close %v remote %v", m["role"], m["close"], m["remote_addr"])
	}
	var out flow.Record
	if err := json.Unmarshal([]byte(lines[1]), &out); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Errorf("round trip:\n got %+v\nwant %+v", out, in)
	}
}

// FuzzAppendJSON: AppendJSON writes exactly what encoding/json writes, whatever the strings hold.
func FuzzAppendJSON(f *testing.F) {
	f.Add("curl", "ECONNREFUSED", "web", uint64(5), int64(-3), true, []byte{127, 0, 0, 1})
	f.Add("a\"b\\c\x01\xff\u2028<&>", "", "ns\n", uint64(1<<63), int64(1<<62), false, []byte{0x20, 1, 0xd, 0xb8, 15: 1})
	f.Fuzz(func(t *testing.T, comm, errName, name string, n uint64, ts int64, pre bool, ip []byte) {
		addr, ok := netip.AddrFromSlice(ip)
		if !ok {
			addr = netip.MustParseAddr("::1")
		}
		r := flow.Record{LocalAddr: addr, RemoteAddr: addr, LocalPort: uint16(n), Role: flow.Role(n % 3),
			StartTime: ts, EndTime: -ts, BytesSent: n, BytesReceived: n / 3, SegsSent: uint32(n), Close: flow.Close(n % 6),
			Error: errName, Comm: comm, CgroupID: n, Preexisting: pre,
			LocalWorkload: flow.Workload{Name: name, Cluster: comm, Node: errName}}
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(&r); err != nil {
			t.Fatal(err)
		}
		got := append(AppendJSON(nil, &r), '\n')
		if !bytes.Equal(got, want.Bytes()) {
			t.Fatalf("AppendJSON:\n%s\nencoding/json:\n%s", got, want.Bytes())
		}
	})
}

func BenchmarkAppendJSON(b *testing.B) {
	r := flow.Record{LocalAddr: netip.MustParseAddr("10.0.0.1"), RemoteAddr: netip.MustParseAddr("10.0.0.2"),
		LocalPort: 443, RemotePort: 50123, Comm: "nginx", BytesSent: 123456, LocalWorkload: flow.Workload{Name: "web", Node: "n1"}}
	var buf []byte
	for b.Loop() {
		buf = AppendJSON(buf[:0], &r)
	}
}
