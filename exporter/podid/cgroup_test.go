package podid

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestRemovedCgroupStillNamed: a pod's cgroup directory goes when its container exits, but the kernel
// still reports its id on the sockets the container left closing (FIN_WAIT, a late peer FIN): their
// final records arrive after it. A tree walk after the removal (any new cgroup's first record causes
// one) must not forget the id's pod for keepDeleted; after that it is forgotten. Plain directories
// stand for the cgroups: the walk reads only names and inodes.
func TestRemovedCgroupStillNamed(t *testing.T) {
	const uid = "7f9c2b1e-4d3a-4c5b-9e8f-0a1b2c3d4e5f"
	root := t.TempDir()
	dir := filepath.Join(root, "kubepods/besteffort/pod"+uid, "0123456789abcdef")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC)
	c := &cgroups{root: root, now: func() time.Time { return now }}
	if got := c.podUID(st.Ino); got != uid {
		t.Fatalf("live cgroup: %q, want %q", got, uid)
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	unknown := uint64(1 << 50)
	walk := func() {
		now = now.Add(2 * time.Second) // past the walks' once-a-second bound
		unknown++
		c.podUID(unknown) // an id the tree does not hold (nor remembers): a miss, so a walk
	}
	walk()
	if c.walks != 2 {
		t.Fatalf("%d walks, want 2", c.walks)
	}
	if got := c.podUID(st.Ino); got != uid {
		t.Errorf("removed cgroup after a walk: %q, want %q", got, uid)
	}
	now = now.Add(keepDeleted)
	walk()
	if c.walks != 3 {
		t.Fatalf("%d walks, want 3", c.walks)
	}
	if got := c.podUID(st.Ino); got != "" {
		t.Errorf("removed cgroup %v after: %q, want it forgotten", keepDeleted, got)
	}
}
