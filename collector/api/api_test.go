package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowlens/flowlens/collector/api"
	"github.com/flowlens/flowlens/collector/api/apitest"
	"github.com/flowlens/flowlens/collector/store"
	"github.com/flowlens/flowlens/internal/flow"
)

func node(w flow.Workload) store.Node {
	return store.Node{Name: w.Name, Namespace: w.Namespace, Cluster: w.Cluster}
}

var (
	rtt          = store.ApproxRTT
	unownedToAPI = store.Edge{Client: store.Node{}, Server: node(apitest.API), Flows: 1, BytesToServer: 50, BytesToClient: 5, Resets: 1, RTTP50us: rtt(900), RTTP90us: rtt(900), RTTP99us: rtt(900)}
	webToAPI     = store.Edge{Client: node(apitest.Web), Server: node(apitest.API), Flows: 1, BytesToServer: 1000, Timeouts: 1, RTTP50us: rtt(500), RTTP90us: rtt(500), RTTP99us: rtt(500)}
	webToCache   = store.Edge{Client: node(apitest.Web), Server: node(apitest.Cache), Flows: 1, BytesToServer: 10, RTTP50us: rtt(700), RTTP90us: rtt(700), RTTP99us: rtt(700)}
	// srtt 1000, 2000, 3000 and two failed connects without one: nearest rank.
	webToDB = store.Edge{Client: node(apitest.Web), Server: node(apitest.DB), Flows: 5, BytesToServer: 600, BytesToClient: 60, ConnectFailures: 2, RTTP50us: rtt(2000), RTTP90us: rtt(3000), RTTP99us: rtt(3000)}
)

func TestEndpoints(t *testing.T) {
	srv, _, seed := apitest.Serve(t, nil)
	get := func(path string, out any) {
		t.Helper()
		code, body := apitest.Get(t, srv, path)
		if code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, code, body)
		}
		if err := json.Unmarshal(body, out); err != nil {
			t.Fatalf("%s: %v in %s", path, err, body)
		}
	}
	t.Run("deps", func(t *testing.T) {
		var d api.DepsResponse
		get("/api/v1/deps", &d)
		want := []store.Edge{unownedToAPI, webToAPI, webToCache, webToDB}
		if !reflect.DeepEqual(d.Edges, want) {
			t.Fatalf("edges\n got %+v\nwant %+v", d.Edges, want)
		}
		wantNodes := []store.Node{{}, node(apitest.API), node(apitest.Cache), node(apitest.DB), node(apitest.Web)}
		if !reflect.DeepEqual(d.Nodes, wantNodes) {
			t.Fatalf("nodes %+v", d.Nodes)
		}
		if now := time.Now().UnixNano(); d.To > now || d.To < now-int64(time.Minute) || d.To-d.From != int64(time.Hour) {
			t.Fatalf("default window %d..%d", d.From, d.To)
		}
		// A namespace narrows to the edges touching it; a wider window takes in the old flow.
		get("/api/v1/deps?namespace=infra", &d)
		if !reflect.DeepEqual(d.Edges, []store.Edge{webToCache}) {
			t.Fatalf("infra edges %+v", d.Edges)
		}
		get("/api/v1/deps?from=-3h&namespace=data", &d)
		if len(d.Edges) != 1 || d.Edges[0].Flows != 6 || d.Edges[0].BytesToServer != 607 {
			t.Fatalf("data edges over 3h %+v", d.Edges)
		}
	})
	t.Run("top", func(t *testing.T) {
		var e api.EdgesResponse
		get("/api/v1/top?limit=2", &e)
		if e.By != "bytes" || !reflect.DeepEqual(e.Edges, []store.Edge{webToAPI, webToDB}) {
			t.Fatalf("top bytes %+v", e)
		}
		get("/api/v1/top?by=flows", &e)
		if !reflect.DeepEqual(e.Edges, []store.Edge{webToDB, unownedToAPI, webToAPI, webToCache}) {
			t.Fatalf("top flows %+v", e.Edges)
		}
	})
	t.Run("failing", func(t *testing.T) {
		var e api.EdgesResponse
		get("/api/v1/failing", &e)
		if !reflect.DeepEqual(e.Edges, []store.Edge{webToDB, unownedToAPI, webToAPI}) {
			t.Fatalf("failing %+v", e.Edges)
		}
	})
	t.Run("cross", func(t *testing.T) {
		var e api.EdgesResponse
		get("/api/v1/cross", &e)
		ns := func(c, s string, from store.Edge) store.Edge {
			from.Client, from.Server = store.Node{Namespace: c}, store.Node{Namespace: s}
			return from
		}
		if e.By != "namespace" || !reflect.DeepEqual(e.Edges, []store.Edge{ns("shop", "data", webToDB), ns("shop", "infra", webToCache)}) {
			t.Fatalf("cross namespace %+v", e)
		}
		get("/api/v1/cross?by=cluster", &e)
		want := webToCache
		want.Client, want.Server = store.Node{Cluster: "c1"}, store.Node{Cluster: "c2"}
		if !reflect.DeepEqual(e.Edges, []store.Edge{want}) {
			t.Fatalf("cross cluster %+v", e.Edges)
		}
	})
	t.Run("flows", func(t *testing.T) {
		// Every flow comes back exactly as stored.
		var all store.FlowPage
		get("/api/v1/flows?from=-3h", &all)
		want := append(slices.Clone(seed.Flows), seed.Old)
		if len(all.Flows) != len(want) || all.Next != "" {
			t.Fatalf("%d flows, next %q", len(all.Flows), all.Next)
		}
		for _, w := range want {
			if !slices.ContainsFunc(all.Flows, func(f flow.Enriched) bool { return reflect.DeepEqual(f, w) }) {
				t.Fatalf("flow %+v not returned", w)
			}
		}
		count := func(q string) int {
			var p store.FlowPage
			get("/api/v1/flows?"+q, &p)
			return len(p.Flows)
		}
		for q, n := range map[string]int{
			"workload=db": 8, "workload=db&from=-3h": 9, "workload=cache": 1, "namespace=shop": 11,
			"ip=203.0.113.7": 1, "ip=10.0.1.1&port=40001": 2, "port=6379": 1, "close=CONNECT_FAILED": 2,
			"close=reset_received": 1, "attribution=POD_EVENT": 1, "attribution=UNATTRIBUTED": 1,
			// A node: either side is that workload of that namespace (and cluster).
			"workload=web&workload_namespace=shop&workload_cluster=c1": 10, "workload=web&workload_namespace=data": 0,
			"workload=db&role=server": 3, "role=SERVER": 4, "role=client&close=CONNECT_FAILED": 2,
			// An edge: exactly the connections the graph counts (web -> db: 5 flows, not db's 3 records too).
			"client=web&client_namespace=shop&client_cluster=c1&server=db&server_namespace=data&server_cluster=c1": 5,
			"client=-&client_namespace=-&client_cluster=-&server=api":                                              1, "client=web": 7, "server=db&from=-3h": 6,
			"client=web&server=db&port=40001": 1, "client=web&server=db&close=CONNECT_FAILED": 2,
			"from=" + fmt.Sprint(seed.Base+10*int64(time.Second)) + "&to=" + url.QueryEscape(time.Unix(0, seed.Base+11*int64(time.Second)).Format(time.RFC3339Nano)): 2,
		} {
			if got := count(q); got != n {
				t.Errorf("%s: %d flows, want %d", q, got, n)
			}
		}
	})
	t.Run("paging", func(t *testing.T) {
		var got []flow.Enriched
		var sizes []int
		path := "/api/v1/flows?workload=db&limit=3"
		for {
			var p store.FlowPage
			get(path, &p)
			sizes = append(sizes, len(p.Flows))
			got = append(got, p.Flows...)
			if p.Next == "" {
				break
			}
			path = "/api/v1/flows?workload=db&limit=3&cursor=" + url.QueryEscape(p.Next)
		}
		if !reflect.DeepEqual(sizes, []int{3, 3, 2}) {
			t.Fatalf("page sizes %v", sizes)
		}
		seen := map[string]bool{}
		for i, f := range got {
			k := fmt.Sprint(f.ExporterID, f.LocalPort, f.RemotePort, f.StartTime)
			if seen[k] {
				t.Fatalf("flow %s on two pages", k)
			}
			seen[k] = true
			if i > 0 && f.EndTime > got[i-1].EndTime {
				t.Fatalf("pages not newest first")
			}
		}
	})
}

