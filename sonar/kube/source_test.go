package kube

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/kubetest"
	"github.com/flowlens/flowlens/sonar/index"
)

const (
	cluster = "test"
	ns      = "default"
	node    = "node-a"
)

// TestSource runs the source against a real kube-apiserver (envtest, one per package run). Without a
// kubelet the test writes pod status itself, as the kubelet would, through the status subresource.
func TestSource(t *testing.T) {
	restCfg, client := kubetest.Start(t)
	// Resync off (an hour): every range boundary below comes from an event, so it can be asserted exactly.
	x, src := startSource(t, client, Config{Cluster: cluster, Resync: time.Hour})

	t.Run("pod lifecycle and IP reuse", func(t *testing.T) {
		ip := netip.MustParseAddr("10.1.0.5")
		// First pod: running from T0 (its network-ready condition), observed, then completed at T1.
		t0 := wholeSecond(time.Now().Add(-3 * time.Second))
		p1 := runningPod(t, client, "web-1", map[string]string{LabelAppName: "web"}, ip, t0)
		w1 := flow.Workload{Name: "web", Namespace: ns, Pod: "web-1", PodUID: string(p1.UID), Node: node, Cluster: cluster}
		if got := PodWorkload(p1, cluster); got != w1 {
			t.Fatalf("PodWorkload = %+v, want %+v", got, w1)
		}
		r := waitRange(t, x, ip, func(r index.Range) bool { return r.Owner == w1 })
		if r.Start != t0.UnixNano() || r.Evidence != index.EvidencePodEvent {
			t.Fatalf("range %+v: want start %d (the network-ready condition), POD_EVENT", r, t0.UnixNano())
		}
		expectOwner(t, x, ip, t0.UnixNano(), w1, index.EvidencePodEvent)
		expectOwner(t, x, ip, r.End-1, w1, index.EvidencePodEvent)

		// Complete it at T1, a whole second after everything claimed so far (finishedAt has second
		// precision and must not lie before the observed end for the end to be exact).
		t1 := waitPast(wholeSecond(time.Unix(0, r.End)).Add(time.Second))
		p1.Status.Phase = corev1.PodSucceeded
		p1.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Image: "app", ImageID: "app",
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0,
				StartedAt: metav1.NewTime(t0), FinishedAt: metav1.NewTime(t1)}}}}
		p1 = updateStatus(t, client, p1)
		r = waitRange(t, x, ip, func(r index.Range) bool { return r.Owner == w1 && r.End == t1.UnixNano() })
		if r.Start != t0.UnixNano() {
			t.Fatalf("completed range %+v: want [%d, %d)", r, t0.UnixNano(), t1.UnixNano())
		}
		expectOwner(t, x, ip, t1.UnixNano()-1, w1, index.EvidencePodEvent)
		expectUnknown(t, x, ip, t1.UnixNano())
		// A status rewrite after the completion (the kubelet reporting again) claims nothing more.
		updates := testutil.ToFloat64(src.m.events.WithLabelValues("pod", "update"))
		p1.Status.Message = "again"
		updateStatus(t, client, p1)
		waitCounter(t, src.m.events.WithLabelValues("pod", "update"), func(v float64) bool { return v > updates })
		expectRanges(t, x, ip, []index.Range{{Start: t0.UnixNano(), End: t1.UnixNano(), Owner: w1}})

		// Second pod reusing the IP from T2 = T1 + 2s: its own range, none overlapping the first.
		t2 := waitPast(t1.Add(2 * time.Second))
		p2 := runningPod(t, client, "web-2", map[string]string{LabelAppName: "web"}, ip, t2)
		w2 := PodWorkload(p2, cluster)
		r2 := waitRange(t, x, ip, func(r index.Range) bool { return r.Owner == w2 })
		if r2.Start != t2.UnixNano() {
			t.Fatalf("second range %+v: want start %d", r2, t2.UnixNano())
		}
		expectRanges(t, x, ip, []index.Range{
			{Start: t0.UnixNano(), End: t1.UnixNano(), Owner: w1},
			{Start: t2.UnixNano(), End: r2.End, Owner: w2},
		})
		expectOwner(t, x, ip, t0.UnixNano()+int64(500*time.Millisecond), w1, index.EvidencePodEvent)
		expectUnknown(t, x, ip, t1.Add(time.Second).UnixNano()) // between the two
		expectOwner(t, x, ip, t2.UnixNano(), w2, index.EvidencePodEvent)

		// Delete web-2 gracefully: from the request on the pod is terminating and may drop its IP at any
		// moment, so a later "still running" status extends nothing.
		waitPast(time.Unix(0, r2.End).Add(time.Second))
		if err := client.CoreV1().Pods(ns).Delete(context.Background(), "web-2", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(30))}); err != nil {
			t.Fatalf("delete web-2: %v", err)
		}
		terminating := waitPod(t, client, "web-2", func(p *corev1.Pod) bool { return p.DeletionTimestamp != nil })
		req := deletionRequest(terminating)
		endAtDelete := waitRange(t, x, ip, func(r index.Range) bool { return r.Owner == w2 && r.End >= req.UnixNano() }).End
		if endAtDelete != max(r2.End, req.UnixNano()) {
			t.Fatalf("range of terminating web-2 ends at %d: want the deletion request %d or the earlier observed end %d",
				endAtDelete, req.UnixNano(), r2.End)
		}
		updates = testutil.ToFloat64(src.m.events.WithLabelValues("pod", "update"))
		terminating.Status.Message = "still running"
		updateStatus(t, client, terminating)
		waitCounter(t, src.m.events.WithLabelValues("pod", "update"), func(v float64) bool { return v > updates })
		// Force delete: the object goes; the range still ends at the first request.
		deletes := testutil.ToFloat64(src.m.events.WithLabelValues("pod", "delete"))
		if err := client.CoreV1().Pods(ns).Delete(context.Background(), "web-2", metav1.DeleteOptions{GracePeriodSeconds: ptr(int64(0))}); err != nil {
			t.Fatalf("force delete web-2: %v", err)
		}
		waitCounter(t, src.m.events.WithLabelValues("pod", "delete"), func(v float64) bool { return v > deletes })
		expectRanges(t, x, ip, []index.Range{
			{Start: t0.UnixNano(), End: t1.UnixNano(), Owner: w1},
			{Start: t2.UnixNano(), End: endAtDelete, Owner: w2},
		})

		// Recreate web-2 (same name, new UID) with the same IP: a third owner, its own range.
		t3 := waitPast(wholeSecond(time.Unix(0, endAtDelete)).Add(2 * time.Second))
		p3 := runningPod(t, client, "web-2", map[string]string{LabelAppName: "web"}, ip, t3)
		w3 := PodWorkload(p3, cluster)
		if w3.PodUID == w2.PodUID || w3.Pod != w2.Pod {
			t.Fatalf("recreated pod %+v vs %+v: want the same name, a new UID", w3, w2)
		}
		r3 := waitRange(t, x, ip, func(r index.Range) bool { return r.Owner == w3 })
		expectRanges(t, x, ip, []index.Range{
			{Start: t0.UnixNano(), End: t1.UnixNano(), Owner: w1},
			{Start: t2.UnixNano(), End: endAtDelete, Owner: w2},
			{Start: t3.UnixNano(), End: r3.End, Owner: w3},
		})
		expectOwner(t, x, ip, endAtDelete-1, w2, index.EvidencePodEvent)
		expectUnknown(t, x, ip, endAtDelete)
		expectOwner(t, x, ip, t3.UnixNano(), w3, index.EvidencePodEvent)
		if st := x.Stats(); st.Conflicts != 0 {
			t.Fatalf("conflicts %d, want 0", st.Conflicts)
		}
	})

	t.Run("pod without a network-ready condition starts at its observation", func(t *testing.T) {
		ip := netip.MustParseAddr("10.1.0.6")
		before := time.Now()
		p := runningPod(t, client, "api-5f4d8c7b9-x2k4q", nil, ip, time.Time{}, func(p *corev1.Pod) {
			p.Labels = map[string]string{labelTemplateHash: "5f4d8c7b9"}
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet",
				Name: "api-5f4d8c7b9", UID: "00000000-0000-0000-0000-000000000001", Controller: ptr(true)}}
		})
		w := PodWorkload(p, cluster)
		if w.Name != "api" {
			t.Fatalf("workload name %q, want api (the deployment)", w.Name)
		}
		r := waitRange(t, x, ip, func(r index.Range) bool { return r.Owner == w })
		if r.Start < before.UnixNano() || r.Start > time.Now().UnixNano() {
			t.Fatalf("range %+v starts outside the observation window [%d, now]", r, before.UnixNano())
		}
	})

	t.Run("service cluster IP", func(t *testing.T) {
		svc, err := client.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "checkout"},
			Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create service: %v", err)
		}
		ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil || !netip.MustParsePrefix("10.0.0.0/24").Contains(ip) {
			t.Fatalf("allocated cluster IP %q: want one from envtest's 10.0.0.0/24 (%v)", svc.Spec.ClusterIP, err)
		}
		w := flow.Workload{Name: "checkout", Namespace: ns, Cluster: cluster}
		r := waitRange(t, x, ip, func(r index.Range) bool { return r.Owner == w })
		expectOwner(t, x, ip, r.Start, w, index.EvidenceService)

		headless := testutil.ToFloat64(src.m.skipped.WithLabelValues("service", "headless"))
		if _, err := client.CoreV1().Services(ns).Create(context.Background(), &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "db"},
			Spec:       corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Port: 5432}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create headless service: %v", err)
		}
		waitCounter(t, src.m.skipped.WithLabelValues("service", "headless"), func(v float64) bool { return v > headless })
	})

	nodeIP := netip.MustParseAddr("192.168.50.10")
	t.Run("node addresses", func(t *testing.T) {
		n, err := client.CoreV1().Nodes().Create(context.Background(), &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create node: %v", err)
		}
		n.Status.Addresses = []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: nodeIP.String()},
			{Type: corev1.NodeHostName, Address: node},
		}
		if _, err := client.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{}); err != nil {
			t.Fatalf("node status: %v", err)
		}
		w := flow.Workload{Name: node, Node: node, Cluster: cluster}
		r := waitRange(t, x, nodeIP, func(r index.Range) bool { return r.Owner == w })
		expectOwner(t, x, nodeIP, r.Start, w, index.EvidenceNode)
	})

	t.Run("hostNetwork pod claims nothing", func(t *testing.T) {
		skipped := testutil.ToFloat64(src.m.skipped.WithLabelValues("pod", "host_network"))
		// It reports its node's IP as its own, as hostNetwork pods do.
		runningPod(t, client, "agent", map[string]string{LabelApp: "agent"}, nodeIP, wholeSecond(time.Now()), func(p *corev1.Pod) {
			p.Spec.HostNetwork = true
		})
		// Created, then its status: both observations skipped.
		waitCounter(t, src.m.skipped.WithLabelValues("pod", "host_network"), func(v float64) bool { return v >= skipped+2 })
		rs, cs := x.Ranges(nodeIP)
		if len(rs) != 1 || len(cs) != 0 || rs[0].Owner != (flow.Workload{Name: node, Node: node, Cluster: cluster}) || rs[0].Evidence != index.EvidenceNode {
			t.Fatalf("node IP after a hostNetwork pod reported it: %+v, conflicts %+v; want only the node's range", rs, cs)
		}
	})

	t.Run("resync extends running ranges, lagged, and never starts one", func(t *testing.T) {
		const lag = 200 * time.Millisecond
		xr, _ := startSource(t, client, Config{Cluster: cluster, Resync: 50 * time.Millisecond, ResyncLag: lag})
		ip := netip.MustParseAddr("10.1.0.9")
		p := runningPod(t, client, "worker", map[string]string{LabelApp: "worker"}, ip, time.Time{})
		w := PodWorkload(p, cluster)
		first := waitRange(t, xr, ip, func(r index.Range) bool { return r.Owner == w })
		// No more events for this pod: only the resync can move the end on.
		later := waitRange(t, xr, ip, func(r index.Range) bool { return r.Owner == w && r.End > first.End+int64(time.Second) })
		if now := time.Now().Add(-lag).UnixNano(); later.Start != first.Start || later.End > now {
			t.Fatalf("resynced range %+v: want start %d and an end no later than now-lag %d", later, first.Start, now)
		}
		// The pods completed before this source started (web-1) were never seen running by it: nothing.
		if rs, _ := xr.Ranges(netip.MustParseAddr("10.1.0.5")); len(rs) != 1 || rs[0].Owner.Pod != "web-2" {
			t.Fatalf("10.1.0.5 in a source started later: %+v, want only the running web-2", rs)
		}
	})

	t.Run("NewClient from a kubeconfig", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "kubeconfig")
		kc := clientcmdapi.NewConfig()
		kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: restCfg.Host, CertificateAuthorityData: restCfg.CAData}
		kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: restCfg.CertData, ClientKeyData: restCfg.KeyData, Token: restCfg.BearerToken}
		kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
		kc.CurrentContext = "envtest"
		if err := clientcmd.WriteToFile(*kc, path); err != nil {
			t.Fatal(err)
		}
		c, err := NewClient(path)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.CoreV1().Nodes().Get(context.Background(), node, metav1.GetOptions{}); err != nil {
			t.Fatalf("get node through the kubeconfig client: %v", err)
		}
		if _, err := NewClient(filepath.Join(t.TempDir(), "missing")); err == nil {
			t.Fatal("NewClient with a missing kubeconfig: no error")
		}
	})

	t.Run("a watch error holds resyncs back for the lag", func(t *testing.T) {
		const lag = 300 * time.Millisecond
		// The ticker never fires: the test calls resync itself, so nothing here depends on timing.
		xr, sr := startSource(t, client, Config{Cluster: cluster, Resync: time.Hour, ResyncLag: lag})
		ip := netip.MustParseAddr("10.1.0.10")
		p := runningPod(t, client, "batch", map[string]string{LabelApp: "batch"}, ip, time.Time{})
		w := PodWorkload(p, cluster)
		end := func() int64 {
			rs, _ := xr.Ranges(ip)
			if len(rs) != 1 || rs[0].Owner != w {
				t.Fatalf("%s ranges %+v, want one of %+v", ip, rs, w)
			}
			return rs[0].End
		}
		e0 := waitRange(t, xr, ip, func(r index.Range) bool { return r.Owner == w }).End

		waitPast(time.Unix(0, e0).Add(lag + 100*time.Millisecond))
		sr.resync()
		e1 := end()
		if e1 <= e0 || e1 > time.Now().Add(-lag).UnixNano() {
			t.Fatalf("resync moved the end from %d to %d: want later, and no later than now-lag", e0, e1)
		}

		held := testutil.ToFloat64(sr.m.skipped.WithLabelValues("pod", "resync_held_back"))
		errAt := time.Now()
		sr.watchError(kindPod, errors.New("injected watch failure"))
		waitPast(errAt.Add(lag / 2))
		sr.resync()
		if e := end(); e != e1 {
			t.Fatalf("a resync within the lag after a watch error moved the end from %d to %d", e1, e)
		}
		if got := testutil.ToFloat64(sr.m.skipped.WithLabelValues("pod", "resync_held_back")); got != held+1 {
			t.Fatalf("resync_held_back %v, want %v", got, held+1)
		}

		waitPast(time.Now().Add(lag)) // the error is now older than the lag: the cache is trusted again
		sr.resync()
		if e := end(); e <= e1 {
			t.Fatalf("a resync after the lag did not move the end on from %d", e1)
		}
	})
}

