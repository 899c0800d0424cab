package cidrfile

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

func TestParse(t *testing.T) {
	pay := flow.Workload{Name: "payments", Namespace: "external", Cluster: "prod"}
	for _, tc := range []struct {
		name, in string
		want     []index.CIDR
		err      string
	}{
		{name: "empty", in: "  \n"},
		{name: "empty list", in: "[]", want: []index.CIDR{}},
		{name: "entries", in: `
- cidr: 203.0.113.7/24
  name: payments
  namespace: external
  cluster: prod
- cidr: 198.51.100.1
  name: lb
  node: edge-1
- cidr: fd00::/48
  name: v6
- cidr: ::ffff:192.0.2.0/120
  name: mapped
`, want: []index.CIDR{
			{Prefix: netip.MustParsePrefix("203.0.113.0/24"), Owner: pay},
			{Prefix: netip.MustParsePrefix("198.51.100.1/32"), Owner: flow.Workload{Name: "lb", Node: "edge-1"}},
			{Prefix: netip.MustParsePrefix("fd00::/48"), Owner: flow.Workload{Name: "v6"}},
			{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Owner: flow.Workload{Name: "mapped"}},
		}},
		{name: "unknown field", in: "- cidr: 10.0.0.0/8\n  name: x\n  owner: y\n", err: "yaml: yaml: unmarshal errors:\n  line 3: field owner not found in type cidrfile.Entry"},
		{name: "not a list", in: "cidr: 10.0.0.0/8\n", err: "yaml: yaml: unmarshal errors:\n  line 1: cannot unmarshal !!map into []cidrfile.Entry"},
		{name: "bad entries all reported", in: "- cidr: 10.0.0.0/33\n  name: a\n- name: b\n- cidr: 10.0.0.0/8\n", err: "entry 1: cidr \"10.0.0.0/33\": netip.ParsePrefix(\"10.0.0.0/33\"): prefix length out of range\nentry 2: cidr is required\nentry 3 (10.0.0.0/8): name is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse([]byte(tc.in))
			if tc.err != "" {
				if err == nil || err.Error() != tc.err {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Parse: %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

// eventually polls cond: the watch reacts asynchronously. The 10 s bound only keeps a broken watch
// from hanging the run.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("never happened: %s", what)
		}
	}
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "cidrs.yaml")
	write := func(content string) { // as editors do: a new file renamed over the old
		tmp := filepath.Join(dir, ".cidrs.yaml.swp")
		if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write("- cidr: 203.0.113.0/24\n  name: first\n")
	idx := index.New(index.Config{})
	f, err := Load(path, idx, zap.NewNop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	owner := func() string { return idx.Lookup(netip.MustParseAddr("203.0.113.9"), 0).Range.Owner.Name }
	if owner() != "first" {
		t.Fatalf("after Load: %q", owner())
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.Run(ctx) }()
	defer func() { cancel(); <-done }()

	write("- cidr: 203.0.113.0/24\n  name: second\n")
	eventually(t, "rename-write reloaded", func() bool { return owner() == "second" })

	write("- cidr: 203.0.113.0/24\n  nme: typo\n")
	eventually(t, "bad edit counted", func() bool { return testutil.ToFloat64(f.reloads.WithLabelValues("error")) == 1 })
	if owner() != "second" {
		t.Fatalf("bad edit replaced the table: %q", owner())
	}

	if err := os.WriteFile(path, []byte("- cidr: 203.0.113.0/24\n  name: third\n"), 0o644); err != nil { // in place
		t.Fatal(err)
	}
	eventually(t, "in-place write reloaded", func() bool { return owner() == "third" })

	os.Remove(path)
	eventually(t, "removal counted", func() bool { return testutil.ToFloat64(f.reloads.WithLabelValues("error")) == 2 })
	if owner() != "third" {
		t.Fatalf("removal dropped the table: %q", owner())
	}
	if ok := testutil.ToFloat64(f.reloads.WithLabelValues("ok")); ok != 3 {
		t.Fatalf("ok reloads %v, want 3", ok)
	}
}

func TestLoadRefusesBadFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "cidrs.yaml")
	os.WriteFile(path, []byte("- cidr: nope\n  name: x\n"), 0o644)
	_, err := Load(path, index.New(index.Config{}), zap.NewNop(), nil)
	if want := "cidr file " + path + ": entry 1: cidr \"nope\": ParseAddr(\"nope\"): unable to parse IP"; err == nil || err.Error() != want {
		t.Fatalf("Load: %v, want %q", err, want)
	}
}
