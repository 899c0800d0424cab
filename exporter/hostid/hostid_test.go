package hostid

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/flowlens/flowlens/internal/flow"
)

func TestNames(t *testing.T) {
	dir := t.TempDir()
	cg, nsdir := filepath.Join(dir, "cgroup"), filepath.Join(dir, "netns")
	for _, d := range []string{"system.slice/nginx.service/worker", "user.slice/session-1.scope", ""} {
		if err := os.MkdirAll(filepath.Join(cg, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(nsdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(nsdir, "blue"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ino := func(p string) uint64 {
		i, ok := inode(p)
		if !ok {
			t.Fatalf("stat %s", p)
		}
		return i
	}
	n := New(flow.Workload{Name: "ignored", Node: "host-1", Cluster: "lab"}, 4026531840)
	n.cgroupFS, n.netnsDir = cg, nsdir
	blue := uint32(ino(filepath.Join(nsdir, "blue")))
	cases := []struct {
		name string
		r    flow.Record
		want string
	}{
		{"service", flow.Record{Netns: 4026531840, CgroupID: ino(filepath.Join(cg, "system.slice/nginx.service")), Comm: "nginx"}, "nginx"},
		{"sub-cgroup of a service", flow.Record{CgroupID: ino(filepath.Join(cg, "system.slice/nginx.service/worker")), Comm: "x"}, "nginx"},
		{"session: the process", flow.Record{CgroupID: ino(filepath.Join(cg, "user.slice/session-1.scope")), Comm: "curl"}, "curl"},
		{"named netns", flow.Record{Netns: blue, CgroupID: ino(filepath.Join(cg, "system.slice/nginx.service")), Comm: "curl"}, "netns/blue"},
		{"unnamed netns: falls through", flow.Record{Netns: 77, Comm: "curl"}, "curl"},
		{"nothing known", flow.Record{}, "unknown"},
	}
	for _, c := range cases {
		got := n.Workload(&c.r)
		if want := (flow.Workload{Name: c.want, Node: "host-1", Cluster: "lab"}); got != want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, want)
		}
	}
}

// An id the tables do not hold is remembered after one re-read: it does not walk the cgroup tree for
// every record, even after the guard's interval has passed.
func TestUnknownIDsReadTheTablesOnce(t *testing.T) {
	n := New(flow.Workload{Node: "h"}, 1)
	n.cgroupFS, n.netnsDir = t.TempDir(), t.TempDir()
	r := flow.Record{CgroupID: 12345, Comm: "curl"}
	if got := n.Workload(&r).Name; got != "curl" {
		t.Fatalf("got %q", got)
	}
	first := n.cgroups.loadedAt
	n.cgroups.loadedAt = first.Add(-time.Hour) // as if the guard had long passed
	if got := n.Workload(&r).Name; got != "curl" || !n.cgroups.loadedAt.Equal(first.Add(-time.Hour)) {
		t.Fatalf("got %q; the tables were read again for a known-unknown id", got)
	}
}

// A namespace named right after the names were read is named once the short netns interval has
// passed, well within the cgroup walk's second.
func TestNewNamespaceNamedSoon(t *testing.T) {
	n := New(flow.Workload{Node: "h"}, 1)
	n.cgroupFS, n.netnsDir = t.TempDir(), t.TempDir()
	if got := n.Workload(&flow.Record{Netns: 99, Comm: "x"}).Name; got != "x" { // reads the (empty) names
		t.Fatalf("got %q", got)
	}
	f := filepath.Join(n.netnsDir, "green")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ino, _ := inode(f)
	r := flow.Record{Netns: uint32(ino), Comm: "curl"}
	time.Sleep(netnsEvery + 10*time.Millisecond)
	if got := n.Workload(&r).Name; got != "netns/green" {
		t.Fatalf("a namespace named %v after the last read: %q, want netns/green", netnsEvery, got)
	}
}
