// Package hostid names the local workload of a record in host scope, where one exporter sees every
// process of the machine and no pod identity applies. The name comes from, in order:
//   - the network namespace, when the socket is not in the host's and `ip netns` named it
//     (a file under /run/netns bind-mounts it): "netns/<name>";
//   - the systemd unit of the socket's cgroup (cgroup v2: the cgroup id is the inode of its directory):
//     "nginx" for nginx.service;
//   - the process name (comm) otherwise: a shell's curl is "curl".
//
// Lookups are cached; a miss re-reads the tables at most once a second, so a burst of new sockets does
// not walk the cgroup tree per record.
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

	mu       sync.Mutex
	netns    map[uint32]string
	cgroups  map[uint64]string
	loadedAt time.Time
}

// New returns a Namer whose workloads carry base's node and cluster. hostNetns is the inode of the
// host's network namespace (the exporter's own, in host scope).
func New(base flow.Workload, hostNetns uint32) *Namer {
	return &Namer{base: flow.Workload{Node: base.Node, Cluster: base.Cluster}, hostNetns: hostNetns,
		cgroupFS: CgroupRoot("/sys/fs/cgroup"), netnsDir: "/run/netns"}
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
		if name := lookup(n, func() map[uint32]string { return n.netns }, r.Netns); name != "" {
			return name
		}
	}
	if r.CgroupID != 0 {
		if name := lookup(n, func() map[uint64]string { return n.cgroups }, r.CgroupID); name != "" {
			return name
		}
	}
	if r.Comm != "" {
		return r.Comm
	}
	return "unknown"
}

// lookup finds id in a table, re-reading the tables on a miss. An id that fresh tables do not hold is
// remembered as "": a socket in an unnamed namespace or cgroup (the root cgroup, say) must not make
// every later record walk the cgroup tree again.
func lookup[K comparable](n *Namer, table func() map[K]string, id K) string {
	name, ok := table()[id]
	if !ok && n.reload() {
		if name, ok = table()[id]; !ok {
			table()[id] = ""
		}
	}
	return name
}

// reload re-reads the namespace and cgroup tables unless it did within the last second.
func (n *Namer) reload() bool {
	if time.Since(n.loadedAt) < time.Second {
		return false
	}
	n.loadedAt = time.Now()
	n.netns = make(map[uint32]string)
	if entries, err := os.ReadDir(n.netnsDir); err == nil {
		for _, e := range entries {
			if ino, ok := inode(filepath.Join(n.netnsDir, e.Name())); ok {
				n.netns[uint32(ino)] = "netns/" + e.Name() // the workload name, made once
			}
		}
	}
	n.cgroups = make(map[uint64]string)
	if n.cgroupFS == "" {
		return true // no cgroup v2: ids name nothing
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
					n.cgroups[ino] = unit
				}
				break
			}
		}
		return nil
	})
	return true
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
