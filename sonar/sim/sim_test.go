package sim

import (
	"bytes"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

const sec = int64(time.Second)

// reuseTrace is a hand-built trace with one IP reuse: alpha holds X for 10 s, beta gets X at 12 s, and
// caller connects to beta at 13 s. The feed is late: alpha's delete arrives at 18 s and beta's first
// event at 20 s, after caller's record (15 s) and beta's (16 s) have arrived.
func reuseTrace() *Trace {
	t0 := epoch
	x, y := netip.MustParseAddr("10.244.0.2"), netip.MustParseAddr("10.244.0.3")
	w := func(name, pod string) flow.Workload {
		return flow.Workload{Name: name, Namespace: "shop", Pod: pod, PodUID: pod + "-uid", Node: "node-0", Cluster: clusterName}
	}
	return &Trace{
		Start: t0, End: t0 + 60*sec, Offsets: []int64{0},
		Pods: []Pod{
			{W: w("alpha", "alpha-1"), IP: x, Start: t0, Ready: t0 + sec, Terminating: t0 + 9*sec, End: t0 + 10*sec, Removed: t0 + 10*sec},
			{W: w("beta", "beta-1"), IP: x, Start: t0 + 12*sec, Ready: t0 + 12*sec, End: t0 + 60*sec, Running: true},
			{W: w("caller", "caller-1"), IP: y, Start: t0, End: t0 + 60*sec, Running: true},
		},
		Conns: []Conn{{Client: 2, Server: 1, Dialled: x, Truth: w("beta", "beta-1"), ClientPort: 40000, ServerPort: serverPort,
			Start: t0 + 13*sec, End: t0 + 13*sec + 200*int64(time.Millisecond), Latency: 100_000, Close: flow.CloseNormal}},
		Batches: []Batch{
			{Pod: 2, Sent: t0 + 15*sec, Arrival: t0 + 15*sec, Recs: []Rec{{Conn: 0, Close: flow.CloseNormal, End: t0 + 13*sec + 200*int64(time.Millisecond)}}},
			{Pod: 1, Sent: t0 + 16*sec, Arrival: t0 + 16*sec, Recs: []Rec{{Conn: 0, Server: true, Close: flow.CloseNormal, End: t0 + 13*sec + 200*int64(time.Millisecond)}}},
		},
		Feed: []FeedItem{
			{At: t0 + sec/10, Of: t0, Pod: 0, Kind: FeedUpdate},
			{At: t0 + sec/10, Of: t0, Pod: 2, Kind: FeedUpdate},
			{At: t0 + 18*sec, Of: t0 + 10*sec, Pod: 0, Kind: FeedDeleted},
			{At: t0 + 20*sec, Of: t0 + 12*sec, Pod: 1, Kind: FeedUpdate},
		},
	}
}

func result(t testing.TB, r *Report, name string) Result {
	t.Helper()
	for _, res := range r.Results {
		if res.Strategy == name {
			return res
		}
	}
	t.Fatalf("no result for %s", name)
	return Result{}
}

func TestReuseLatestOwnerMisattributesHeartbeatDoesNot(t *testing.T) {
	r := Score(reuseTrace(), Defaults())
	hb := result(t, r, Heartbeat)
	if want := (Counts{Correct: 2}); hb.Flows != want {
		t.Errorf("heartbeat flows = %+v, want %+v", hb.Flows, want)
	}
	if want := (Counts{Correct: 1}); hb.Edges != want {
		t.Errorf("heartbeat edges = %+v, want %+v", hb.Edges, want)
	}
	if hb.ByEvidence[flow.AttributionHeartbeat] != 2 {
		t.Errorf("heartbeat decided by %v, want 2 heartbeats", hb.ByEvidence)
	}
	// The client record arrived at 15 s with no heartbeat for X yet: parked, then decided when beta's
	// record arrived at 16 s.
	if hb.Latency[3] != time.Second {
		t.Errorf("heartbeat max latency = %v, want 1s", hb.Latency[3])
	}

	lo := result(t, r, LatestOwner)
	if want := (Counts{Correct: 1, Misattributed: 1}); lo.Flows != want {
		t.Errorf("latest-owner flows = %+v, want %+v", lo.Flows, want)
	}
	if len(lo.Misattributions) != 1 || lo.Misattributions[0].Got.Pod != "alpha-1" || lo.Misattributions[0].Truth.Pod != "beta-1" {
		t.Errorf("latest-owner misattributions = %+v, want the client record given to alpha-1", lo.Misattributions)
	}
	if want := (Counts{Correct: 1, Misattributed: 1}); lo.Edges != want {
		t.Errorf("latest-owner edges = %+v, want %+v (caller→alpha does not exist)", lo.Edges, want)
	}

	// Without heartbeats, the feed knew alpha only at 0.1 s and beta not at all when the records came.
	eo := result(t, r, EventOnly)
	if want := (Counts{Unattributed: 2}); eo.Flows != want {
		t.Errorf("event-only flows = %+v, want %+v", eo.Flows, want)
	}
	// Believing alpha until its delete was seen gives the client record to alpha too.
	if open := result(t, r, EventOpen); open.Flows.Misattributed != 1 {
		t.Errorf("event-open flows = %+v, want 1 misattributed", open.Flows)
	}
}

func TestReuseLostHeartbeatStaysUnattributed(t *testing.T) {
	// beta's batch is lost: nothing proves who held X at 13 s before the deadline, and the feed's
	// claim for beta (from 20 s on, started at its network-ready time of 12 s) decides at the deadline.
	tr := reuseTrace()
	tr.Batches[1].Lost = true
	r := Score(tr, Defaults())
	hb := result(t, r, Heartbeat)
	if want := (Counts{Correct: 1}); hb.Flows != want {
		t.Errorf("heartbeat flows = %+v, want %+v", hb.Flows, want)
	}
	if hb.ByEvidence[flow.AttributionPodEvent] != 1 || hb.Latency[3] != 10*time.Second {
		t.Errorf("heartbeat decided by %v, max latency %v; want one POD_EVENT at the 10s deadline", hb.ByEvidence, hb.Latency[3])
	}
	// With beta's event lost as well, it stays unattributed rather than go to alpha.
	tr.Feed = tr.Feed[:3]
	hb = result(t, Score(tr, Defaults()), Heartbeat)
	if want := (Counts{Unattributed: 1}); hb.Flows != want {
		t.Errorf("without beta's event: heartbeat flows = %+v, want %+v", hb.Flows, want)
	}
}

func TestWatcherRules(t *testing.T) {
	tr := reuseTrace()
	tr.Offsets = []int64{int64(time.Millisecond)}
	w := watcher{t: tr, lag: int64(time.Minute), state: make([]watchState, len(tr.Pods))}
	t0 := epoch
	check := func(what string, got []index.Claim, start, end int64) {
		t.Helper()
		if len(got) != 1 || got[0].Start != start || got[0].End != end || got[0].Evidence != index.EvidencePodEvent {
			t.Errorf("%s: claims %+v, want one POD_EVENT [%d, %d)", what, got, start-t0, end-t0)
		}
	}
	// First sight: from the network-ready time (node clock) to the receipt.
	check("first update", w.observe(FeedItem{At: t0 + 2*sec, Of: t0 + sec, Pod: 0}), t0+int64(time.Millisecond), t0+2*sec)
	// A late event showing the deletion request stops at the request (9 s), not at its receipt.
	check("terminating", w.observe(FeedItem{At: t0 + 14*sec, Of: t0 + 9*sec, Pod: 0}), t0+int64(time.Millisecond), t0+9*sec)
	if c := w.observe(FeedItem{At: t0 + 15*sec, Of: t0 + 10*sec, Pod: 0, Kind: FeedDeleted}); len(c) != 0 {
		t.Errorf("delete after the request was seen: claims %+v, want none", c)
	}
	// A resync extends running pods to a lag before the tick, unless the watch failed within the lag.
	check("update caller", w.observe(FeedItem{At: t0 + sec, Of: t0, Pod: 2}), t0+int64(time.Millisecond), t0+sec)
	if c := w.observe(FeedItem{At: t0 + 30*sec, Pod: -1, Kind: FeedResync}); len(c) != 0 {
		t.Errorf("resync within the lag of the start: claims %+v, want none", c)
	}
	check("resync", w.observe(FeedItem{At: t0 + 90*sec, Pod: -1, Kind: FeedResync}), t0+int64(time.Millisecond), t0+30*sec)
	w.observe(FeedItem{At: t0 + 100*sec, Pod: -1, Kind: FeedWatchError})
	if c := w.observe(FeedItem{At: t0 + 150*sec, Pod: -1, Kind: FeedResync}); len(c) != 0 {
		t.Errorf("resync after a watch error: claims %+v, want none (held back)", c)
	}
	// A pod a relist finds gone claims nothing more.
	w.observe(FeedItem{At: t0 + 151*sec, Of: t0 + 151*sec, Pod: 2, Kind: FeedUnknownDelete})
	if c := w.observe(FeedItem{At: t0 + 152*sec, Of: t0 + 152*sec, Pod: 2}); len(c) != 0 {
		t.Errorf("update after an unknown delete: claims %+v, want none", c)
	}
	// The margin shortens the end, never moves the start before the pod had its IP.
	w = watcher{t: tr, margin: 5 * sec, lag: int64(time.Minute), state: make([]watchState, len(tr.Pods))}
	if c := w.observe(FeedItem{At: t0 + 14*sec, Of: t0 + 12*sec, Pod: 1}); len(c) != 0 {
		t.Errorf("first update within the margin: claims %+v, want none", c)
	}
	check("update past the margin", w.observe(FeedItem{At: t0 + 20*sec, Of: t0 + 19*sec, Pod: 1}), t0+12*sec+int64(time.Millisecond), t0+15*sec)
}

// small is the default scenario over three minutes: enough churn to reuse IPs dozens of times.
func small() Config {
	c := Defaults()
	c.Duration = 3 * time.Minute
	return c
}

func TestDeterministic(t *testing.T) {
	a, err := Run(small())
	if err != nil {
		t.Fatal(err)
	}
	b, err := Run(small())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("two runs with seed %d differ:\n%+v\n%+v", small().Seed, a, b)
	}
	var wa, wb bytes.Buffer
	if err := a.Write(&wa); err != nil {
		t.Fatal(err)
	}
	if err := b.Write(&wb); err != nil {
		t.Fatal(err)
	}
	if wa.String() != wb.String() {
		t.Fatalf("reports differ:\n%s\n%s", wa.String(), wb.String())
	}
	other := small()
	other.Seed++
	c, err := Run(other)
	if err != nil {
		t.Fatal(err)
	}
	if reflect.DeepEqual(a.Trace, c.Trace) {
		t.Errorf("seeds %d and %d gave the same trace %+v", small().Seed, other.Seed, a.Trace)
	}
}

