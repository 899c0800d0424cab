package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/api/apitest"
	"github.com/flowlens/flowlens/internal/flow"
	sonarapi "github.com/flowlens/flowlens/sonar/api"
	"github.com/flowlens/flowlens/sonar/index"
)

type result struct {
	code           int
	stdout, stderr string
}

func runCLI(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, &Env{
		Getenv: func(k string) string { return env[k] }, Stdout: &out, Stderr: &errb, Location: time.UTC,
	})
	return result{code, out.String(), errb.String()}
}

// serve starts the real API over a seeded store, with sonar's real lookup handler over an index that
// knows the seed's db address.
func serve(t *testing.T) (string, apitest.Seed, int64) {
	idx := index.New(index.Config{})
	at := time.Now().Add(-10 * time.Minute).UnixNano()
	idx.Add(index.Claim{IP: apitest.DBIP, Start: at - int64(time.Minute), End: at + int64(time.Minute), Owner: apitest.DB, Evidence: index.EvidenceHeartbeat})
	srv, _, seed := apitest.Serve(t, sonarapi.NewHTTP(idx, zap.NewNop()).ServeHTTP)
	return srv.URL, seed, at
}

func TestTables(t *testing.T) {
	url, seed, at := serve(t)
	env := map[string]string{"FLOWLENS_SERVER": url}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"deps"}, `5 workloads: ?, shop/api@c1, infra/cache@c2, data/db@c1, shop/web@c1

CLIENT       SERVER          FLOWS  TO SERVER  TO CLIENT  CONNECT FAILED  RESETS  TIMEOUTS  RETRANS  RTT P50  P90    P99
?            shop/api@c1     1      50 B       5 B        0               1       0         0        899µs    899µs  899µs
shop/web@c1  shop/api@c1     1      1000 B     0 B        0               0       1         0        490µs    490µs  490µs
shop/web@c1  infra/cache@c2  1      10 B       0 B        0               0       0         0        693µs    693µs  693µs
shop/web@c1  data/db@c1      5      600 B      60 B       2               0       0         0        2.0ms    3.0ms  3.0ms
`},
		{[]string{"top", "--by", "bytes", "--limit", "1"}, `CLIENT       SERVER       FLOWS  TO SERVER  TO CLIENT  CONNECT FAILED  RESETS  TIMEOUTS  RETRANS  RTT P50  P90    P99
shop/web@c1  shop/api@c1  1      1000 B     0 B        0               0       1         0        490µs    490µs  490µs
`},
		{[]string{"failing", "--from", "-2h"}, `CLIENT       SERVER       FLOWS  TO SERVER  TO CLIENT  CONNECT FAILED  RESETS  TIMEOUTS  RETRANS  RTT P50  P90    P99
shop/web@c1  data/db@c1   5      600 B      60 B       2               0       0         0        2.0ms    3.0ms  3.0ms
?            shop/api@c1  1      50 B       5 B        0               1       0         0        899µs    899µs  899µs
shop/web@c1  shop/api@c1  1      1000 B     0 B        0               0       1         0        490µs    490µs  490µs
`},
		{[]string{"cross", "--by", "cluster"}, `CLIENT  SERVER  FLOWS  TO SERVER  TO CLIENT  CONNECT FAILED  RESETS  TIMEOUTS  RETRANS  RTT P50  P90    P99
@c1     @c2     1      10 B       0 B        0               0       0         0        693µs    693µs  693µs
`},
		{[]string{"lookup", "10.0.1.1", "--at", fmt.Sprint(at)}, fmt.Sprintf(`10.0.1.1 at %s: OWNER
OWNER       POD   NODE  EVIDENCE   FROM                     TO                       LAST SEEN
data/db@c1  db-0  n2    HEARTBEAT  %s  %s  %s
`, utc(at), utc(at-int64(time.Minute)), utc(at+int64(time.Minute)), utc(at+int64(time.Minute)))},
		{[]string{"lookup", "10.0.0.99"}, ""}, // checked below: UNKNOWN, no table
	} {
		r := runCLI(t, env, tc.args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d: %s", tc.args, r.code, r.stderr)
		}
		if tc.want == "" {
			if !strings.HasPrefix(r.stdout, "10.0.0.99 at ") || !strings.HasSuffix(r.stdout, ": UNKNOWN\n") {
				t.Fatalf("%v:\n%s", tc.args, r.stdout)
			}
			continue
		}
		if r.stdout != tc.want {
			t.Fatalf("%v:\n got:\n%s\nwant:\n%s", tc.args, r.stdout, tc.want)
		}
	}

	// Flows: newest first, one line per flow, and the cursor of the next page.
	r := runCLI(t, env, "flows", "--workload", "db", "--close", "CONNECT_FAILED", "--limit", "1")
	f := seed.Flows[7] // the second failed connect (web port 40004), the newest failed one
	wantLines := []string{
		"END                      ROLE    LOCAL                       REMOTE                    CLOSE           SENT  RECEIVED  SRTT  ATTRIBUTION  EXPORTER",
		utc(f.EndTime) + "  CLIENT  shop/web@c1 10.0.0.1:40004  data/db@c1 10.0.1.1:5432  CONNECT_FAILED  0 B   0 B       -     HEARTBEAT    web-exp",
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if r.code != 0 || len(lines) != 3 || lines[0] != wantLines[0] || lines[1] != wantLines[1] || !strings.HasPrefix(lines[2], "more: --cursor ") {
		t.Fatalf("flows (exit %d, %s):\n%s\nwant:\n%s", r.code, r.stderr, r.stdout, strings.Join(wantLines, "\n"))
	}
	// The printed cursor gives the other failed connect, and no further cursor.
	r = runCLI(t, env, "flows", "--workload", "db", "--close", "CONNECT_FAILED", "--limit", "1", "--cursor", strings.TrimPrefix(lines[2], "more: --cursor "))
	if lines = strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "10.0.0.1:40003") {
		t.Fatalf("second page:\n%s", r.stdout)
	}
}

