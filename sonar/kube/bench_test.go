package kube

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/flowlens/flowlens/internal/kubetest"
	"github.com/flowlens/flowlens/sonar/index"
)

// BenchmarkPodUpdate measures the handler path of one pod update (workload derivation, state, one claim
// into a real index) over 10,000 running pods. The clientset is never used: events are fed directly.
func BenchmarkPodUpdate(b *testing.B) {
	x := index.New(index.Config{})
	s, err := New(fake.NewClientset(), x, Config{Cluster: "bench"}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	const n = 10000
	pods := make([]*corev1.Pod, n)
	for i := range pods {
		ip := netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
		pods[i] = &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web-7d9f8b6c5d-%05d", i), Namespace: "shop",
				UID: types.UID(fmt.Sprintf("uid-%d", i)), Labels: map[string]string{labelTemplateHash: "7d9f8b6c5d"},
				OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-7d9f8b6c5d", Controller: ptr(true)}}},
			Spec:   corev1.PodSpec{NodeName: "node-a"},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip.String(), PodIPs: []corev1.PodIP{{IP: ip.String()}}},
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		s.event(kindPod, "update", pods[i%n])
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	if st := x.Stats(); st.Conflicts != 0 || st.IPs != min(b.N, n) {
		b.Fatalf("index %+v after %d events", st, b.N)
	}
}

// BenchmarkStatusToClaim measures, against a real kube-apiserver, the time from a pod status write
// (UpdateStatus returning) to its claim in the index: the watch's delivery plus the handler.
func BenchmarkStatusToClaim(b *testing.B) {
	_, client := kubetest.Start(b)
	x := index.New(index.Config{})
	s, err := New(client, x, Config{Cluster: "bench", Resync: time.Hour}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for !s.Synced() {
		time.Sleep(10 * time.Millisecond)
	}
	p, err := client.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Spec:       corev1.PodSpec{NodeName: "node-a", Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	b.ResetTimer()
	for i := range b.N {
		// A new IP each time, so each write makes a new range to wait for.
		ip := netip.AddrFrom4([4]byte{10, 3, byte(i >> 8), byte(i)})
		p.Status.Phase = corev1.PodRunning
		p.Status.PodIP, p.Status.PodIPs = ip.String(), []corev1.PodIP{{IP: ip.String()}}
		if p, err = client.CoreV1().Pods("default").UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			b.Fatal(err)
		}
		written := time.Now()
		deadline := written.Add(30 * time.Second)
		for {
			if rs, _ := x.Ranges(ip); len(rs) == 1 {
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("no claim for %s after 30s", ip)
			}
			time.Sleep(100 * time.Microsecond)
		}
		total += time.Since(written)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "us-to-claim")
}