func TestScenarioHeartbeatNeverMisattributes(t *testing.T) {
	r, err := Run(small())
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := r.Write(&out); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	s := r.Trace
	if s.Reuses < 20 || s.JobPods < 10 || s.Conns < 10000 {
		t.Fatalf("the scenario churns too little to test anything: %+v", s)
	}
	for _, res := range r.Results {
		if res.Flows.Total() != s.Arrived {
			t.Errorf("%s scored %d flows, %d arrived", res.Strategy, res.Flows.Total(), s.Arrived)
		}
	}
	hb := result(t, r, Heartbeat)
	if hb.Flows.Misattributed != 0 || hb.Edges.Misattributed != 0 {
		t.Errorf("heartbeat misattributed %d flows and %d edges, want none: %+v", hb.Flows.Misattributed, hb.Edges.Misattributed, hb.Misattributions)
	}
	if limit := s.Arrived / 200; hb.Flows.Unattributed > limit {
		t.Errorf("heartbeat left %d flows unattributed, want at most 0.5%% (%d)", hb.Flows.Unattributed, limit)
	}
	if hb.Latency[3] > small().deadline() {
		t.Errorf("heartbeat decided a record %v after its arrival, past the deadline %v", hb.Latency[3], small().deadline())
	}
	if lo := result(t, r, LatestOwner); lo.Flows.Misattributed == 0 || lo.Edges.Misattributed == 0 {
		t.Errorf("latest-owner misattributed %d flows and %d edges on a churning trace, want some", lo.Flows.Misattributed, lo.Edges.Misattributed)
	}
	if !strings.Contains(out.String(), "latest-owner") {
		t.Errorf("report lacks the latest-owner row:\n%s", out.String())
	}
}