// startSource runs a source with its own index and registry until the test ends.
func startSource(t *testing.T, client kubernetes.Interface, cfg Config) (*index.Index, *Source) {
	t.Helper()
	x := index.New(index.Config{})
	src, err := New(client, x, cfg, zaptest.NewLogger(t), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	poll(t, "informers synced", src.Synced)
	return x, src
}

// runningPod creates a pod on node-a and sets its status to Running with ip, as a kubelet would; with
// ready set, the PodReadyToStartContainers condition turned True then.
func runningPod(t *testing.T, client kubernetes.Interface, name string, labels map[string]string, ip netip.Addr, ready time.Time, edit ...func(*corev1.Pod)) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "app"}}},
	}
	for _, e := range edit {
		e(p)
	}
	p, err := client.CoreV1().Pods(ns).Create(context.Background(), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	p.Status.Phase = corev1.PodRunning
	p.Status.PodIP = ip.String()
	p.Status.PodIPs = []corev1.PodIP{{IP: ip.String()}}
	if !ready.IsZero() {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReadyToStartContainers,
			Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(ready)}}
	}
	return updateStatus(t, client, p)
}

func updateStatus(t *testing.T, client kubernetes.Interface, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	p, err := client.CoreV1().Pods(ns).UpdateStatus(context.Background(), p, metav1.UpdateOptions{})
	if err != nil {
		t.Fatalf("update status of pod %s: %v", p.Name, err)
	}
	return p
}

