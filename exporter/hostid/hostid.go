// Package hostid names the local workload of a record in host scope, where one exporter sees every
// process of the machine and no pod identity applies. The name comes from, in order:
//   - the network namespace, when the socket is not in the host's and `ip netns` named it
//     (a file under /run/netns bind-mounts it): "netns/<name>";
//   - the systemd unit of the socket's cgroup (cgroup v2: the cgroup id is the inode of its directory):
//     "nginx" for nginx.service;
//   - the process name (comm) otherwise: a shell's curl is "curl".
//
// Lookups are cached; a miss re-reads the namespace names at most every 50 ms and walks the cgroup tree
// at most once a second, so a burst of new sockets does not walk the tree per record.
package hostid

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flowlens/flowlens/internal/flow"
)

// Namer names records' local workloads. Safe for concurrent use.
type Namer struct {
	base      flow.Workload // node and cluster, from the config
	hostNetns uint32
	cgroupFS  string // the cgroup v2 hierarchy (CgroupRoot); empty: none
	netnsDir  string

	mu      sync.Mutex
	netns   table[uint32]
	cgroups table[uint64]
}

// Re-reading on a miss: the namespace names are a directory of a few files, read again at most every
// 50 ms so that a namespace `ip netns add` just made is named from its first records; the cgroup tree
// is walked at most once a second.
const (
	netnsEvery  = 50 * time.Millisecond
	cgroupEvery = time.Second
)

// New returns a Namer whose workloads carry base's node and cluster. hostNetns is the inode of the
// host's network namespace (the exporter's own, in host scope).
func New(base flow.Workload, hostNetns uint32) *Namer {
	n := &Namer{base: flow.Workload{Node: base.Node, Cluster: base.Cluster}, hostNetns: hostNetns,
		cgroupFS: CgroupRoot("/sys/fs/cgroup"), netnsDir: "/run/netns"}
	n.netns = table[uint32]{every: netnsEvery, load: n.loadNetns}
	n.cgroups = table[uint64]{every: cgroupEvery, load: n.loadCgroups}
	return n
}

// Workload names r's local side.
func (n *Namer) Workload(r *flow.Record) flow.Workload {
	w := n.base
	w.Name = n.name(r)
	return w
}

func (n *Namer) name(r *flow.Record) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if r.Netns != 0 && r.Netns != n.hostNetns {
		if name := n.netns.lookup(r.Netns); name != "" {
			return name
		}
	}
	if r.CgroupID != 0 {
		if name := n.cgroups.lookup(r.CgroupID); name != "" {
			return name
		}
	}
	if r.Comm != "" {
		return r.Comm
	}
	return "unknown"
}

// table is ids to names, re-read on a miss at most every interval. An id that a fresh read does not
// hold is remembered as "" until the next read: a socket in an unnamed namespace or cgroup (the root
// cgroup, say) must not make every later record read the table again.
type table[K comparable] struct {
	names    map[K]string
	loadedAt time.Time
	every    time.Duration
	load     func() map[K]string
}

func (t *table[K]) lookup(id K) string {
	name, ok := t.names[id]
	if ok || time.Since(t.loadedAt) < t.every {
		return name
	}
	t.loadedAt = time.Now()
	t.names = t.load()
	if name, ok = t.names[id]; !ok {
		t.names[id] = ""
	}
	return name
}

// loadNetns reads the names `ip netns` gave namespaces.
func (n *Namer) loadNetns() map[uint32]string {
	names := make(map[uint32]string)
	if entries, err := os.ReadDir(n.netnsDir); err == nil {
		for _, e := range entries {
			if ino, ok := inode(filepath.Join(n.netnsDir, e.Name())); ok {
				names[uint32(ino)] = "netns/" + e.Name() // the workload name, made once
			}
		}
	}
	return names
}

// loadCgroups walks the cgroup tree for systemd services.
func (n *Namer) loadCgroups() map[uint64]string {
	names := make(map[uint64]string)
	if n.cgroupFS == "" {
		return names // no cgroup v2: ids name nothing
	}
	filepath.WalkDir(n.cgroupFS, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		// The nearest enclosing service names the cgroup: sub-cgroups of a unit belong to it.
		parts := strings.Split(path, "/")
		for i := len(parts) - 1; i >= 0; i-- {
			if unit, ok := strings.CutSuffix(parts[i], ".service"); ok {
				if ino, ok := inode(path); ok {
					names[ino] = unit
				}
				break
			}
		}
		return nil
	})
	return names
}

func inode(path string) (uint64, bool) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, false
	}
	return st.Ino, true
}

// CgroupRoot finds the cgroup v2 hierarchy, whose directory inodes are the cgroup ids the kernel
// programs report: /sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified on a hybrid one (the v1
// controllers' trees have inodes of their own, which must not be mistaken for v2 ids). Empty when the
// host has none.
func CgroupRoot(base string) string {
	for _, dir := range []string{base, filepath.Join(base, "unified")} {
		var st unix.Statfs_t
		if unix.Statfs(dir, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return dir
		}
	}
	return ""
}
