package kube

import (
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/flowlens/flowlens/sonar/index"
)

// A watch update delivered late (the pod said "running" at 1 s, the update arrives at 14 s, the pod
// released its IP at 10 s) must not extend the pod's range past arrival - EventLag: with a lag longer
// than the delivery delay, the range stops before the IP was released. (The scenario make
// bench-attribution found with 30 s watch delays.)
func TestLateUpdateIsHeldBackByEventLag(t *testing.T) {
	x := index.New(index.Config{})
	s, err := New(fake.NewClientset(), x, Config{Cluster: "c", EventLag: 5 * time.Second}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	base := time.Unix(1_800_000_000, 0)
	clock := base
	s.now = func() time.Time { return clock }
	ip := netip.MustParseAddr("10.1.0.9")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "job-1", Namespace: "batch", UID: "u1"},
		Spec: corev1.PodSpec{NodeName: "n1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(),
			Conditions: []corev1.PodCondition{{Type: corev1.PodReadyToStartContainers, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(base)}}}}
	clock = base.Add(2 * time.Second) // the add arrives promptly
	s.event(kindPod, "add", pod)
	clock = base.Add(14 * time.Second) // a "still running" update sent at 1 s arrives at 14 s
	s.event(kindPod, "update", pod)
	ranges, conflicts := x.Ranges(ip)
	if len(ranges) != 1 || len(conflicts) != 0 {
		t.Fatalf("ranges %+v conflicts %+v", ranges, conflicts)
	}
	if r := ranges[0]; r.Start != base.UnixNano() || r.End != base.Add(9*time.Second).UnixNano() {
		t.Fatalf("range [%v, %v), want [0s, 9s): the update may vouch only up to its arrival less the lag",
			time.Duration(r.Start-base.UnixNano()), time.Duration(r.End-base.UnixNano()))
	}
	// A pod observed for the first time is not claimed before its observation, however long the lag.
	fresh := pod.DeepCopy()
	fresh.UID, fresh.Name, fresh.Status.PodIP, fresh.Status.Conditions = "u2", "web-1", "10.1.0.10", nil
	s.event(kindPod, "add", fresh)
	if rs, _ := x.Ranges(netip.MustParseAddr("10.1.0.10")); len(rs) != 0 {
		t.Fatalf("claimed before its end caught up with its observation: %+v", rs)
	}
	clock = clock.Add(10 * time.Second)
	s.event(kindPod, "update", fresh)
	if rs, _ := x.Ranges(netip.MustParseAddr("10.1.0.10")); len(rs) != 1 || rs[0].Start != base.Add(14*time.Second).UnixNano() ||
		rs[0].End != base.Add(19*time.Second).UnixNano() {
		t.Fatalf("fresh pod ranges %+v, want [14s, 19s)", rs)
	}
}
