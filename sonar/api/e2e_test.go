package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/flowlens/flowlens/internal/flow"
	sonarv1 "github.com/flowlens/flowlens/proto/flowlens/sonar/v1"
	"github.com/flowlens/flowlens/sonar/api"
	"github.com/flowlens/flowlens/sonar/client"
	"github.com/flowlens/flowlens/sonar/index"
)

const sec = int64(time.Second)

var (
	t0   = time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC).UnixNano()
	web  = flow.Workload{Name: "web", Namespace: "shop", Pod: "web-7d9f", Node: "n1", Cluster: "prod"}
	db   = flow.Workload{Name: "db", Namespace: "shop", Pod: "db-0", Node: "n2", Cluster: "prod"}
	cart = flow.Workload{Name: "cart", Namespace: "shop", Pod: "cart-1", Node: "n2", Cluster: "prod"}
)

type sonar struct {
	idx    *index.Index
	http   string // base URL
	grpc   string
	client *client.Client
}

// start serves a fresh index over real gRPC and HTTP listeners on loopback.
func start(t testing.TB, opts ...api.Option) *sonar {
	t.Helper()
	idx := index.New(index.Config{MergeGap: 30 * time.Second})
	opts = append([]api.Option{api.WithClock(func() time.Time { return time.Unix(0, t0+100*sec) })}, opts...)
	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	api.NewGRPC(idx, zap.NewNop(), opts...).Register(gs)
	go gs.Serve(gl)
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: api.NewHTTP(idx, zap.NewNop(), opts...)}
	go hs.Serve(hl)
	c, err := client.Dial(gl.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); gs.Stop(); hs.Close() })
	return &sonar{idx: idx, http: "http://" + hl.Addr().String(), grpc: gl.Addr().String(), client: c}
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

// seed reports web on 10.0.0.5 for [t0, t0+60s) in two heartbeats, db on 10.0.0.6, and a conflicting
// claim by cart on 10.0.0.6, over gRPC.
func (s *sonar) seed(t *testing.T) {
	t.Helper()
	hb := index.EvidenceHeartbeat
	conflicts, err := s.client.Report(context.Background(), []index.Claim{
		{IP: addr("10.0.0.5"), Start: t0, End: t0 + 20*sec, Owner: web, Evidence: hb},
		{IP: addr("10.0.0.5"), Start: t0 + 40*sec, End: t0 + 60*sec, Owner: web, Evidence: hb},
		{IP: addr("10.0.0.6"), Start: t0, End: t0 + 60*sec, Owner: db, Evidence: hb},
		{IP: addr("10.0.0.6"), Start: t0 + 50*sec, End: t0 + 70*sec, Owner: cart, Evidence: hb},
		{IP: addr("fd00::6"), Start: t0, End: t0 + 10*sec, Seen: t0 + 30*sec, Owner: db, Evidence: index.EvidencePodEvent},
	})
	if err != nil || conflicts != 1 {
		t.Fatalf("Report: %d conflicts, %v; want 1, nil", conflicts, err)
	}
}

var (
	webRange  = index.Range{Start: t0, End: t0 + 60*sec, LastSeen: t0 + 60*sec, Owner: web, Evidence: index.EvidenceHeartbeat}
	dbRange   = index.Range{Start: t0, End: t0 + 60*sec, LastSeen: t0 + 60*sec, Owner: db, Evidence: index.EvidenceHeartbeat}
	cartPart  = index.Range{Start: t0 + 50*sec, End: t0 + 60*sec, LastSeen: t0 + 70*sec, Owner: cart, Evidence: index.EvidenceHeartbeat}
	cartRange = index.Range{Start: t0 + 60*sec, End: t0 + 70*sec, LastSeen: t0 + 70*sec, Owner: cart, Evidence: index.EvidenceHeartbeat}
	podRange  = index.Range{Start: t0, End: t0 + 10*sec, LastSeen: t0 + 30*sec, Owner: db, Evidence: index.EvidencePodEvent}
)