func waitPod(t *testing.T, client kubernetes.Interface, name string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var p *corev1.Pod
	poll(t, "pod "+name, func() bool {
		var err error
		p, err = client.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		return err == nil && ok(p)
	})
	return p
}

// waitRange polls until ip has a range satisfying ok and returns it.
func waitRange(t *testing.T, x *index.Index, ip netip.Addr, ok func(index.Range) bool) index.Range {
	t.Helper()
	var found index.Range
	poll(t, "a range for "+ip.String(), func() bool {
		rs, _ := x.Ranges(ip)
		for _, r := range rs {
			if ok(r) {
				found = r
				return true
			}
		}
		return false
	})
	return found
}

func waitCounter(t *testing.T, c prometheus.Counter, ok func(float64) bool) {
	t.Helper()
	poll(t, "counter", func() bool { return ok(testutil.ToFloat64(c)) })
}

// poll waits for cond, failing the test after a generous deadline (the machine may be busy).
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// expectRanges checks ip's ranges (start, end, owner; all POD_EVENT) and that none conflicted.
func expectRanges(t *testing.T, x *index.Index, ip netip.Addr, want []index.Range) {
	t.Helper()
	rs, cs := x.Ranges(ip)
	if len(cs) != 0 {
		t.Fatalf("%s conflicts: %+v", ip, cs)
	}
	if len(rs) != len(want) {
		t.Fatalf("%s ranges:\n%+v\nwant\n%+v", ip, rs, want)
	}
	for i, r := range rs {
		w := want[i]
		if r.Start != w.Start || r.End != w.End || r.Owner != w.Owner || r.Evidence != index.EvidencePodEvent {
			t.Fatalf("%s range %d: %+v, want [%d, %d) %+v POD_EVENT", ip, i, r, w.Start, w.End, w.Owner)
		}
	}
}

func expectOwner(t *testing.T, x *index.Index, ip netip.Addr, at int64, w flow.Workload, ev index.Evidence) {
	t.Helper()
	a := x.Lookup(ip, at)
	if a.Status != index.Owned || a.Range.Owner != w || a.Range.Evidence != ev {
		t.Fatalf("lookup %s at %d: %v %+v, want OWNER %+v %v", ip, at, a.Status, a.Range, w, ev)
	}
}

func expectUnknown(t *testing.T, x *index.Index, ip netip.Addr, at int64) {
	t.Helper()
	if a := x.Lookup(ip, at); a.Status != index.Unknown {
		t.Fatalf("lookup %s at %d: %v %+v, want UNKNOWN", ip, at, a.Status, a.Range)
	}
}

func wholeSecond(t time.Time) time.Time { return t.Truncate(time.Second) }

// waitPast returns t once the clock has passed it, so a timestamp of t can be written as the past.
func waitPast(t time.Time) time.Time {
	for time.Now().Before(t) {
		time.Sleep(time.Until(t) + time.Millisecond)
	}
	return t
}

func ptr[T any](v T) *T { return &v }
