package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/flowlens/flowlens/collector/config"
	"github.com/flowlens/flowlens/collector/store"
	"github.com/flowlens/flowlens/exporter/agent"
	expconfig "github.com/flowlens/flowlens/exporter/config"
	"github.com/flowlens/flowlens/exporter/metrics"
	"github.com/flowlens/flowlens/exporter/shipper"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/nettest"
)

// freeAddr is a loopback address with a port free right now: the collector must come back on the same
// one after a restart, where its exporters look for it.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func startCollector(t testing.TB, dir, grpcAddr string, extra ...string) *App {
	a, _ := startCollectorReg(t, dir, grpcAddr, extra...)
	return a
}

func startCollectorReg(t testing.TB, dir, grpcAddr string, extra ...string) (*App, *prometheus.Registry) {
	t.Helper()
	args := append([]string{"--insecure", "--grpc-addr", grpcAddr, "--api-addr", "127.0.0.1:0", "--metrics-addr", "",
		"--data-dir", dir, "--attribution-deadline", "5s"}, extra...)
	cfg, err := config.Load(args)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a, err := Start(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named("collector"), reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	return a, reg
}

func stopCollector(a *App) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.Stop(ctx)
}

// startExporter runs a real exporter (programs loaded and attached) scoped to ns, shipping to the
// collector at addr over gRPC, with the given workload identity. It stops when the test ends.
func startExporter(t testing.TB, ns *nettest.Netns, addr, name string, extra ...string) {
	t.Helper()
	cfg, err := expconfig.Load(append([]string{"--netns", ns.Path, "--output", "collector", "--collector-grpc-addr", addr,
		"--collector-insecure", "--flush-interval", "1s", "--metrics-addr", "", "--close-grace", "50ms",
		"--workload-name", name, "--workload-namespace", "shop", "--workload-cluster", "lab", "--exporter-id", name,
		"--collector-transport", "grpc"}, extra...))
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(name)
	reg := prometheus.NewRegistry()
	m, err := metrics.New(reg, log)
	if err != nil {
		t.Fatal(err)
	}
	ship, err := shipper.New(cfg.Collector, cfg.Workload, m.Drops, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ag, err := agent.Start(ctx, cfg, log, m, reg, ship)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		ag.Wait()
		ship.Close(5 * time.Second)
	})
}

func flows(t testing.TB, a *App, q store.FlowQuery) []flow.Enriched {
	t.Helper()
	q.To, q.Limit = time.Now().Add(time.Hour).UnixNano(), 10000
	var all []flow.Enriched
	for {
		page, err := a.Store().Flows(context.Background(), q)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, page.Flows...)
		if page.Next == "" {
			return all
		}
		q.Cursor = page.Next
	}
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// exchange connects from client (in its namespace) to the server listening at addr, sends up bytes,
// reads down bytes back, and closes.
func exchange(t testing.TB, client *nettest.Netns, addr string, up, down int) {
	t.Helper()
	var c net.Conn
	var err error
	client.Do(t, func() { c, err = net.Dial("tcp", addr) })
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(make([]byte, up)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, down)); err != nil {
		t.Fatal(err)
	}
}