func TestGRPCLookup(t *testing.T) {
	s := start(t)
	s.seed(t)
	ctx := context.Background()
	a, err := s.client.Lookup(ctx, addr("10.0.0.5"), t0+30*sec)
	if want := (index.Answer{Status: index.Owned, Range: webRange}); err != nil || !reflect.DeepEqual(a, want) {
		t.Fatalf("Lookup: %+v, %v; want %+v", a, err, want)
	}
	qs := []client.Query{
		{IP: addr("10.0.0.5"), At: t0 - 1},
		{IP: addr("10.0.0.5"), At: t0},
		{IP: addr("::ffff:10.0.0.5"), At: t0 + 59*sec},
		{IP: addr("10.0.0.5"), At: t0 + 60*sec},
		{IP: addr("10.0.0.6"), At: t0 + 55*sec},
		{IP: addr("10.0.0.6"), At: t0 + 65*sec},
		{IP: addr("fd00::6"), At: t0 + 5*sec},
		{IP: addr("192.168.1.1"), At: t0},
	}
	want := []index.Answer{
		{},
		{Status: index.Owned, Range: webRange},
		{Status: index.Owned, Range: webRange},
		{},
		{Status: index.Conflict, Conflicting: []index.Range{dbRange, cartPart}},
		{Status: index.Owned, Range: cartRange},
		{Status: index.Owned, Range: podRange},
		{},
	}
	got, err := s.client.LookupBatch(ctx, qs)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("LookupBatch: %v\n got %+v\nwant %+v", err, got, want)
	}
	// More than one request's worth: the client splits, answers stay in order.
	many := make([]client.Query, api.MaxBatch+5)
	for i := range many {
		many[i] = client.Query{IP: addr("10.0.0.5"), At: t0 + int64(i%120)*sec/2}
	}
	got, err = s.client.LookupBatch(ctx, many)
	if err != nil || len(got) != len(many) {
		t.Fatalf("LookupBatch(%d): %d answers, %v", len(many), len(got), err)
	}
	for i, a := range got {
		if owned := many[i].At < t0+60*sec; (a.Status == index.Owned) != owned {
			t.Fatalf("answer %d at %d: %+v", i, many[i].At-t0, a)
		}
	}
	ranges, conflicts, err := s.client.Ranges(ctx, addr("10.0.0.6"))
	if want := []index.Range{dbRange, cartRange}; err != nil || !reflect.DeepEqual(ranges, want) {
		t.Fatalf("Ranges: %+v, %v; want %+v", ranges, err, want)
	}
	if want := []index.Range{cartPart}; !reflect.DeepEqual(conflicts, want) {
		t.Fatalf("Ranges conflicts: %+v; want %+v", conflicts, want)
	}
	ranges, _, err = s.client.Ranges(ctx, addr("10.9.9.9"))
	if err != nil || len(ranges) != 0 {
		t.Fatalf("Ranges of an unknown address: %+v, %v", ranges, err)
	}
	l := s.client.Lookuper(time.Second)
	if a := l.Lookup(addr("10.0.0.5"), t0); a.Status != index.Owned || l.Errors() != 0 {
		t.Fatalf("Lookuper: %+v, %d errors", a, l.Errors())
	}
	// The collector's batch adapter: the same answers as the client's, in calls of at most MaxBatch.
	if got := l.LookupBatch(many); !reflect.DeepEqual(got, mustBatch(t, s.client, many)) || l.Errors() != 0 {
		t.Fatalf("Lookuper.LookupBatch: %d answers, %d errors", len(got), l.Errors())
	}
}