func TestBadParams(t *testing.T) {
	srv, _, _ := apitest.Serve(t, nil)
	for path, want := range map[string]string{
		"/api/v1/flows?from=yesterday":      "from: ",
		"/api/v1/flows?to=-5x":              "to: bad relative duration",
		"/api/v1/flows?from=-1m&to=-2m":     "from: after to",
		"/api/v1/flows?limit=0":             "limit: 0 is out of range 1..10000",
		"/api/v1/flows?limit=20000":         "limit: 20000 is out of range",
		"/api/v1/flows?limit=ten":           "limit: \"ten\" is not a number",
		"/api/v1/flows?port=70000":          "port: ",
		"/api/v1/flows?ip=10.0.0":           "ip: ",
		"/api/v1/flows?close=SHUT":          "close: unknown close reason",
		"/api/v1/flows?attribution=GUESS":   "attribution: unknown attribution",
		"/api/v1/flows?role=BOSS":           "role: unknown role",
		"/api/v1/flows?client_name=web":     "client_name: unknown parameter",
		"/api/v1/flows?cursor=abc":          "cursor: malformed cursor",
		"/api/v1/flows?wrkload=web":         "wrkload: unknown parameter",
		"/api/v1/flows?port=1&port=2":       "port: given more than once",
		"/api/v1/top?by=packets":            "by: \"packets\" is not one of bytes, flows",
		"/api/v1/cross?by=pod":              "by: \"pod\" is not one of namespace, cluster",
		"/api/v1/deps?limit=5":              "limit: unknown parameter",
		"/api/v1/failing?from=2026-13-01T0": "from: ",
	} {
		code, body := apitest.Get(t, srv, path)
		var e api.ErrorResponse
		if code != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || !strings.HasPrefix(e.Error, want) {
			t.Errorf("%s: %d %s, want 400 %q", path, code, body, want)
		}
	}
	// Not served here: the lookup endpoints without a LookupFunc, and other methods.
	if code, _ := apitest.Get(t, srv, "/api/v1/lookup?ip=10.0.0.1"); code != http.StatusNotFound {
		t.Fatalf("lookup without a LookupFunc: %d", code)
	}
	resp, err := http.Post(srv.URL+"/api/v1/flows", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST flows: %d", resp.StatusCode)
	}
}

func TestLookupMounted(t *testing.T) {
	var got []string
	srv, _, _ := apitest.Serve(t, func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.Path+"?"+r.URL.RawQuery)
		w.WriteHeader(http.StatusTeapot)
	})
	for _, p := range []string{"/api/v1/lookup?ip=10.0.0.1", "/api/v1/ranges?ip=10.0.0.1"} {
		if code, _ := apitest.Get(t, srv, p); code != http.StatusTeapot {
			t.Fatalf("%s: %d", p, code)
		}
	}
	if !reflect.DeepEqual(got, []string{"/api/v1/lookup?ip=10.0.0.1", "/api/v1/ranges?ip=10.0.0.1"}) {
		t.Fatalf("lookup saw %v", got)
	}
}
