package attribute

import (
	"net/netip"
	"testing"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

const sec = int64(1e9)

var (
	x      = netip.MustParseAddr("10.244.0.8")
	report = flow.Workload{Name: "report-0", Namespace: "batch", Pod: "report-0-caffc"}
	api    = flow.Workload{Name: "api", Namespace: "shop", Pod: "api-1"}
	web    = flow.Workload{Name: "web", Namespace: "shop", Pod: "web-1", Node: "n1"}
)

// An interim record of a connect() still in SYN_SENT: nobody held X at its start; a pod got X 16 ms
// later. Looking the record up mid-connection would find that pod (found by make bench-attribution).
func TestNotEstablishedIsLookedUpAtItsStart(t *testing.T) {
	idx := index.New(index.Config{})
	idx.Add(index.Claim{IP: x, Start: 100*sec + sec/5, End: 105 * sec, Owner: report, Evidence: index.EvidenceHeartbeat})
	for _, c := range []flow.Close{flow.CloseActive, flow.CloseConnectFailed} {
		r := flow.Enriched{Record: flow.Record{LocalAddr: netip.MustParseAddr("10.244.0.33"), RemoteAddr: x, RemotePort: 8080,
			Role: flow.RoleClient, StartTime: 100*sec - sec/60, EndTime: 101*sec + sec/2, Close: c, SegsSent: 1}}
		if Resolve(idx, &r, false) || r.Attribution != flow.AttributionNone {
			t.Errorf("%v never established: attributed to %+v by %v", c, r.RemoteWorkload, r.Attribution)
		}
		if !Resolve(idx, &r, true) || r.Attribution != flow.AttributionUnattributed {
			t.Errorf("%v at the deadline: %v, want UNATTRIBUTED", c, r.Attribution)
		}
	}
}

// An established client record is looked up mid-connection: the server's own record of the same
// connection starts half a round trip after the client's connect().
func TestEstablishedIsLookedUpMidConnection(t *testing.T) {
	idx := index.New(index.Config{})
	idx.Add(index.Claim{IP: x, Start: 100*sec + 50_000, End: 102 * sec, Owner: api, Evidence: index.EvidenceHeartbeat})
	r := flow.Enriched{Record: flow.Record{LocalAddr: netip.MustParseAddr("10.244.0.33"), RemoteAddr: x, RemotePort: 8080,
		Role: flow.RoleClient, StartTime: 100 * sec, EndTime: 102 * sec, Close: flow.CloseNormal, SegsReceived: 5, SrttUs: 100}}
	if !Resolve(idx, &r, false) || r.RemoteWorkload != api || r.Attribution != flow.AttributionHeartbeat {
		t.Fatalf("got %+v by %v, want api by HEARTBEAT", r.RemoteWorkload, r.Attribution)
	}
}

func TestRules(t *testing.T) {
	cases := []struct {
		ev          index.Evidence
		final, done bool
		want        flow.Attribution
	}{
		{index.EvidenceHeartbeat, false, true, flow.AttributionHeartbeat},
		{index.EvidenceService, false, true, flow.AttributionService},
		{index.EvidenceNode, false, true, flow.AttributionNode},
		{index.EvidencePodEvent, false, false, flow.AttributionNone},
		{index.EvidencePodEvent, true, true, flow.AttributionPodEvent},
	}
	for _, c := range cases {
		idx := index.New(index.Config{})
		idx.Add(index.Claim{IP: x, Start: 0, End: 10 * sec, Owner: api, Evidence: c.ev})
		r := flow.Enriched{Record: flow.Record{RemoteAddr: x, StartTime: sec, EndTime: 2 * sec, SegsReceived: 1}}
		if done := Resolve(idx, &r, c.final); done != c.done || r.Attribution != c.want {
			t.Errorf("%v final=%v: done %v attribution %v, want %v %v", c.ev, c.final, done, r.Attribution, c.done, c.want)
		}
	}
	idx := index.New(index.Config{})
	idx.SetCIDRs([]index.CIDR{{Prefix: netip.MustParsePrefix("10.244.0.0/24"), Owner: report}})
	r := flow.Enriched{Record: flow.Record{RemoteAddr: x, StartTime: sec, EndTime: 2 * sec}}
	if !Resolve(idx, &r, false) || r.Attribution != flow.AttributionCIDR || r.RemoteWorkload != report {
		t.Errorf("CIDR: %v %+v", r.Attribution, r.RemoteWorkload)
	}
}

// Loopback sockets are keyed per host and port: the client finds the server's listening socket, the
// same address on another host or port is another key.
func TestLoopbackSockets(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	server := flow.Record{LocalAddr: lo, LocalPort: 9990, RemoteAddr: lo, RemotePort: 40000, Role: flow.RoleServer,
		StartTime: sec, EndTime: 2 * sec, LocalWorkload: api}
	api.Node = "n1"
	server.LocalWorkload = api
	c, ok := Heartbeat(&server)
	if !ok {
		t.Fatal("no heartbeat")
	}
	client := flow.Record{LocalAddr: lo, LocalPort: 40000, RemoteAddr: lo, RemotePort: 9990, Role: flow.RoleClient,
		StartTime: sec, EndTime: 2 * sec, LocalWorkload: web, SegsReceived: 3}
	if k, _ := RemoteKey(&client); k != c.IP {
		t.Fatalf("client looks up %v, server claimed %v", k, c.IP)
	}
	other := client
	other.LocalWorkload.Node = "n2"
	if k, _ := RemoteKey(&other); k == c.IP {
		t.Fatal("another host's loopback maps to the same key")
	}
	other = client
	other.RemotePort = 9991
	if k, _ := RemoteKey(&other); k == c.IP {
		t.Fatal("another port maps to the same key")
	}
}

func TestCoalesce(t *testing.T) {
	y := netip.MustParseAddr("10.0.0.9")
	claims := []index.Claim{
		{IP: x, Start: 5, End: 9, Owner: api, Evidence: index.EvidenceHeartbeat},
		{IP: x, Start: 0, End: 5, Owner: api, Evidence: index.EvidenceHeartbeat},   // touches the first
		{IP: x, Start: 20, End: 30, Owner: api, Evidence: index.EvidenceHeartbeat}, // a gap: stays apart
		{IP: x, Start: 1, End: 3, Owner: web, Evidence: index.EvidenceHeartbeat},   // another owner
		{IP: y, Start: 1, End: 3, Owner: api, Evidence: index.EvidenceHeartbeat},   // another address
		{IP: x, Start: 25, End: 40, Owner: api, Evidence: index.EvidenceHeartbeat}, // overlaps the third
	}
	got := Coalesce(claims)
	want := map[index.Claim]bool{
		{IP: x, Start: 0, End: 9, Owner: api, Evidence: index.EvidenceHeartbeat}:   true,
		{IP: x, Start: 20, End: 40, Owner: api, Evidence: index.EvidenceHeartbeat}: true,
		{IP: x, Start: 1, End: 3, Owner: web, Evidence: index.EvidenceHeartbeat}:   true,
		{IP: y, Start: 1, End: 3, Owner: api, Evidence: index.EvidenceHeartbeat}:   true,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d claims %+v, want %d", len(got), got, len(want))
	}
	for _, c := range got {
		if !want[c] {
			t.Errorf("unexpected %+v", c)
		}
	}
}

// A loopback record that does not name its host claims nothing and finds nothing: with the host left
// out of the key, every such host's 127.0.0.1:9990 was one key, and a client on one host was
// attributed to the server of another.
func TestLoopbackWithoutAHost(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	idx := index.New(index.Config{})
	server := flow.Record{LocalAddr: lo, LocalPort: 9990, RemoteAddr: lo, RemotePort: 40000, Role: flow.RoleServer,
		StartTime: sec, EndTime: 2 * sec, LocalWorkload: flow.Workload{Name: "api"}} // host A, no node
	if c, ok := Heartbeat(&server); ok {
		t.Errorf("a loopback socket of no named host claimed %v", c.IP)
		idx.Add(c)
	}
	client := flow.Enriched{Record: flow.Record{LocalAddr: lo, LocalPort: 40000, RemoteAddr: lo, RemotePort: 9990, Role: flow.RoleClient,
		StartTime: sec, EndTime: 2 * sec, LocalWorkload: flow.Workload{Name: "cron"}, SegsReceived: 3}} // host B, no node
	if k, _ := RemoteKey(&client.Record); k.IsValid() {
		t.Errorf("a loopback address of no named host keyed as %v", k)
	}
	if !Resolve(idx, &client, true) || client.Attribution != flow.AttributionUnattributed {
		t.Fatalf("client on another host: %+v by %v, want UNATTRIBUTED", client.RemoteWorkload, client.Attribution)
	}
	// A v4-mapped loopback address is a loopback address.
	mapped := server
	mapped.LocalAddr, mapped.LocalWorkload.Node = netip.MustParseAddr("::ffff:127.0.0.1"), "n1"
	server.LocalWorkload.Node = "n1"
	c1, _ := Heartbeat(&server)
	c2, _ := Heartbeat(&mapped)
	if c1.IP != c2.IP || !isSocketKey(c1.IP) {
		t.Fatalf("127.0.0.1 keyed %v, ::ffff:127.0.0.1 %v: want one socket key", c1.IP, c2.IP)
	}
}

// A CIDR table entry that covers the socket keys' prefix (::/0, an "internet" catch-all) does not
// answer for a loopback socket: only the socket's own heartbeat does.
func TestCIDRsDoNotAnswerForLoopbackSockets(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	idx := index.New(index.Config{})
	internet := flow.Workload{Name: "internet"}
	idx.SetCIDRs([]index.CIDR{{Prefix: netip.MustParsePrefix("::/0"), Owner: internet}})
	client := flow.Enriched{Record: flow.Record{LocalAddr: lo, LocalPort: 40000, RemoteAddr: lo, RemotePort: 9990, Role: flow.RoleClient,
		StartTime: sec, EndTime: 2 * sec, LocalWorkload: web, SegsReceived: 3}}
	if !Resolve(idx, &client, true) || client.Attribution != flow.AttributionUnattributed {
		t.Fatalf("loopback client: %+v by %v, want UNATTRIBUTED", client.RemoteWorkload, client.Attribution)
	}
	server := flow.Record{LocalAddr: lo, LocalPort: 9990, RemoteAddr: lo, RemotePort: 40000, Role: flow.RoleServer,
		StartTime: sec, EndTime: 2 * sec, LocalWorkload: api}
	server.LocalWorkload.Node = web.Node
	c, _ := Heartbeat(&server)
	idx.Add(c)
	client.RemoteWorkload, client.Attribution = flow.Workload{}, flow.AttributionNone
	if !Resolve(idx, &client, false) || client.Attribution != flow.AttributionHeartbeat || client.RemoteWorkload != server.LocalWorkload {
		t.Fatalf("loopback client after the server's heartbeat: %+v by %v", client.RemoteWorkload, client.Attribution)
	}
	// A real IPv6 address still takes the CIDR answer.
	v6 := flow.Enriched{Record: flow.Record{RemoteAddr: netip.MustParseAddr("2001:db8::1"), StartTime: sec, EndTime: 2 * sec, SegsReceived: 1}}
	if !Resolve(idx, &v6, false) || v6.Attribution != flow.AttributionCIDR || v6.RemoteWorkload != internet {
		t.Fatalf("2001:db8::1: %+v by %v, want internet by CIDR", v6.RemoteWorkload, v6.Attribution)
	}
}