func TestGRPCBadRequests(t *testing.T) {
	s := start(t)
	conn, err := grpc.NewClient(s.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw := sonarv1.NewSonarServiceClient(conn)
	ctx := context.Background()
	ok := &sonarv1.OwnershipRange{Ip: []byte{10, 0, 0, 1}, Start: 1, End: 2, Evidence: sonarv1.Evidence_EVIDENCE_HEARTBEAT}
	bad := func(f func(r *sonarv1.OwnershipRange)) *sonarv1.OwnershipRange {
		r := &sonarv1.OwnershipRange{Ip: ok.Ip, Start: ok.Start, End: ok.End, Evidence: ok.Evidence}
		f(r)
		return r
	}
	manyQ := make([]*sonarv1.LookupQuery, api.MaxBatch+1)
	for i := range manyQ {
		manyQ[i] = &sonarv1.LookupQuery{Ip: []byte{10, 0, 0, 1}}
	}
	for _, tc := range []struct {
		name string
		call func() error
		msg  string
	}{
		{"empty lookup", func() error { _, err := raw.Lookup(ctx, &sonarv1.LookupRequest{}); return err }, "queries: empty batch"},
		{"oversize lookup", func() error { _, err := raw.Lookup(ctx, &sonarv1.LookupRequest{Queries: manyQ}); return err }, "queries: 10001 in one batch, at most 10000"},
		{"bad ip in lookup", func() error {
			_, err := raw.Lookup(ctx, &sonarv1.LookupRequest{Queries: []*sonarv1.LookupQuery{{Ip: []byte{10, 0, 0, 1}}, {Ip: []byte{1, 2, 3}}}})
			return err
		}, "query 1: ip: 3 bytes, want 4 or 16"},
		{"empty report", func() error { _, err := raw.Report(ctx, &sonarv1.ReportRequest{}); return err }, "ranges: empty report"},
		{"report bad ip", func() error {
			_, err := raw.Report(ctx, &sonarv1.ReportRequest{Ranges: []*sonarv1.OwnershipRange{ok, bad(func(r *sonarv1.OwnershipRange) { r.Ip = nil })}})
			return err
		}, "range 1: ip: 0 bytes, want 4 or 16"},
		{"report inverted", func() error {
			_, err := raw.Report(ctx, &sonarv1.ReportRequest{Ranges: []*sonarv1.OwnershipRange{bad(func(r *sonarv1.OwnershipRange) { r.Start = 5 })}})
			return err
		}, "range 0: end 2 before start 5"},
		{"report CIDR evidence", func() error {
			_, err := raw.Report(ctx, &sonarv1.ReportRequest{Ranges: []*sonarv1.OwnershipRange{bad(func(r *sonarv1.OwnershipRange) { r.Evidence = sonarv1.Evidence_EVIDENCE_CIDR })}})
			return err
		}, "range 0: evidence EVIDENCE_CIDR: want HEARTBEAT, POD_EVENT, SERVICE or NODE"},
		{"report no evidence", func() error {
			_, err := raw.Report(ctx, &sonarv1.ReportRequest{Ranges: []*sonarv1.OwnershipRange{bad(func(r *sonarv1.OwnershipRange) { r.Evidence = 0 })}})
			return err
		}, "range 0: evidence EVIDENCE_UNSPECIFIED: want HEARTBEAT, POD_EVENT, SERVICE or NODE"},
		{"ranges bad ip", func() error { _, err := raw.ListRanges(ctx, &sonarv1.ListRangesRequest{Ip: []byte{1}}); return err }, "ip: 1 bytes, want 4 or 16"},
	} {
		err := tc.call()
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || st.Message() != tc.msg {
			t.Errorf("%s: %v, want InvalidArgument %q", tc.name, err, tc.msg)
		}
	}
	// A refused report adds nothing, not even its good ranges.
	if st := s.idx.Stats(); st.Ranges != 0 || st.Claims != 0 {
		t.Fatalf("after refused reports: %+v", st)
	}
}

// failing is a journal whose Sync fails: Report must not acknowledge.
type failing struct{}

func (failing) Append([]index.Claim) error { return nil }
func (failing) Sync() error                { return errors.New("disk full") }

func TestGRPCReportNotDurable(t *testing.T) {
	s := start(t, api.WithJournal(failing{}))
	_, err := s.client.Report(context.Background(), []index.Claim{{IP: addr("10.0.0.1"), Start: 1, End: 2, Owner: web, Evidence: index.EvidenceHeartbeat}})
	if st, _ := status.FromError(errors.Unwrap(err)); st.Code() != codes.Unavailable || st.Message() != "journal: disk full" {
		t.Fatalf("Report with a failing journal: %v, want Unavailable", err)
	}
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHTTPSchema pins the JSON flowctl is written against, byte for byte.
func TestHTTPSchema(t *testing.T) {
	s := start(t)
	s.seed(t)
	owner := `{"ip":"10.0.0.5","at":%d,"status":"OWNER","range":{"start":%d,"end":%d,"last_seen":%d,` +
		`"owner":{"name":"web","namespace":"shop","pod":"web-7d9f","node":"n1","cluster":"prod"},"evidence":"HEARTBEAT"}}`
	at := t0 + 30*sec
	for _, q := range []string{
		fmt.Sprint(at),
		time.Unix(0, at).UTC().Format(time.RFC3339Nano),
		"2026-11-25T04:00:30%2B01:00", // same instant, another zone
		"-70s",                        // the test clock is t0+100s
		"-1m10s",
	} {
		code, body := get(t, s.http+"/api/v1/lookup?ip=10.0.0.5&at="+q)
		if want := fmt.Sprintf(owner, at, t0, t0+60*sec, t0+60*sec) + "\n"; code != 200 || body != want {
			t.Errorf("at=%s: %d %s\nwant %s", q, code, body, want)
		}
	}
	for _, q := range []string{"", "&at=%2B0s", "&at=+1s"} { // an unescaped "+" arrives as a space
		code, body := get(t, s.http+"/api/v1/lookup?ip=10.0.0.5"+q)
		at := t0 + 100*sec
		if q == "&at=+1s" {
			at += sec
		}
		if want := fmt.Sprintf(`{"ip":"10.0.0.5","at":%d,"status":"UNKNOWN"}`, at) + "\n"; code != 200 || body != want {
			t.Errorf("relative to now %q: %d %s\nwant %s", q, code, body, want)
		}
	}
	code, body := get(t, s.http+fmt.Sprintf("/api/v1/lookup?ip=10.0.0.6&at=%d", t0+55*sec))
	want := fmt.Sprintf(`{"ip":"10.0.0.6","at":%d,"status":"CONFLICT","conflicting":[`+
		`{"start":%d,"end":%d,"last_seen":%d,"owner":{"name":"db","namespace":"shop","pod":"db-0","node":"n2","cluster":"prod"},"evidence":"HEARTBEAT"},`+
		`{"start":%d,"end":%d,"last_seen":%d,"owner":{"name":"cart","namespace":"shop","pod":"cart-1","node":"n2","cluster":"prod"},"evidence":"HEARTBEAT"}]}`,
		t0+55*sec, t0, t0+60*sec, t0+60*sec, t0+50*sec, t0+60*sec, t0+70*sec) + "\n"
	if code != 200 || body != want {
		t.Errorf("conflict: %d %s\nwant %s", code, body, want)
	}
	s.idx.SetCIDRs([]index.CIDR{{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Owner: flow.Workload{Name: "payments-api"}}})
	code, body = get(t, s.http+"/api/v1/lookup?ip=203.0.113.9&at=0")
	if want := `{"ip":"203.0.113.9","at":0,"status":"OWNER","range":{"start":-9223372036854775808,"end":9223372036854775807,"last_seen":0,"owner":{"name":"payments-api"},"evidence":"CIDR"}}` + "\n"; code != 200 || body != want {
		t.Errorf("CIDR: %d %s\nwant %s", code, body, want)
	}

	code, body = post(t, s.http+"/api/v1/lookup", fmt.Sprintf(`{"queries":[{"ip":"10.0.0.5","at":%d},{"ip":"fd00::6","at":"%d"},{"ip":"10.0.0.7","at":"-1m"}]}`, at, t0+5*sec))
	var batch api.BatchResponse
	if err := json.Unmarshal([]byte(body), &batch); code != 200 || err != nil {
		t.Fatalf("batch: %d %s %v", code, body, err)
	}
	wantBatch := api.BatchResponse{Answers: []api.AnswerJSON{
		{IP: "10.0.0.5", At: at, Status: "OWNER", Range: &api.RangeJSON{Start: t0, End: t0 + 60*sec, LastSeen: t0 + 60*sec, Owner: web, Evidence: "HEARTBEAT"}},
		{IP: "fd00::6", At: t0 + 5*sec, Status: "OWNER", Range: &api.RangeJSON{Start: t0, End: t0 + 10*sec, LastSeen: t0 + 30*sec, Owner: db, Evidence: "POD_EVENT"}},
		{IP: "10.0.0.7", At: t0 + 40*sec, Status: "UNKNOWN"},
	}}
	if !reflect.DeepEqual(batch, wantBatch) {
		t.Errorf("batch:\n got %+v\nwant %+v", batch, wantBatch)
	}

	code, body = get(t, s.http+"/api/v1/ranges?ip=10.0.0.6")
	want = fmt.Sprintf(`{"ip":"10.0.0.6","ranges":[`+
		`{"start":%d,"end":%d,"last_seen":%d,"owner":{"name":"db","namespace":"shop","pod":"db-0","node":"n2","cluster":"prod"},"evidence":"HEARTBEAT"},`+
		`{"start":%d,"end":%d,"last_seen":%d,"owner":{"name":"cart","namespace":"shop","pod":"cart-1","node":"n2","cluster":"prod"},"evidence":"HEARTBEAT"}],"conflicts":[`+
		`{"start":%d,"end":%d,"last_seen":%d,"owner":{"name":"cart","namespace":"shop","pod":"cart-1","node":"n2","cluster":"prod"},"evidence":"HEARTBEAT"}]}`,
		t0, t0+60*sec, t0+60*sec, t0+60*sec, t0+70*sec, t0+70*sec, t0+50*sec, t0+60*sec, t0+70*sec) + "\n"
	if code != 200 || body != want {
		t.Errorf("ranges: %d %s\nwant %s", code, body, want)
	}
	if code, body = get(t, s.http+"/api/v1/ranges?ip=10.9.9.9"); code != 200 || body != `{"ip":"10.9.9.9","ranges":[],"conflicts":[]}`+"\n" {
		t.Errorf("ranges of an unknown address: %d %s", code, body)
	}
}

func TestHTTPBadRequests(t *testing.T) {
	s := start(t)
	queries := func(n int) string {
		return `{"queries":[` + strings.Repeat(`{"ip":"10.0.0.1","at":1},`, n-1) + `{"ip":"10.0.0.1","at":1}]}`
	}
	for _, tc := range []struct {
		method, path, body string
		code               int
		msg                string
	}{
		{"GET", "/api/v1/lookup?ip=10.0.0.300", "", 400, `ip: ParseAddr("10.0.0.300"): IPv4 field has value >255`},
		{"GET", "/api/v1/lookup", "", 400, "ip: missing"},
		{"GET", "/api/v1/lookup?ip=10.0.0.1&at=yesterday", "", 400, `at: "yesterday" is not RFC 3339, Unix nanoseconds, now, or a relative duration like -15m`},
		{"GET", "/api/v1/lookup?ip=10.0.0.1&at=-5parsecs", "", 400, `at: bad relative duration "-5parsecs" (want e.g. -15m)`},
		{"GET", "/api/v1/ranges?ip=", "", 400, "ip: missing"},
		{"GET", "/api/v1/ranges?ip=x", "", 400, `ip: ParseAddr("x"): unable to parse IP`},
		{"POST", "/api/v1/lookup", `{"queries":[]}`, 400, "queries: empty batch"},
		{"POST", "/api/v1/lookup", `{}`, 400, "queries: empty batch"},
		{"POST", "/api/v1/lookup", queries(api.MaxBatch + 1), 400, "queries: 10001 in one batch, at most 10000"},
		{"POST", "/api/v1/lookup", `{"queries":[{"ip":"10.0.0.1"},{"ip":"nope"}]}`, 400, `query 1: ip: ParseAddr("nope"): unable to parse IP`},
		{"POST", "/api/v1/lookup", `{"queries":[{"ip":"10.0.0.1","at":1.5}]}`, 400, "query 0: at 1.5: want Unix nanoseconds as an integer, or a string"},
		{"POST", "/api/v1/lookup", `{"queries":[{"ip":"10.0.0.1","at":""}]}`, 400, `query 0: at: empty string (omit "at" for now)`},
		{"POST", "/api/v1/lookup", `{"queries":[{"ip":"10.0.0.1","at":"soon"}]}`, 400, `query 0: at: "soon" is not RFC 3339, Unix nanoseconds, now, or a relative duration like -15m`},
		{"POST", "/api/v1/lookup", `{"queries":[{"ip":"10.0.0.1","time":1}]}`, 400, `body: json: unknown field "time"`},
		{"POST", "/api/v1/lookup", `{"queries":[{"ip":"10.0.0.1"}]} {}`, 400, "body: more than one JSON value"},
		{"POST", "/api/v1/lookup", `{"queries":`, 400, "body: unexpected EOF"},
		{"POST", "/api/v1/lookup", `{"queries":[` + strings.Repeat(" ", 3<<20) + `]}`, 413, "http: request body too large"},
		{"DELETE", "/api/v1/lookup", "", 405, ""},
	} {
		req, _ := http.NewRequest(tc.method, s.http+tc.path, strings.NewReader(tc.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var e api.ErrorJSON
		json.Unmarshal(b, &e)
		if resp.StatusCode != tc.code || (tc.msg != "" && e.Error != tc.msg) {
			t.Errorf("%s %.60s: %d %s, want %d %q", tc.method, tc.path+" "+tc.body, resp.StatusCode, b, tc.code, tc.msg)
		}
	}
	// The largest batch allowed is answered in full.
	code, body := post(t, s.http+"/api/v1/lookup", queries(api.MaxBatch))
	var batch api.BatchResponse
	if err := json.Unmarshal([]byte(body), &batch); code != 200 || err != nil || len(batch.Answers) != api.MaxBatch {
		t.Fatalf("max batch: %d, %d answers, %v", code, len(batch.Answers), err)
	}
}

// BenchmarkGRPCBatch measures batches of 1,000 lookups over gRPC on loopback (client and server in
// this process) and reports the latency percentiles of one batch.
func BenchmarkGRPCBatch(b *testing.B) {
	s := start(b)
	const ips = 100_000
	claims := make([]index.Claim, ips)
	for i := range claims {
		claims[i] = index.Claim{IP: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), Start: t0, End: t0 + 60*sec,
			Owner: flow.Workload{Name: fmt.Sprint("app-", i%500), Namespace: "ns", Pod: fmt.Sprint("pod-", i)}, Evidence: index.EvidenceHeartbeat}
	}
	ctx := context.Background()
	if _, err := s.client.Report(ctx, claims); err != nil {
		b.Fatal(err)
	}
	qs := make([]client.Query, 1000)
	var lat []time.Duration
	i := 0
	for b.Loop() {
		for j := range qs {
			qs[j] = client.Query{IP: claims[(i*1000+j*7919)%ips].IP, At: t0 + int64(j)*sec/20}
		}
		st := time.Now()
		as, err := s.client.LookupBatch(ctx, qs)
		lat = append(lat, time.Since(st))
		if err != nil || as[0].Status != index.Owned {
			b.Fatalf("%v %+v", err, as[0])
		}
		i++
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(len(lat)*1000)/b.Elapsed().Seconds(), "lookups/s")
}

func mustBatch(t *testing.T, c *client.Client, qs []client.Query) []index.Answer {
	t.Helper()
	as, err := c.LookupBatch(context.Background(), qs)
	if err != nil {
		t.Fatal(err)
	}
	return as
}