func utc(ns int64) string { return time.Unix(0, ns).UTC().Format("2006-01-02 15:04:05.000") }

func TestJSON(t *testing.T) {
	url, seed, _ := serve(t)
	r := runCLI(t, nil, "flows", "--server", url, "-o", "json", "--ip", apitest.OutIP.String())
	var page struct {
		Flows []flow.Enriched `json:"flows"`
	}
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &page) != nil || len(page.Flows) != 1 || page.Flows[0] != seed.Flows[len(seed.Flows)-1] {
		t.Fatalf("flows json (exit %d, %s):\n%s", r.code, r.stderr, r.stdout)
	}
	// The JSON printed is the API's answer, indented.
	r = runCLI(t, nil, "deps", "--server", url, "-o", "json", "--namespace", "infra")
	var deps struct {
		Nodes []node `json:"nodes"`
		Edges []edge `json:"edges"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &deps); err != nil || len(deps.Nodes) != 2 || len(deps.Edges) != 1 || deps.Edges[0].BytesToServer != 10 {
		t.Fatalf("deps json: %v\n%s", err, r.stdout)
	}
	if !strings.HasPrefix(r.stdout, "{\n  \"from\": ") {
		t.Fatalf("not indented:\n%s", r.stdout)
	}
	r = runCLI(t, nil, "lookup", "--server", url, "-o", "json", apitest.DBIP.String(), "--at", "-10m")
	var ans lookupAnswer
	if err := json.Unmarshal([]byte(r.stdout), &ans); err != nil || ans.Status != "OWNER" || ans.Range == nil || ans.Range.Owner != apitest.DB {
		t.Fatalf("lookup json: %v\n%s", err, r.stdout)
	}
}

func TestErrors(t *testing.T) {
	url, _, _ := serve(t)
	env := map[string]string{"FLOWLENS_SERVER": url}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"flows", "--from", "yesterday"}, `flowctl: server: from: "yesterday" is not RFC 3339`},
		{[]string{"top", "--by", "packets"}, `flowctl: server: by: "packets" is not one of bytes, flows (400 Bad Request)`},
		{[]string{"lookup"}, "flowctl: usage: flowctl lookup IP [flags]"},
		{[]string{"lookup", "not-an-ip"}, "flowctl: server: "},
		{[]string{"deps", "extra"}, `flowctl: deps takes no arguments, got ["extra"]`},
		{[]string{"deps", "-o", "yaml"}, `flowctl: -o "yaml": want table or json`},
		{[]string{"graph"}, `flowctl: unknown command "graph"`},
		{[]string{"deps", "--nope"}, "unknown flag: --nope"},
		{[]string{}, "flowctl: no command"},
	} {
		r := runCLI(t, env, tc.args...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	// --server beats the environment; a server that is not there is a clear error.
	r := runCLI(t, env, "deps", "--server", "http://127.0.0.1:1")
	if r.code != 1 || !strings.Contains(r.stderr, "query http://127.0.0.1:1/api/v1/deps") {
		t.Fatalf("unreachable server: %q", r.stderr)
	}
	if r := runCLI(t, nil, "deps", "--help"); r.code != 0 || !strings.Contains(r.stderr, "--namespace") {
		t.Fatalf("help: %+v", r)
	}
}

func TestBytesText(t *testing.T) {
	for n, want := range map[uint64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 1536: "1.5 KiB", 5 << 30: "5.0 GiB"} {
		if got := bytesText(n); got != want {
			t.Errorf("%d: %q, want %q", n, got, want)
		}
	}
}
