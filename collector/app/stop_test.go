package app

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/config"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/client"
	"github.com/flowlens/flowlens/sonar/index"
)

// A Start that fails late (the ingest port is taken) stops what it had started: the API listener is
// released and no pipeline or housekeeping goroutine is left running over the closed store.
func TestFailedStartReleasesEverything(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	apiAddr := freeAddr(t)
	dir := t.TempDir()
	cfg, err := config.Load([]string{"--insecure", "--grpc-addr", busy.Addr().String(), "--api-addr", apiAddr,
		"--metrics-addr", "", "--data-dir", dir})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	if a, err := Start(cfg, zap.NewNop(), reg, reg); err == nil {
		stopCollector(a)
		t.Fatal("started on a port already taken")
	} else if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("start: %v, want address in use", err)
	}
	ln, err := net.Listen("tcp", apiAddr)
	if err != nil {
		t.Fatalf("the API address is still held after the failed start: %v", err)
	}
	ln.Close()
	buf := make([]byte, 1<<20)
	stacks := string(buf[:runtime.Stack(buf, true)])
	for _, f := range []string{"pipeline.(*Pipeline).Run", "app.(*App).housekeeping"} {
		if strings.Contains(stacks, f) {
			t.Errorf("%s still running after the failed start", f)
		}
	}
	// The data directory is free for the next attempt.
	a := startCollector(t, dir, freeAddr(t))
	stopCollector(a)
}

// The heartbeats still queued for sonar when the collector stops are reported, not dropped: they are
// the newest, the ones no other collector can tell sonar about.
func TestReporterFlushesAtStop(t *testing.T) {
	sonarIdx, sonarAddr := serveSonar(t)
	c := dialSonar(t, sonarAddr)

	rep := newReporter(c, zap.NewNop(), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t0 := time.Now().UnixNano()
	web := flow.Workload{Name: "web", Namespace: "shop", Node: "n1"}
	ip := netip.MustParseAddr("10.80.0.1")
	rep.Share([]index.Claim{{IP: ip, Start: t0, End: t0 + 1e9, Owner: web, Evidence: index.EvidenceHeartbeat}})
	cancel() // the collector stops before the next 100 ms flush
	go func() { defer close(done); rep.run(ctx) }()
	<-done
	if a := sonarIdx.Lookup(ip, t0+1); a.Status != index.Owned || a.Range.Owner != web {
		t.Fatalf("sonar after the stop: %v %+v, want web's heartbeat reported", a.Status, a.Range.Owner)
	}
	if n := testutil.ToFloat64(rep.failed); n != 0 {
		t.Fatalf("%v failed reports", n)
	}
}

// With a remote sonar, the local CIDR table does not shadow sonar's answers: like an index that holds
// both, a heartbeat (here sonar's) outranks a table entry, which answers only addresses sonar does not know.
func TestRemoteIndexAsksSonarBeforeItsCIDRTable(t *testing.T) {
	sonarIdx, sonarAddr := serveSonar(t)
	c := dialSonar(t, sonarAddr)
	local := index.New(index.Config{})
	corp := flow.Workload{Name: "corp-network"}
	local.SetCIDRs([]index.CIDR{{Prefix: netip.MustParsePrefix("10.0.0.0/8"), Owner: corp}})
	web := flow.Workload{Name: "web", Namespace: "shop", Pod: "web-1"}
	t0 := time.Now().UnixNano()
	pod, other := netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("10.9.9.9")
	sonarIdx.Add(index.Claim{IP: pod, Start: t0, End: t0 + 10e9, Owner: web, Evidence: index.EvidenceHeartbeat})
	r := remoteIndex{Index: local, sonar: c.Lookuper(2 * time.Second)}
	if a := r.Lookup(pod, t0+1); a.Status != index.Owned || a.Range.Owner != web || a.Range.Evidence != index.EvidenceHeartbeat {
		t.Errorf("10.1.2.3: %v %+v by %v, want web by HEARTBEAT from sonar", a.Status, a.Range.Owner, a.Range.Evidence)
	}
	if a := r.Lookup(other, t0+1); a.Status != index.Owned || a.Range.Owner != corp || a.Range.Evidence != index.EvidenceCIDR {
		t.Errorf("10.9.9.9: %v %+v by %v, want corp-network by CIDR", a.Status, a.Range.Owner, a.Range.Evidence)
	}
	// The collector's own heartbeat answers without sonar.
	local.Add(index.Claim{IP: other, Start: t0, End: t0 + 10e9, Owner: web, Evidence: index.EvidenceHeartbeat})
	if a := r.Lookup(other, t0+1); a.Range.Owner != web || a.Range.Evidence != index.EvidenceHeartbeat {
		t.Errorf("10.9.9.9 after its own heartbeat: %+v by %v, want web by HEARTBEAT", a.Range.Owner, a.Range.Evidence)
	}
}

func dialSonar(t *testing.T, addr string) *client.Client {
	t.Helper()
	c, err := client.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
