package flowtable

import (
	"net/netip"
	"testing"
	"time"

	"github.com/flowlens/flowlens/exporter/capture"
	"github.com/flowlens/flowlens/internal/flow"
)

type sink struct{ got []flow.Record }

func (s *sink) emit(r *flow.Record) { s.got = append(s.got, *r) }

func closeEv(sock uint64, port uint16, c flow.Close) *capture.Event {
	return &capture.Event{Kind: capture.KindClose, Sock: sock, Record: flow.Record{
		LocalAddr: netip.MustParseAddr("127.0.0.1"), LocalPort: port, Close: c}}
}

func ports(rs []flow.Record) []uint16 {
	var p []uint16
	for _, r := range rs {
		p = append(p, r.LocalPort)
	}
	return p
}

func TestTable(t *testing.T) {
	t0 := time.Unix(1000, 0)
	grace := 200 * time.Millisecond
	type step struct {
		at   time.Duration // since t0
		ev   *capture.Event
		exp  bool // run Expire at `at` instead of adding ev
		want []uint16
	}
	tests := []struct {
		name      string
		steps     []step
		wantClose map[uint16]flow.Close
		wantStats Stats
	}{
		{
			name: "interim records pass straight through",
			steps: []step{
				{ev: &capture.Event{Kind: capture.KindActive, Sock: 1, Record: flow.Record{LocalPort: 7}}, want: []uint16{7}},
			},
			wantClose: map[uint16]flow.Close{7: flow.CloseActive},
		},
		{
			name: "final record waits out its grace",
			steps: []step{
				{ev: closeEv(1, 10, flow.CloseNormal)},
				{at: 199 * time.Millisecond, exp: true},
				{at: 200 * time.Millisecond, exp: true, want: []uint16{10}},
			},
			wantClose: map[uint16]flow.Close{10: flow.CloseNormal},
		},
		{
			name: "late RST amends a normal close",
			steps: []step{
				{ev: closeEv(1, 10, flow.CloseNormal)},
				{at: 1 * time.Millisecond, ev: &capture.Event{Kind: capture.KindResetSent, Sock: 1}},
				{at: time.Second, exp: true, want: []uint16{10}},
			},
			wantClose: map[uint16]flow.Close{10: flow.CloseResetSent},
			wantStats: Stats{Matched: 1, Amended: 1},
		},
		{
			name: "late RST leaves a connect failure alone",
			steps: []step{
				{ev: closeEv(1, 10, flow.CloseConnectFailed)},
				{ev: &capture.Event{Kind: capture.KindResetSent, Sock: 1}},
				{at: time.Second, exp: true, want: []uint16{10}},
			},
			wantClose: map[uint16]flow.Close{10: flow.CloseConnectFailed},
			wantStats: Stats{Matched: 1},
		},
		{
			name: "RST after the grace is unmatched",
			steps: []step{
				{ev: closeEv(1, 10, flow.CloseNormal)},
				{at: time.Second, exp: true, want: []uint16{10}},
				{at: time.Second, ev: &capture.Event{Kind: capture.KindResetSent, Sock: 1}},
			},
			wantClose: map[uint16]flow.Close{10: flow.CloseNormal},
			wantStats: Stats{Unmatched: 1},
		},
		{
			name: "reused socket address emits the older record at once and amends only the newer",
			steps: []step{
				{ev: closeEv(1, 10, flow.CloseNormal)},
				{at: 10 * time.Millisecond, ev: closeEv(1, 11, flow.CloseNormal), want: []uint16{10}},
				{at: 11 * time.Millisecond, ev: &capture.Event{Kind: capture.KindResetSent, Sock: 1}},
				{at: time.Second, exp: true, want: []uint16{11}},
			},
			wantClose: map[uint16]flow.Close{10: flow.CloseNormal, 11: flow.CloseResetSent},
			wantStats: Stats{Matched: 1, Amended: 1},
		},
		{
			name: "records leave in arrival order",
			steps: []step{
				{ev: closeEv(1, 10, flow.CloseNormal)},
				{at: 50 * time.Millisecond, ev: closeEv(2, 11, flow.CloseNormal)},
				{at: 100 * time.Millisecond, ev: closeEv(3, 12, flow.CloseNormal)},
				{at: 260 * time.Millisecond, exp: true, want: []uint16{10, 11}},
				{at: 300 * time.Millisecond, exp: true, want: []uint16{12}},
			},
			wantClose: map[uint16]flow.Close{10: flow.CloseNormal, 11: flow.CloseNormal, 12: flow.CloseNormal},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &sink{}
			tab := New(grace, s.emit)
			all := map[uint16]flow.Close{}
			for i, st := range tt.steps {
				before := len(s.got)
				if st.exp {
					tab.Expire(t0.Add(st.at))
				} else {
					tab.Add(st.ev, t0.Add(st.at))
				}
				got := ports(s.got[before:])
				if len(got) != len(st.want) || (len(got) > 0 && !equal(got, st.want)) {
					t.Fatalf("step %d: emitted ports %v, want %v", i, got, st.want)
				}
			}
			for _, r := range s.got {
				all[r.LocalPort] = r.Close
			}
			for p, c := range tt.wantClose {
				if all[p] != c {
					t.Errorf("port %d: close %v, want %v", p, all[p], c)
				}
			}
			if len(all) != len(tt.wantClose) {
				t.Errorf("emitted %d records, want %d", len(all), len(tt.wantClose))
			}
			if tab.Stats() != tt.wantStats {
				t.Errorf("stats %+v, want %+v", tab.Stats(), tt.wantStats)
			}
			if tab.Held() != 0 {
				t.Errorf("%d records still held", tab.Held())
			}
		})
	}
}

func equal(a, b []uint16) bool {
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return len(a) == len(b)
}

func TestFlushEmitsEverythingHeld(t *testing.T) {
	s := &sink{}
	tab := New(time.Hour, s.emit)
	tab.Add(closeEv(1, 10, flow.CloseNormal), time.Now())
	tab.Add(closeEv(2, 11, flow.CloseResetReceived), time.Now())
	tab.Flush()
	if got := ports(s.got); !equal(got, []uint16{10, 11}) {
		t.Fatalf("flushed %v", got)
	}
	if tab.Held() != 0 {
		t.Fatalf("%d still held", tab.Held())
	}
}
