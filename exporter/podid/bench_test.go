package podid

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/flowlens/flowlens/internal/flow"
)

type constHost struct{}

func (constHost) Workload(*flow.Record) flow.Workload { return flow.Workload{Name: "host"} }

// benchNode is a full node: 110 pods (the kubelet's default limit), two containers each, in a
// kubelet-style tree of plain directories (the walk reads names and inodes only).
func benchNode(b *testing.B) (*Namer, []uint64) {
	b.Helper()
	n, err := New(nil, Config{Node: "n", Cluster: "c", HostNetns: 1, CgroupFS: b.TempDir()}, constHost{}, prometheus.NewRegistry(), zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	n.cgroups.root = b.TempDir()
	var ids []uint64
	for i := range 110 {
		uid := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
		n.upsert(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p-%d", i), Namespace: "ns", UID: types.UID(uid),
			Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%10)}},
			Spec: corev1.PodSpec{NodeName: "n"}, Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: fmt.Sprintf("10.9.%d.%d", i/250, i%250+1)}})
		for c := range 2 {
			dir := filepath.Join(n.cgroups.root, "kubepods.slice/kubepods-burstable.slice",
				"kubepods-burstable-pod"+strings.ReplaceAll(uid, "-", "_")+".slice", fmt.Sprintf("cri-containerd-%064x.scope", c))
			if err := os.MkdirAll(dir, 0o755); err != nil {
				b.Fatal(err)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(dir, &st); err != nil {
				b.Fatal(err)
			}
			ids = append(ids, st.Ino)
		}
	}
	for i := range 200 { // host services
		if err := os.MkdirAll(filepath.Join(n.cgroups.root, "system.slice", fmt.Sprintf("svc-%d.service", i)), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	return n, ids
}

// BenchmarkWorkload: the reader's per-record cost of naming, once the tables are warm.
func BenchmarkWorkload(b *testing.B) {
	n, ids := benchNode(b)
	n.cgroups.podUID(ids[0]) // the first walk
	cases := []struct {
		name string
		r    func(i int) flow.Record
	}{
		{"cgroup", func(i int) flow.Record { return flow.Record{CgroupID: ids[i%len(ids)]} }},
		{"pod_ip", func(i int) flow.Record {
			return flow.Record{Netns: 2, LocalAddr: netip.AddrFrom4([4]byte{10, 9, 0, byte(i%110 + 1)})}
		}},
		{"host", func(int) flow.Record { return flow.Record{CgroupID: 1 << 40, Netns: 1} }},
	}
	for _, c := range cases {
		recs := make([]flow.Record, 256)
		for i := range recs {
			recs[i] = c.r(i)
		}
		b.Run(c.name, func(b *testing.B) {
			var w flow.Workload
			for i := 0; b.Loop(); i++ {
				w = n.Workload(&recs[i%len(recs)])
			}
			if w.Name == "" {
				b.Fatal("unnamed")
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/record")
		})
	}
}

// BenchmarkCgroupWalk: one re-read of a full node's cgroup tree, what a miss costs at most once a second.
func BenchmarkCgroupWalk(b *testing.B) {
	n, _ := benchNode(b)
	for b.Loop() {
		n.cgroups.loadedAt = time.Time{}
		n.cgroups.reload()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/walk")
	b.ReportMetric(float64(len(n.cgroups.uids)), "cgroups_of_pods")
}
