package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/fleet/ownership"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/natstest"
	"github.com/flowlens/flowlens/sonar/index"
)

// In fleet mode sonar applies the ownership stream the collectors share: a claim a collector shared
// before sonar started is replayed, one shared after arrives, and both are answered over HTTP.
func TestFollowsOwnershipStream(t *testing.T) {
	srv := natstest.Start(t)
	_, js := srv.Connect(t)
	collectorIdx := index.New(index.Config{})
	sh, err := ownership.New(js, ownership.Config{Replica: "collector-a"}, collectorIdx, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); sh.Run(ctx) }()
	defer func() { cancel(); <-done }()
	<-sh.Synced()
	t0 := time.Now().Add(-time.Minute).UnixNano()
	web := flow.Workload{Name: "web", Namespace: "shop"}
	db := flow.Workload{Name: "db", Namespace: "data"}
	sh.Share([]index.Claim{{IP: netip.MustParseAddr("10.0.0.5"), Start: t0, End: t0 + 10e9, Owner: web, Evidence: index.EvidenceHeartbeat}})

	// Wait until the claim is in the stream (it went out on the sharer's next flush).
	lookup := func(httpURL, ip string) string {
		return get(t, fmt.Sprintf("%s/api/v1/lookup?ip=%s&at=%d", httpURL, ip, t0+1))
	}
	cfg := testConfig(t)
	cfg.NATSURL = srv.URL()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		st, err := js.Stream(ctx, "FLOWLENS_OWNERSHIP")
		if err == nil {
			if info, err := st.Info(ctx); err == nil && info.State.Msgs > 0 {
				break // the first claim is in the stream: sonar starts after it
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the first claim never reached the stream")
		}
	}
	_, httpURL, stop := start(t, cfg)
	defer stop()
	if got := lookup(httpURL, "10.0.0.5"); !strings.Contains(got, `"status":"OWNER"`) || !strings.Contains(got, `"name":"web"`) {
		t.Fatalf("replayed claim: %s", got)
	}
	sh.Share([]index.Claim{{IP: netip.MustParseAddr("10.0.0.6"), Start: t0, End: t0 + 10e9, Owner: db, Evidence: index.EvidenceHeartbeat}})
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(lookup(httpURL, "10.0.0.6"), `"name":"db"`) {
		if time.Now().After(deadline) {
			t.Fatalf("a claim shared after sonar started never arrived: %s", lookup(httpURL, "10.0.0.6"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