// serve listens in ns on addr; each connection reads up bytes, answers down bytes, and closes.
func serve(t testing.TB, ns *nettest.Netns, addr string, up, down int) {
	t.Helper()
	var ln net.Listener
	var err error
	ns.Do(t, func() { ln, err = net.Listen("tcp", addr) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	nettest.Serve(ln, func(c net.Conn) {
		defer c.Close()
		if _, err := io.ReadFull(c, make([]byte, up)); err == nil {
			c.Write(make([]byte, down))
		}
	})
}

// Two network namespaces act as two workloads, each with its own exporter. Each side's record is
// attributed to the other by the other's heartbeat, with exact bytes and roles, and the data survive a
// collector restart.
func TestTwoWorkloadsEndToEnd(t *testing.T) {
	nettest.RequirePrivileged(t)
	blue, red := nettest.NewNetns(t), nettest.NewNetns(t)
	nettest.Veth(t, blue, red, "10.198.0.1/24", "10.198.0.2/24")
	dir, addr := t.TempDir(), freeAddr(t)
	col := startCollector(t, dir, addr)
	defer func() { stopCollector(col) }()
	startExporter(t, blue, addr, "blue")
	startExporter(t, red, addr, "red")
	serve(t, blue, "10.198.0.1:8080", 1000, 500)

	const conns = 5
	for range conns {
		exchange(t, red, "10.198.0.1:8080", 1000, 500)
	}
	blueW := flow.Workload{Name: "blue", Namespace: "shop", Cluster: "lab"}
	redW := flow.Workload{Name: "red", Namespace: "shop", Cluster: "lab"}
	check := func(a *App) {
		t.Helper()
		got := flows(t, a, store.FlowQuery{Port: 8080})
		var client, server int
		for _, f := range got {
			blueW.Node, redW.Node = f.LocalWorkload.Node, f.LocalWorkload.Node
			switch f.Role {
			case flow.RoleClient:
				client++
				if f.LocalWorkload != redW || f.RemoteWorkload != blueW || f.Attribution != flow.AttributionHeartbeat ||
					f.BytesSent != 1000 || f.BytesReceived != 500 || f.RemoteAddr != netip.MustParseAddr("10.198.0.1") || f.Close != flow.CloseNormal {
					t.Errorf("client record: %+v", f)
				}
			case flow.RoleServer:
				server++
				if f.LocalWorkload != blueW || f.RemoteWorkload != redW || f.Attribution != flow.AttributionHeartbeat ||
					f.BytesSent != 500 || f.BytesReceived != 1000 || f.LocalPort != 8080 {
					t.Errorf("server record: %+v", f)
				}
			}
		}
		if client != conns || server != conns {
			t.Fatalf("stored %d client and %d server records, want %d each", client, server, conns)
		}
	}
	waitFor(t, "both sides of every connection, attributed", 15*time.Second, func() bool {
		n := 0
		for _, f := range flows(t, col, store.FlowQuery{Port: 8080}) {
			if f.Attribution == flow.AttributionHeartbeat {
				n++
			}
		}
		if n != 2*conns {
			all := flows(t, col, store.FlowQuery{})
			t.Logf("stored %d (%d attributed on 8080), pipeline %+v", len(all), n, col.Pipeline().Stats())
			for _, f := range all {
				t.Logf("  %v %v:%d -> %v:%d %v %+v", f.Role, f.LocalAddr, f.LocalPort, f.RemoteAddr, f.RemotePort, f.Attribution, f.RemoteWorkload)
			}
		}
		return n == 2*conns
	})
	check(col)
	checkAPI(t, col, flows(t, col, store.FlowQuery{Port: 8080})[0].StartTime)

	at := flows(t, col, store.FlowQuery{Port: 8080})[0].StartTime
	stopCollector(col)
	col = startCollector(t, dir, addr)
	check(col)
	checkAPI(t, col, at) // the ownership index came back from its snapshot and claim log too
}

// checkAPI asks the collector's HTTP API what a user would: the dependency graph and who owned the
// server's address when the flows ran.
func checkAPI(t *testing.T, col *App, at int64) {
	t.Helper()
	var deps struct {
		Edges []struct {
			Client, Server struct{ Name string }
			Flows          int64
			BytesToServer  int64 `json:"bytes_to_server"`
		}
	}
	getJSON(t, "http://"+col.APIAddr()+"/api/v1/deps?from=-1h", &deps)
	if len(deps.Edges) != 1 || deps.Edges[0].Client.Name != "red" || deps.Edges[0].Server.Name != "blue" || deps.Edges[0].Flows != 5 || deps.Edges[0].BytesToServer != 5000 {
		t.Errorf("deps: %+v, want one edge red -> blue with 5 flows, 5000 bytes to the server", deps)
	}
	var ans struct {
		Status string
		Range  struct {
			Owner    flow.Workload
			Evidence string
		}
	}
	getJSON(t, fmt.Sprintf("http://%s/api/v1/lookup?ip=10.198.0.1&at=%d", col.APIAddr(), at+1000), &ans)
	if ans.Status != "OWNER" || ans.Range.Owner.Name != "blue" || ans.Range.Evidence != "HEARTBEAT" {
		t.Errorf("lookup 10.198.0.1: %+v, want blue by HEARTBEAT", ans)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v in %s", url, err, body)
	}
}

// A collector restart while an exporter keeps working loses nothing it acknowledged and stores nothing
// twice: connections made before, during (the exporter buffers and resends) and after the restart are
// each stored exactly once per side. Loopback connections are attributed through their sockets.
func TestRestartLosesNothing(t *testing.T) {
	nettest.RequirePrivileged(t)
	green := nettest.NewNetns(t)
	dir, addr := t.TempDir(), freeAddr(t)
	col := startCollector(t, dir, addr)
	defer func() { stopCollector(col) }()
	startExporter(t, green, addr, "green")
	serve(t, green, "127.0.0.1:7070", 300, 700)
	countOn := func(a *App) int { return len(flows(t, a, store.FlowQuery{Port: 7070})) }

	for range 10 {
		exchange(t, green, "127.0.0.1:7070", 300, 700)
	}
	waitFor(t, "the first 10 connections", 15*time.Second, func() bool { return countOn(col) == 20 })
	stopCollector(col)
	for range 10 { // the collector is down: the exporter holds these and resends
		exchange(t, green, "127.0.0.1:7070", 300, 700)
	}
	time.Sleep(500 * time.Millisecond) // let the exporter try, fail and buffer
	col = startCollector(t, dir, addr)
	for range 10 {
		exchange(t, green, "127.0.0.1:7070", 300, 700)
	}
	waitFor(t, "all 30 connections, both sides", 60*time.Second, func() bool { return countOn(col) == 60 })
	time.Sleep(time.Second) // anything more (a duplicate) would show up now
	got := flows(t, col, store.FlowQuery{Port: 7070})
	if len(got) != 60 {
		t.Fatalf("stored %d records, want 60", len(got))
	}
	greenW := flow.Workload{Name: "green", Namespace: "shop", Cluster: "lab", Node: got[0].LocalWorkload.Node}
	ports := map[uint16]int{}
	for _, f := range got {
		ephemeral := f.LocalPort
		up, down := f.BytesSent, f.BytesReceived
		if f.Role == flow.RoleServer {
			ephemeral, up, down = f.RemotePort, down, up
		}
		ports[ephemeral]++
		if up != 300 || down != 700 || f.Close != flow.CloseNormal {
			t.Errorf("bytes or close wrong: %+v", f)
		}
		if f.RemoteWorkload != greenW || f.Attribution != flow.AttributionHeartbeat {
			t.Errorf("loopback record not attributed to its own socket's owner: %v %+v", f.Attribution, f.RemoteWorkload)
		}
	}
	for p, n := range ports {
		if n != 2 {
			t.Errorf("connection from port %d stored %d times, want once per side", p, n)
		}
	}
}

// A flood beyond the pipeline's budget is pushed back to the exporters (RETRY), memory stays within the
// budget, and every record is stored exactly once when the exporters have resent.
func TestFloodBackpressure(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	const budget, senders, each = 600, 3, 10_000
	col, reg := startCollectorReg(t, dir, addr, "--queue-records", fmt.Sprint(budget), "--attribution-deadline", "1s")
	defer stopCollector(col)
	errs := make(chan error, senders)
	for s := range senders {
		go func() {
			cfg, err := expconfig.Load([]string{"--output", "collector", "--collector-grpc-addr", addr, "--collector-insecure",
				"--collector-transport", "grpc", "--exporter-id", fmt.Sprintf("flood-%d", s), "--workload-name", fmt.Sprintf("w%d", s),
				"--buffer-batches", "4096"})
			if err != nil {
				errs <- err
				return
			}
			ereg := prometheus.NewRegistry()
			m, err := metrics.New(ereg, zap.NewNop())
			if err != nil {
				errs <- err
				return
			}
			ship, err := shipper.New(cfg.Collector, cfg.Workload, m.Drops, ereg, zap.NewNop())
			if err != nil {
				errs <- err
				return
			}
			base := time.Now().UnixNano()
			for i := range each {
				r := flow.Record{LocalAddr: netip.AddrFrom4([4]byte{10, 50, byte(s), 1}), RemoteAddr: netip.AddrFrom4([4]byte{10, 60, byte(i >> 8), byte(i)}),
					LocalPort: uint16(1024 + i%60000), RemotePort: 443, Role: flow.RoleClient, StartTime: base + int64(i), EndTime: base + int64(i) + 1e6,
					BytesSent: uint64(i), Close: flow.CloseNormal, LocalWorkload: cfg.Workload}
				if err := ship.Write(&r); err != nil {
					errs <- err
					return
				}
			}
			if err := ship.Close(60 * time.Second); err != nil {
				errs <- err
				return
			}
			if n := counterSum(t, ereg, "flowlens_exporter_drops_total"); n != 0 {
				errs <- fmt.Errorf("exporter %d dropped %v records", s, n)
				return
			}
			errs <- nil
		}()
	}
	for range senders {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every record decided and stored", 60*time.Second, func() bool {
		return len(flows(t, col, store.FlowQuery{})) == senders*each
	})
	seen := map[[2]uint64]bool{}
	for _, f := range flows(t, col, store.FlowQuery{}) {
		k := [2]uint64{uint64(f.LocalAddr.As4()[2]), uint64(f.StartTime)}
		if seen[k] {
			t.Fatalf("stored twice: %+v", f)
		}
		seen[k] = true
	}
	st := col.Pipeline().Stats()
	if st.PeakQueued > budget {
		t.Errorf("peak queue %d records, budget %d", st.PeakQueued, budget)
	}
	retries := counterValue(t, reg, "flowlens_collector_ingest_batches_total", "outcome", "retry")
	dups := counterValue(t, reg, "flowlens_collector_ingest_batches_total", "outcome", "duplicate")
	t.Logf("peak queue %d records; %v batches answered RETRY; %v duplicates", st.PeakQueued, retries, dups)
}

// counterValue sums the samples of the named family whose label has value.
func counterValue(t *testing.T, g prometheus.Gatherer, name, label, value string) float64 {
	t.Helper()
	fams, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if label == "" || (l.GetName() == label && l.GetValue() == value) {
					sum += m.GetCounter().GetValue()
					break
				}
			}
		}
	}
	return sum
}

func counterSum(t *testing.T, g prometheus.Gatherer, name string) float64 {
	return counterValue(t, g, name, "", "")
}