func TestValidate(t *testing.T) {
	if err := Defaults().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"loss above 1", func(c *Config) { c.BatchLoss = 1.5 }, "batch loss must be in [0, 1], got 1.5"},
		{"reuse delay inverted", func(c *Config) { c.ReuseDelayMin = 6 * time.Second }, "reuse delay: need 0 <= min <= max, got 6s..5s"},
		{"no nodes", func(c *Config) { c.Nodes = 0 }, "nodes must be at least 1, got 0"},
		{"jitter crossing ticks", func(c *Config) { c.FlushJitter = 0.5 }, "flush jitter must be below 0.5"},
		{"no flush interval", func(c *Config) { c.FlushInterval = 0 }, "flush interval must be positive, got 0s"},
	} {
		c := Defaults()
		tc.edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want %q", tc.name, err, tc.want)
		}
		if _, err := Generate(c); err == nil {
			t.Errorf("%s: Generate accepted the config", tc.name)
		}
	}
}

// A late update (alpha's readiness, sent at 1 s, received at 14 s) reaches the watcher after alpha
// released X at 10 s and beta took it at 12 s, and before the event that shows alpha's deletion: by
// sonar/kube's rule it extends alpha's claim to 14 s. beta's own record is lost and its event comes
// after the deadline, so at the deadline that claim is all the index knows of X at 13 s.
func TestLateUpdateNeedsEventMargin(t *testing.T) {
	tr := reuseTrace()
	tr.Batches[1].Lost = true
	t0 := epoch
	tr.Feed = []FeedItem{
		{At: t0 + sec/10, Of: t0, Pod: 0, Kind: FeedUpdate},
		{At: t0 + sec/10, Of: t0, Pod: 2, Kind: FeedUpdate},
		{At: t0 + 14*sec, Of: t0 + sec, Pod: 0, Kind: FeedUpdate},
		{At: t0 + 15*sec, Of: t0 + 9*sec, Pod: 0, Kind: FeedUpdate},
		{At: t0 + 16*sec, Of: t0 + 10*sec, Pod: 0, Kind: FeedDeleted},
		{At: t0 + 30*sec, Of: t0 + 12*sec, Pod: 1, Kind: FeedUpdate},
	}
	cfg := Defaults()
	hb := result(t, Score(tr, cfg), Heartbeat)
	if hb.Flows.Misattributed != 1 || hb.MisattributedBy[flow.AttributionPodEvent] != 1 || hb.Misattributions[0].Got.Pod != "alpha-1" {
		t.Errorf("margin 0: heartbeat flows %+v, misattributions %+v; want the record given to alpha-1 by POD_EVENT", hb.Flows, hb.Misattributions)
	}
	cfg.EventMargin = 13 * time.Second // the update's delay
	hb = result(t, Score(tr, cfg), Heartbeat)
	if want := (Counts{Unattributed: 1}); hb.Flows != want {
		t.Errorf("margin 13s: heartbeat flows %+v, want %+v", hb.Flows, want)
	}
}
