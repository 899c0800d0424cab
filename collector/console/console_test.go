package console_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/flowlens/flowlens/collector/api/apitest"
	"github.com/flowlens/flowlens/collector/app"
	"github.com/flowlens/flowlens/collector/config"
	"github.com/flowlens/flowlens/collector/console"
	"github.com/flowlens/flowlens/collector/store"
	expconfig "github.com/flowlens/flowlens/exporter/config"
	"github.com/flowlens/flowlens/exporter/metrics"
	"github.com/flowlens/flowlens/exporter/shipper"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

// The probe is a real exporter's shipper (no kernel programs: its records are written by the test)
// that talks to the collector over gRPC, so the fleet page has an exporter to show and the map an
// edge that came through the whole pipeline, attributed from the ownership index.
var (
	probe   = flow.Workload{Name: "probe", Namespace: "ops", Pod: "probe-1", Node: "n3", Cluster: "c1"}
	probeIP = netip.MustParseAddr("10.0.5.5")
	legacy  = flow.Workload{Name: "legacy", Namespace: "shop", Pod: "legacy-0", Node: "n1", Cluster: "c1"}
)

// env is a running collector with a known store and index.
type env struct {
	app  *app.App
	base string // http://<API address>
	seed int64  // Unix ns of the seed's first flow, 30 minutes ago
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startEnv starts the real collector, stores apitest's seed (shop, data and infra, and a client nobody
// owns) plus three api -> db connections that retransmit a lot, claims 10.0.0.2 for legacy and then api
// in the ownership index, and ships one probe -> api flow through gRPC ingest.
func startEnv(t testing.TB) *env {
	t.Helper()
	grpcAddr := freeAddr(t)
	cfg, err := config.Load([]string{"--insecure", "--grpc-addr", grpcAddr, "--api-addr", "127.0.0.1:0", "--metrics-addr", "",
		"--data-dir", t.TempDir(), "--attribution-deadline", "5s"})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	a, err := app.Start(cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), reg, reg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a.Stop(ctx)
	})
	e := &env{app: a, base: "http://" + a.APIAddr(), seed: time.Now().Add(-30 * time.Minute).UnixNano()}

	flows, old := apitest.Flows(e.seed)
	s := int64(time.Second)
	for i := range 3 {
		start := e.seed + int64(20+i)*s
		flows = append(flows, flow.Enriched{
			Record: flow.Record{LocalAddr: apitest.APIIP, LocalPort: uint16(43000 + i), RemoteAddr: apitest.DBIP, RemotePort: 5432,
				Role: flow.RoleClient, StartTime: start, EndTime: start + s, BytesSent: 4000, BytesReceived: 90000,
				SegsSent: 40, SegsReceived: 70, Retransmits: 12, SrttUs: 800, Close: flow.CloseNormal, Comm: "api", LocalWorkload: apitest.API},
			ExporterID: "api-exp", RemoteWorkload: apitest.DB, Attribution: flow.AttributionHeartbeat,
		})
	}
	if err := a.Store().Write(context.Background(), store.Write{Flows: append(flows, old)}); err != nil {
		t.Fatal(err)
	}

	hour := int64(time.Hour)
	a.Index().Add(index.Claim{IP: apitest.APIIP, Start: e.seed - 3*hour, End: e.seed - 2*hour, Owner: legacy, Evidence: index.EvidencePodEvent})
	a.Index().Add(index.Claim{IP: apitest.APIIP, Start: e.seed - hour, End: time.Now().Add(time.Hour).UnixNano(), Owner: apitest.API, Evidence: index.EvidenceHeartbeat})

	ecfg, err := expconfig.Load([]string{"--output", "collector", "--collector-grpc-addr", grpcAddr, "--collector-insecure",
		"--metrics-addr", "", "--exporter-id", "probe", "--collector-transport", "grpc",
		"--workload-name", probe.Name, "--workload-namespace", probe.Namespace, "--workload-pod", probe.Pod,
		"--workload-node", probe.Node, "--workload-cluster", probe.Cluster})
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named("probe")
	ereg := prometheus.NewRegistry()
	m, err := metrics.New(ereg, log)
	if err != nil {
		t.Fatal(err)
	}
	ship, err := shipper.New(ecfg.Collector, ecfg.Workload, m.Drops, ereg, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ship.Close(5 * time.Second) })
	start := time.Now().Add(-10 * time.Second).UnixNano()
	ship.Write(&flow.Record{LocalAddr: probeIP, LocalPort: 50000, RemoteAddr: apitest.APIIP, RemotePort: 8080, Role: flow.RoleClient,
		StartTime: start, EndTime: start + s, BytesSent: 300, BytesReceived: 3000, SegsSent: 6, SegsReceived: 6, SrttUs: 400,
		Close: flow.CloseNormal, Comm: "probe", LocalWorkload: ecfg.Workload}) // the agent stamps it, as here
	ship.Flush()
	deadline := time.Now().Add(20 * time.Second)
	for {
		page, err := a.Store().Flows(context.Background(), store.FlowQuery{From: start - s, To: time.Now().UnixNano(), Workload: "probe", Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Flows) == 1 {
			if f := page.Flows[0]; f.RemoteWorkload.Name != "api" || f.Attribution != flow.AttributionHeartbeat {
				t.Fatalf("probe's flow attributed to %+v by %s", f.RemoteWorkload, f.Attribution)
			}
			break
		}
		if time.Now().After(deadline) {
			all, _ := a.Store().Flows(context.Background(), store.FlowQuery{From: 0, To: time.Now().Add(time.Hour).UnixNano(), Limit: 100})
			mfs, _ := reg.Gather()
			for _, mf := range mfs {
				if strings.Contains(mf.GetName(), "ingest") || strings.Contains(mf.GetName(), "pipeline") {
					t.Log(mf.String())
				}
			}
			t.Fatalf("the probe's flow never reached the store (%d flows there)", len(all.Flows))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return e
}

func getJSON(t testing.TB, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// row is a flow table row's data attributes.
type row = map[string]string

func flowRows(t testing.TB, b *browser) []row {
	t.Helper()
	return eval[[]row](t, b, `[...document.querySelectorAll('#flows-table tbody tr')].map(tr => ({...tr.dataset}))`)
}

func edgeKey(c, s string) string { return c + "->" + s }

// TestConsole drives the console in headless Chromium against a real collector: the map draws the
// store's edges, clicks on it filter the flow explorer, the explorer's filters and paging work, the
// lookup answers from the ownership index, the fleet page lists the exporter, and nothing is fetched
// from anywhere but the collector.
func TestConsole(t *testing.T) {
	e := startEnv(t)
	b := startBrowser(t, e.base)

	t.Run("served", func(t *testing.T) {
		// "/" sends a browser to the console; every answer carries the CSP.
		c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		for path, code := range map[string]int{"/": http.StatusFound, "/console/": http.StatusOK, "/console/js/map.js": http.StatusOK} {
			resp, err := c.Get(e.base + path)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != code || resp.Header.Get("Content-Security-Policy") != console.CSP {
				t.Errorf("%s: %d, CSP %q", path, resp.StatusCode, resp.Header.Get("Content-Security-Policy"))
			}
			if path == "/" && resp.Header.Get("Location") != "/console/" {
				t.Errorf("/ redirects to %q", resp.Header.Get("Location"))
			}
		}
	})

	t.Run("map", func(t *testing.T) {
		b.after(t, "#map", chromedp.Navigate(e.base+"/"))
		if loc := eval[string](t, b, `location.pathname + location.hash`); loc != "/console/" {
			t.Fatalf("/ opened %q", loc)
		}
		b.screenshot(t, "map")
		var deps struct {
			Edges []store.Edge `json:"edges"`
		}
		getJSON(t, e.base+"/api/v1/deps", &deps)
		want := map[string]store.Edge{}
		for _, x := range deps.Edges {
			want[edgeKey(x.Client.Name, x.Server.Name)] = x
		}
		// The store holds exactly these edges; the map must draw exactly them.
		wantKeys := []string{"->api", "api->db", "probe->api", "web->api", "web->cache", "web->db"}
		if keys := slices.Sorted(func(yield func(string) bool) {
			for k := range want {
				if !yield(k) {
					return
				}
			}
		}); !slices.Equal(keys, wantKeys) {
			t.Fatalf("store's edges %v, want %v", keys, wantKeys)
		}
		edges := eval[[]row](t, b, `[...document.querySelectorAll('#map g.edge')].map(g => ({...g.dataset}))`)
		if len(edges) != len(want) {
			t.Fatalf("map draws %d edges, store has %d: %v", len(edges), len(want), edges)
		}
		health := map[string]string{"->api": "red", "api->db": "amber", "probe->api": "green", "web->api": "red", "web->cache": "green", "web->db": "red"}
		for _, g := range edges {
			k := edgeKey(g["client"], g["server"])
			x, ok := want[k]
			if !ok {
				t.Errorf("map draws edge %s the store does not hold", k)
				continue
			}
			delete(want, k)
			if g["clientNamespace"] != x.Client.Namespace || g["serverNamespace"] != x.Server.Namespace || g["serverCluster"] != x.Server.Cluster ||
				g["flows"] != fmt.Sprint(x.Flows) || g["bytes"] != fmt.Sprint(x.BytesToServer+x.BytesToClient) || g["health"] != health[k] {
				t.Errorf("edge %s drawn as %v, store says %+v, health %s", k, g, x, health[k])
			}
		}
		// Workloads sit in their namespace's box; the client nobody owns in a box of its own.
		nodes := eval[[]row](t, b, `[...document.querySelectorAll('#map g.node')].map(n => ({name: n.dataset.name, namespace: n.dataset.namespace, box: n.closest('g.ns').dataset.namespace}))`)
		wantNodes := map[string]string{"": "", "api": "shop", "web": "shop", "db": "data", "cache": "infra", "probe": "ops"}
		if len(nodes) != len(wantNodes) {
			t.Fatalf("nodes %v", nodes)
		}
		for _, n := range nodes {
			if ns, ok := wantNodes[n["name"]]; !ok || n["namespace"] != ns || n["box"] != ns {
				t.Errorf("node %v, want namespace %q", n, ns)
			}
		}
		// Boxes by cluster, then namespace (the cache is in c2); the unknown owner's last.
		if boxes := eval[[]string](t, b, `[...document.querySelectorAll('#map g.ns')].map(g => g.dataset.namespace + ':' + g.querySelectorAll('g.node').length)`); !slices.Equal(boxes, []string{"data:1", "ops:1", "shop:2", "infra:1", ":1"}) {
			t.Errorf("namespace boxes %v", boxes)
		}
		// The width toggle redraws by flows: web -> db (5 flows) is then the widest edge.
		b.do(t, chromedp.SetValue(chromedp.CSS("#map-metric"), "flows"), chromedp.Evaluate[chromedp.Void](`document.querySelector('#map-metric').dispatchEvent(new Event('change'))`),
			chromedp.Poll[chromedp.Void](`location.hash.includes('by=flows') && document.querySelector('#map').dataset.ready === '1'`, chromedp.WithPollingTimeout(10*time.Second)))
		widest := eval[string](t, b, `[...document.querySelectorAll('#map g.edge')].sort((a, b) => b.querySelector('.line').getAttribute('stroke-width') - a.querySelector('.line').getAttribute('stroke-width'))[0].dataset.server`)
		if widest != "db" {
			t.Errorf("widest edge by flows goes to %q", widest)
		}
	})

	t.Run("time range and namespace", func(t *testing.T) {
		edgesShown := func() []string {
			t.Helper()
			return eval[[]string](t, b, `[...document.querySelectorAll('#map g.edge')].map(g => g.dataset.client + '->' + g.dataset.server).sort()`)
		}
		b.open(t, "map", "#map")
		// The last 15 minutes hold only the probe's flow (the seed is 30 minutes old).
		b.after(t, "#map", chromedp.Steps(chromedp.SetValue(chromedp.CSS("#range-preset"), "15m"),
			chromedp.Evaluate[chromedp.Void](`document.querySelector('#range-preset').dispatchEvent(new Event('change'))`)))
		if got := edgesShown(); !slices.Equal(got, []string{"probe->api"}) {
			t.Fatalf("last 15m: edges %v", got)
		}
		// A custom range from 3 hours ago to 1 hour ago holds the old web -> db flow alone.
		local := func(d time.Duration) string { return time.Now().Add(d).Format("2006-01-02T15:04:05") }
		b.do(t, chromedp.SetValue(chromedp.CSS("#range-preset"), "custom"),
			chromedp.Evaluate[chromedp.Void](`document.querySelector('#range-preset').dispatchEvent(new Event('change'))`),
			chromedp.SetValue(chromedp.CSS("#range-from"), local(-3*time.Hour)), chromedp.SetValue(chromedp.CSS("#range-to"), local(-time.Hour)))
		b.after(t, "#map", chromedp.Click(chromedp.CSS(`#range button[type="submit"]`)))
		if got := edgesShown(); !slices.Equal(got, []string{"web->db"}) {
			t.Fatalf("custom range: edges %v", got)
		}
		if f := eval[string](t, b, `document.querySelector('#map g.edge').dataset.flows`); f != "1" {
			t.Fatalf("custom range: web -> db has %s flows", f)
		}
		// The namespace box narrows the map to the edges touching infra.
		b.open(t, "map", "#map")
		b.after(t, "#map", chromedp.Steps(chromedp.SetValue(chromedp.CSS("#map-namespace"), "infra"),
			chromedp.Evaluate[chromedp.Void](`document.querySelector('#map-namespace').dispatchEvent(new Event('change'))`)))
		if got := edgesShown(); !slices.Equal(got, []string{"web->cache"}) {
			t.Fatalf("namespace infra: edges %v", got)
		}
	})

	t.Run("edge click", func(t *testing.T) {
		b.open(t, "map", "#map")
		// A real mouse click on the middle of the web -> db curve, which must be that edge on screen.
		xy := eval[[]float64](t, b, `(() => {
			const p = document.querySelector('#map g.edge[data-client="web"][data-server="db"] path.line');
			const pt = p.getPointAtLength(p.getTotalLength() / 2), m = p.getScreenCTM();
			const x = pt.x * m.a + pt.y * m.c + m.e, y = pt.x * m.b + pt.y * m.d + m.f;
			const hit = document.elementFromPoint(x, y)?.closest('g.edge');
			return hit && hit.dataset.client === 'web' && hit.dataset.server === 'db' ? [x, y] : [];
		})()`)
		if len(xy) != 2 {
			t.Fatal("the web -> db edge is covered on screen")
		}
		b.after(t, "#flows-table", chromedp.MouseClickXY(xy[0], xy[1]))
		b.screenshot(t, "flows-edge")
		rows := flowRows(t, b)
		closes := map[string]int{}
		for _, r := range rows {
			if r["role"] != "CLIENT" || r["localWorkload"] != "web" || r["remoteWorkload"] != "db" || r["remotePort"] != "5432" {
				t.Errorf("row %v is not web -> db", r)
			}
			closes[r["close"]]++
		}
		if len(rows) != 5 || closes["NORMAL"] != 3 || closes["CONNECT_FAILED"] != 2 {
			t.Fatalf("edge web -> db shows %d rows %v, want its 5 connections", len(rows), closes)
		}
		if chip := eval[string](t, b, `document.querySelector('#flows-scope').textContent`); !strings.Contains(chip, "edge shop/web in c1 → data/db in c1") {
			t.Errorf("scope chip %q", chip)
		}
		// The unowned client's edge: exactly its one connection, seen from api's side.
		b.open(t, "map", "#map")
		b.after(t, "#flows-table", chromedp.Evaluate[chromedp.Void](`document.querySelector('#map g.edge[data-client=""][data-server="api"]').dispatchEvent(new MouseEvent('click', {bubbles: true}))`))
		if rows := flowRows(t, b); len(rows) != 1 || rows[0]["role"] != "SERVER" || rows[0]["localWorkload"] != "api" || rows[0]["close"] != "RESET_RECEIVED" {
			t.Fatalf("unowned -> api rows %v", rows)
		}
	})

	t.Run("node click", func(t *testing.T) {
		b.open(t, "map", "#map")
		b.after(t, "#flows-table", chromedp.Click(chromedp.CSS(`#map g.node[data-name="web"] rect`)))
		b.screenshot(t, "flows-node")
		rows := flowRows(t, b)
		for _, r := range rows {
			if r["localWorkload"] != "web" && r["remoteWorkload"] != "web" {
				t.Errorf("row %v does not involve web", r)
			}
		}
		// web's own 7 connections and db's records of the 3 that opened.
		if len(rows) != 10 {
			t.Fatalf("web shows %d rows", len(rows))
		}
	})

	t.Run("explorer filters", func(t *testing.T) {
		b.open(t, "flows", "#flows-table")
		if n := len(flowRows(t, b)); n != 15 {
			t.Fatalf("all flows of the last hour: %d rows, want 15", n)
		}
		filter := func(field, value string) []row {
			t.Helper()
			b.do(t, chromedp.SetValue(chromedp.CSS(`#flows-filter [name="`+field+`"]`), value))
			b.after(t, "#flows-table", chromedp.Click(chromedp.CSS(`#flows-filter button[type="submit"]`)))
			return flowRows(t, b)
		}
		rows := filter("role", "SERVER")
		if len(rows) != 4 || slices.ContainsFunc(rows, func(r row) bool { return r["role"] != "SERVER" }) {
			t.Fatalf("role SERVER: %v", rows)
		}
		filter("role", "")
		rows = filter("close", "CONNECT_FAILED")
		if len(rows) != 2 || slices.ContainsFunc(rows, func(r row) bool { return r["close"] != "CONNECT_FAILED" || r["remoteWorkload"] != "db" }) {
			t.Fatalf("close CONNECT_FAILED: %v", rows)
		}
		filter("close", "")
		rows = filter("port", "6379")
		if len(rows) != 1 || rows[0]["remotePort"] != "6379" || rows[0]["remoteWorkload"] != "cache" {
			t.Fatalf("port 6379: %v", rows)
		}
		if h := eval[string](t, b, `location.hash`); !strings.Contains(h, "port=6379") || strings.Contains(h, "close=") {
			t.Errorf("hash %q", h)
		}
		b.screenshot(t, "flows-filtered")
	})

	t.Run("paging", func(t *testing.T) {
		b.open(t, "flows?limit=10", "#flows-table")
		first := flowRows(t, b)
		b.after(t, "#flows-table", chromedp.Click(chromedp.CSS("#flows-next")))
		second := flowRows(t, b)
		if len(first) != 10 || len(second) != 5 {
			t.Fatalf("pages of %d and %d rows, want 10 and 5", len(first), len(second))
		}
		if d := eval[bool](t, b, `document.querySelector('#flows-next').disabled`); !d {
			t.Error("Older enabled on the last page")
		}
		key := func(r row) string { return r["end"] + r["localPort"] + r["remotePort"] + r["role"] }
		seen := map[string]bool{}
		for _, r := range append(slices.Clone(first), second...) {
			if seen[key(r)] {
				t.Fatalf("row %v on both pages", r)
			}
			seen[key(r)] = true
		}
		b.after(t, "#flows-table", chromedp.Click(chromedp.CSS("#flows-prev")))
		if again := flowRows(t, b); len(again) != 10 || key(again[0]) != key(first[0]) || key(again[9]) != key(first[9]) {
			t.Fatalf("back to the first page: %v", again)
		}
	})

	t.Run("lookup", func(t *testing.T) {
		at := time.Unix(0, e.seed).UTC().Format(time.RFC3339)
		b.open(t, "lookup?ip=10.0.0.2&at="+at, "#lookup-answer")
		b.screenshot(t, "lookup")
		ans := eval[row](t, b, `({status: document.querySelector('#lookup-answer .answer').dataset.status, owner: document.querySelector('#lookup-answer .owner')?.dataset.owner ?? ''})`)
		if ans["status"] != "OWNER" || ans["owner"] != "api" {
			t.Fatalf("10.0.0.2 at %s: %v", at, ans)
		}
		history := eval[[]row](t, b, `[...document.querySelectorAll('#lookup-ranges tbody tr')].map(tr => ({...tr.dataset}))`)
		if len(history) != 2 || history[0]["owner"] != "legacy" || history[0]["evidence"] != "POD_EVENT" || history[1]["owner"] != "api" || history[1]["evidence"] != "HEARTBEAT" {
			t.Fatalf("history %v", history)
		}
		// The form: the same address two and a half hours earlier belonged to legacy.
		earlier := time.Unix(0, e.seed).Add(-150 * time.Minute).UTC().Format(time.RFC3339)
		b.do(t, chromedp.SetValue(chromedp.CSS(`#lookup-form [name="at"]`), earlier))
		b.after(t, "#lookup-answer", chromedp.Click(chromedp.CSS(`#lookup-form button[type="submit"]`)))
		if owner := eval[string](t, b, `document.querySelector('#lookup-answer .owner')?.dataset.owner ?? ''`); owner != "legacy" {
			t.Fatalf("10.0.0.2 at %s: owner %q", earlier, owner)
		}
		b.do(t, chromedp.SetValue(chromedp.CSS(`#lookup-form [name="ip"]`), "192.0.2.99"))
		b.after(t, "#lookup-answer", chromedp.Click(chromedp.CSS(`#lookup-form button[type="submit"]`)))
		if st := eval[string](t, b, `document.querySelector('#lookup-answer .answer').dataset.status`); st != "UNKNOWN" {
			t.Fatalf("192.0.2.99: %s", st)
		}
	})

	t.Run("fleet", func(t *testing.T) { testFleet(t, b, e) })

	b.checkOffline(t)
}
