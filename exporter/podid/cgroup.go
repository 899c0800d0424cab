package podid

import (
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/flowlens/flowlens/exporter/hostid"
)

// CgroupRoot is hostid.CgroupRoot: where the cgroup v2 hierarchy is mounted.
func CgroupRoot(base string) string { return hostid.CgroupRoot(base) }

// PodUID is the UID of the pod a cgroup path belongs to, as the kubelet names its cgroups, or "":
//
//	systemd driver:  .../kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid, _ for ->.slice/cri-containerd-<id>.scope
//	                 .../kubepods.slice/kubepods-pod<uid>.slice/...  (Guaranteed QoS; kind nests it in kubelet.slice)
//	cgroupfs driver: .../kubepods/burstable/pod<uid>/<container id>, .../kubepods/pod<uid>/<container id>
//
// Every cgroup below a pod's (its containers', their sub-cgroups) belongs to it.
func PodUID(path string) string {
	inKubepods := false
	for _, c := range strings.Split(path, "/") {
		if c == "kubepods" {
			inKubepods = true // the cgroupfs driver's root
			continue
		}
		if unit, ok := strings.CutSuffix(c, ".slice"); ok {
			parts := strings.Split(unit, "-")
			if last := parts[len(parts)-1]; hasPart(parts, "kubepods") {
				if uid, ok := strings.CutPrefix(last, "pod"); ok && validUID(uid, '_') {
					// systemd escapes the UID's dashes, which separate a slice's parents.
					return strings.ReplaceAll(uid, "_", "-")
				}
			}
			continue
		}
		if uid, ok := strings.CutPrefix(c, "pod"); ok && inKubepods && validUID(uid, '-') {
			return uid
		}
	}
	return ""
}

func hasPart(parts []string, p string) bool {
	for _, x := range parts[:len(parts)-1] {
		if x == p {
			return true
		}
	}
	return false
}

// validUID accepts what pod UIDs look like, with sep between the UUID's groups (systemd escapes the
// dashes as underscores): a UUID, or for static pods the hex hash the kubelet makes of the manifest.
// Anything else ("podman", "pods") is not a pod's cgroup.
func validUID(s string, sep rune) bool {
	if len(s) < 8 {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r == sep) {
			return false
		}
	}
	return true
}

// cgroups maps cgroup ids to pod UIDs. A miss re-reads the tree at most once a second, and an id the
// fresh tree does not hold under a pod is remembered as "" (a host process's cgroup must not make every
// later record walk the tree). A pod's cgroup that leaves the tree (its container exited) is still
// named for keepDeleted: the sockets the container left closing keep reporting its id, and their final
// records come after; cgroup ids are never reused, so this cannot misname.
type cgroups struct {
	root string           // "" when the host has no cgroup v2: every lookup misses
	now  func() time.Time // nil: time.Now

	mu       sync.Mutex
	uids     map[uint64]string
	gone     map[uint64]goneCgroup // pods' cgroups no longer in the tree, kept for keepDeleted
	loadedAt time.Time
	walks    int // tree walks so far, for tests
}

func (c *cgroups) podUID(id uint64) string {
	if c.root == "" || id == 0 {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	uid, ok := c.uids[id]
	if !ok && c.reload() {
		if uid, ok = c.uids[id]; !ok {
			c.uids[id] = ""
		}
	}
	return uid
}

type goneCgroup struct {
	uid   string
	since time.Time // the walk that first missed it
}

func (c *cgroups) clock() time.Time {
	if c.now == nil {
		return time.Now()
	}
	return c.now()
}

func (c *cgroups) reload() bool {
	now := c.clock()
	if now.Sub(c.loadedAt) < time.Second {
		return false
	}
	c.loadedAt = now
	c.walks++
	old := c.uids
	c.uids = make(map[uint64]string, len(c.uids))
	filepath.WalkDir(c.root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if uid := PodUID(path[len(c.root):]); uid != "" {
			var st syscall.Stat_t
			if syscall.Stat(path, &st) == nil {
				c.uids[st.Ino] = uid
			}
		}
		return nil
	})
	c.keepGone(old, now)
	return true
}

// keepGone remembers the pods' cgroups of old that the walk just made did not find, and puts back into
// c.uids those gone for at most keepDeleted.
func (c *cgroups) keepGone(old map[uint64]string, now time.Time) {
	for id, uid := range old {
		if _, ok := c.uids[id]; !ok && uid != "" {
			if c.gone == nil {
				c.gone = make(map[uint64]goneCgroup)
			}
			if _, ok := c.gone[id]; !ok {
				c.gone[id] = goneCgroup{uid: uid, since: now}
			}
		}
	}
	for id, g := range c.gone {
		if now.Sub(g.since) > keepDeleted {
			delete(c.gone, id)
			continue
		}
		c.uids[id] = g.uid
	}
}
