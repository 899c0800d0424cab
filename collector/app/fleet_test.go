package app

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/flowlens/flowlens/collector/fleet"
	"github.com/flowlens/flowlens/collector/store"
	expconfig "github.com/flowlens/flowlens/exporter/config"
	"github.com/flowlens/flowlens/exporter/metrics"
	"github.com/flowlens/flowlens/exporter/shipper"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/natstest"
	sonarapi "github.com/flowlens/flowlens/sonar/api"
	"github.com/flowlens/flowlens/sonar/index"
)

// ship sends recs from one exporter (workload w) to the collector at addr over gRPC, and returns once
// the collector has acknowledged them all.
func ship(t *testing.T, addr string, w flow.Workload, recs []flow.Record) {
	t.Helper()
	cfg, err := expconfig.Load([]string{"--output", "collector", "--collector-grpc-addr", addr, "--collector-insecure",
		"--collector-transport", "grpc", "--exporter-id", w.Name, "--workload-name", w.Name, "--workload-namespace", w.Namespace,
		"--workload-cluster", w.Cluster, "--workload-node", w.Node})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	s, err := shipper.New(cfg.Collector, cfg.Workload, m.Drops, reg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	for i := range recs {
		recs[i].LocalWorkload = cfg.Workload
		if err := s.Write(&recs[i]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if n := counterSum(t, reg, "flowlens_exporter_drops_total"); n != 0 {
		t.Fatalf("exporter %s dropped %v records", w.Name, n)
	}
}

// Two collector replicas share one NATS JetStream (a real nats-server). A flow ingested by replica A,
// whose remote address's heartbeat reached only replica B, is attributed correctly by A; the enriched
// flows land in the JetStream flows stream under their cluster and namespace, and in Kafka (franz-go's
// kfake, an in-process fake cluster: a test double, not a broker).
func TestFleetReplicasShareOwnership(t *testing.T) {
	srv := natstest.Start(t)
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "flowlens-flows"))
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	fleetArgs := func(replica string) []string {
		return []string{"--nats-url", srv.URL(), "--replica", replica, "--kafka-brokers", strings.Join(kafka.ListenAddrs(), ","),
			"--attribution-deadline", "10s"}
	}
	addrA, addrB := freeAddr(t), freeAddr(t)
	colA, regA := startCollectorReg(t, t.TempDir(), addrA, fleetArgs("a")...)
	defer stopCollector(colA)
	colB := startCollector(t, t.TempDir(), addrB, fleetArgs("b")...)
	defer stopCollector(colB)

	web := flow.Workload{Name: "web", Namespace: "shop", Cluster: "east", Node: "n1"}
	db := flow.Workload{Name: "db", Namespace: "data", Cluster: "east", Node: "n2"}
	ipWeb, ipDB := netip.MustParseAddr("10.70.0.1"), netip.MustParseAddr("10.70.0.2")
	t0 := time.Now().Add(-time.Minute).UnixNano()
	// db's exporter talks only to replica B: its record is the heartbeat for 10.70.0.2.
	ship(t, addrB, db, []flow.Record{{LocalAddr: ipDB, LocalPort: 5432, RemoteAddr: netip.MustParseAddr("10.70.9.9"), RemotePort: 40000,
		Role: flow.RoleServer, StartTime: t0, EndTime: t0 + 10e9, BytesSent: 10, Close: flow.CloseNormal}})
	// web's exporter talks only to replica A: its client record needs db's heartbeat.
	ship(t, addrA, web, []flow.Record{{LocalAddr: ipWeb, LocalPort: 41000, RemoteAddr: ipDB, RemotePort: 5432,
		Role: flow.RoleClient, StartTime: t0 + 1e9, EndTime: t0 + 2e9, BytesSent: 123, BytesReceived: 456, Close: flow.CloseNormal}})

	var got flow.Enriched
	waitFor(t, "replica A to store web's flow", 15*time.Second, func() bool {
		fs := flows(t, colA, store.FlowQuery{Port: 5432})
		if len(fs) == 1 {
			got = fs[0]
		}
		return len(fs) == 1
	})
	if got.RemoteWorkload != db || got.Attribution != flow.AttributionHeartbeat || got.LocalWorkload != web || got.BytesSent != 123 {
		t.Fatalf("replica A stored %+v by %v, want web -> db by HEARTBEAT", got.RemoteWorkload, got.Attribution)
	}

	client := flow.RoleClient
	// Replica B stores it too, from the flows stream (nats.store_fleet_flows), so either replica's
	// query API answers for the fleet; A, which published it, does not store it a second time.
	waitFor(t, "replica B to store web's flow from the stream", 15*time.Second, func() bool {
		return len(flows(t, colB, store.FlowQuery{Port: 5432, Role: &client})) == 1
	})
	if fb := flows(t, colB, store.FlowQuery{Port: 5432, Role: &client}); fb[0].Record != got.Record ||
		fb[0].RemoteWorkload != db || fb[0].Attribution != flow.AttributionHeartbeat || fb[0].ExporterID != got.ExporterID {
		t.Fatalf("replica B stored %+v, want A's %+v", fb[0], got)
	}
	waitFor(t, "replica A to read its own message back", 15*time.Second, func() bool {
		return counterSum(t, regA, "flowlens_nats_flows_consumed_messages_total") >= 1
	})
	if fs := flows(t, colA, store.FlowQuery{Port: 5432, Role: &client}); len(fs) != 1 {
		t.Fatalf("replica A holds web's flow %d times, want once", len(fs))
	}

	// The enriched flow is in JetStream, on the subject of its local cluster and namespace.
	_, js := srv.Connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "FLOWLENS_FLOWS", jetstream.OrderedConsumerConfig{FilterSubjects: []string{"flowlens.flows.east.shop"}})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
	if err != nil {
		t.Fatalf("flows stream: %v", err)
	}
	recs, err := fleet.Decode(msg.Data())
	if err != nil || len(recs) != 1 || recs[0].RemoteWorkload != db || recs[0].Attribution != flow.AttributionHeartbeat {
		t.Fatalf("flows stream message: %+v %v", recs, err)
	}

	// And in Kafka, from both replicas: web's flow and db's (which nobody's heartbeat explains: UNATTRIBUTED
	// once its deadline passes, so only web's is required here).
	cl, err := kgo.NewClient(kgo.SeedBrokers(kafka.ListenAddrs()...), kgo.ConsumeTopics("flowlens-flows"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	found := false
	for !found {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatal("web's flow never reached Kafka")
		}
		fs.EachRecord(func(r *kgo.Record) {
			recs, err := fleet.Decode(r.Value)
			if err != nil {
				t.Errorf("kafka record: %v", err)
			}
			for _, f := range recs {
				if f.LocalWorkload == web && f.RemoteWorkload == db {
					found = true
				}
			}
		})
	}
}

// With attribution.sonar_addr the collector asks a sonar service (real gRPC, on loopback) about
// addresses its own heartbeats do not cover, and reports its heartbeats to it.
func TestRemoteSonar(t *testing.T) {
	sonarIdx, sonarAddr := serveSonar(t)
	t0 := time.Now().Add(-time.Minute).UnixNano()
	cache := flow.Workload{Name: "cache", Namespace: "infra", Cluster: "east"}
	web := flow.Workload{Name: "web", Namespace: "shop", Cluster: "east", Node: "n1"}
	ipCache, ipWeb := netip.MustParseAddr("10.80.0.2"), netip.MustParseAddr("10.80.0.1")
	// What sonar knows from elsewhere (another collector, the Kubernetes source).
	sonarIdx.Add(index.Claim{IP: ipCache, Start: t0 - 10e9, End: t0 + 60e9, Owner: cache, Evidence: index.EvidenceHeartbeat})

	addr := freeAddr(t)
	col := startCollector(t, t.TempDir(), addr, "--sonar-addr", sonarAddr)
	defer stopCollector(col)
	ship(t, addr, web, []flow.Record{{LocalAddr: ipWeb, LocalPort: 41000, RemoteAddr: ipCache, RemotePort: 6379,
		Role: flow.RoleClient, StartTime: t0, EndTime: t0 + 1e9, BytesSent: 7, SegsReceived: 3, Close: flow.CloseNormal}})
	got := flows(t, col, store.FlowQuery{Port: 6379})
	if len(got) != 1 || got[0].RemoteWorkload != cache || got[0].Attribution != flow.AttributionHeartbeat {
		t.Fatalf("stored %+v, want web -> cache by HEARTBEAT from sonar", got)
	}
	waitFor(t, "web's heartbeat to reach sonar", 10*time.Second, func() bool {
		a := sonarIdx.Lookup(ipWeb, t0+1)
		return a.Status == index.Owned && a.Range.Owner == web
	})
}

// A batch's remote addresses that this collector's heartbeats do not cover are asked of sonar in one
// call, not one per record.
func TestRemoteSonarOneCallPerBatch(t *testing.T) {
	sonarIdx, sonarAddr, lookups := serveSonarCounted(t)
	t0 := time.Now().Add(-time.Minute).UnixNano()
	web := flow.Workload{Name: "web", Namespace: "shop", Cluster: "east", Node: "n1"}
	const n = 50
	var recs []flow.Record
	for i := range n {
		ip := netip.AddrFrom4([4]byte{10, 81, 0, byte(i + 1)})
		sonarIdx.Add(index.Claim{IP: ip, Start: t0 - 10e9, End: t0 + 60e9, Evidence: index.EvidenceHeartbeat,
			Owner: flow.Workload{Name: fmt.Sprintf("svc-%d", i), Namespace: "infra", Cluster: "east"}})
		recs = append(recs, flow.Record{LocalAddr: netip.MustParseAddr("10.81.1.1"), LocalPort: uint16(42000 + i), RemoteAddr: ip,
			RemotePort: 443, Role: flow.RoleClient, StartTime: t0, EndTime: t0 + 1e9, BytesSent: 7, SegsReceived: 3, Close: flow.CloseNormal})
	}
	addr := freeAddr(t)
	col := startCollector(t, t.TempDir(), addr, "--sonar-addr", sonarAddr)
	defer stopCollector(col)
	ship(t, addr, web, recs)
	got := flows(t, col, store.FlowQuery{Port: 443, Limit: 100})
	if len(got) != n {
		t.Fatalf("stored %d flows, want %d", len(got), n)
	}
	for _, f := range got {
		if want := fmt.Sprintf("svc-%d", f.RemoteAddr.As4()[3]-1); f.RemoteWorkload.Name != want || f.Attribution != flow.AttributionHeartbeat {
			t.Errorf("flow to %s: %+v by %v, want %s by HEARTBEAT", f.RemoteAddr, f.RemoteWorkload, f.Attribution, want)
		}
	}
	if c := lookups.Load(); c != 1 {
		t.Errorf("sonar answered %d Lookup calls for one batch of %d records, want 1", c, n)
	}
}

// serveSonar serves a sonar gRPC API on loopback until the test ends, and returns its index and address.
func serveSonar(t *testing.T) (*index.Index, string) {
	idx, addr, _ := serveSonarCounted(t)
	return idx, addr
}

// serveSonarCounted is serveSonar, also counting the Lookup calls it answers.
func serveSonarCounted(t *testing.T) (*index.Index, string, *atomic.Int64) {
	t.Helper()
	idx := index.New(index.Config{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var lookups atomic.Int64
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if strings.HasSuffix(info.FullMethod, "/Lookup") {
			lookups.Add(1)
		}
		return h(ctx, req)
	}))
	sonarapi.NewGRPC(idx, zap.NewNop()).Register(srv)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return idx, ln.Addr().String(), &lookups
}
