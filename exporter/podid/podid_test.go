package podid_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/flowlens/flowlens/exporter/hostid"
	"github.com/flowlens/flowlens/exporter/podid"
	"github.com/flowlens/flowlens/exporter/podid/podidtest"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/kubetest"
	"github.com/flowlens/flowlens/internal/nettest"
	"github.com/flowlens/flowlens/sonar/kube"
)

func TestPodUID(t *testing.T) {
	const uid = "7f9c2b1e-4d3a-4c5b-9e8f-0a1b2c3d4e5f"
	const static = "3a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d" // a static pod's UID: the manifest's hash
	cases := []struct{ path, want string }{
		{"/" + podidtest.SystemdPath(uid), uid},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7f9c2b1e_4d3a_4c5b_9e8f_0a1b2c3d4e5f.slice", uid},
		{"/kubepods.slice/kubepods-pod7f9c2b1e_4d3a_4c5b_9e8f_0a1b2c3d4e5f.slice/crio-" + podidtest.ContainerID + ".scope", uid},
		{"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod7f9c2b1e_4d3a_4c5b_9e8f_0a1b2c3d4e5f.slice/docker-" + podidtest.ContainerID + ".scope/sub", uid},
		// kind and other nested kubelets
		{"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod7f9c2b1e_4d3a_4c5b_9e8f_0a1b2c3d4e5f.slice/cri-containerd-" + podidtest.ContainerID + ".scope", uid},
		{"/" + podidtest.CgroupfsPath(uid), uid},
		{"/kubepods/pod" + uid + "/" + podidtest.ContainerID, uid},
		{"/kubepods/burstable/pod" + uid, uid},
		{"/kubepods/burstable/pod" + static + "/" + podidtest.ContainerID, static},
		{"/kubepods.slice/kubepods-pod" + static + ".slice", static},
		// not a pod's
		{"/", ""},
		{"/kubepods.slice", ""},
		{"/kubepods.slice/kubepods-burstable.slice", ""},
		{"/kubepods/burstable", ""},
		{"/system.slice/containerd.service", ""},
		{"/system.slice/podman-" + podidtest.ContainerID + ".scope", ""},
		{"/user.slice/pod" + uid, ""},                          // a "pod" directory outside kubepods
		{"/machine.slice/machine-pod" + static + ".slice", ""}, // a slice outside kubepods
		{"/kubepods/burstable/podman", ""},
		{"/kubepods/burstable/pod", ""},
		{"/kubepods/burstable/pod7f9c2b1e_4d3a_4c5b_9e8f_0a1b2c3d4e5f", ""}, // systemd's escape where it is not systemd's
		{"/kubepods.slice/kubepods-pod7f9c2b1e.slice", "7f9c2b1e"},
	}
	for _, c := range cases {
		if got := podid.PodUID(c.path); got != c.want {
			t.Errorf("PodUID(%q) = %q, want %q", c.path, got, c.want)
		}
	}
}

func hostNetns(t *testing.T) uint32 {
	var st syscall.Stat_t
	if err := syscall.Stat("/proc/self/ns/net", &st); err != nil {
		t.Fatal(err)
	}
	return uint32(st.Ino)
}

func newNamer(t *testing.T, client kubernetes.Interface, node string) (*podid.Namer, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	own := hostNetns(t)
	host := hostid.New(flow.Workload{Node: node, Cluster: "lab"}, own)
	n, err := podid.New(client, podid.Config{Node: node, Cluster: "lab", HostNetns: own}, host, reg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	return n, reg
}

func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func ptr[T any](v T) *T { return &v }

// TestNamer: pods in a real API server, kubelet-named cgroups in the host's real cgroup hierarchy.
// Every record is named exactly as the injector names the same pod's sidecar (kube.PodWorkload), or
// as on a plain host where the pod cannot be known for certain.
func TestNamer(t *testing.T) {
	nettest.RequirePrivileged(t)
	_, client := kubetest.Start(t)
	const node = "node-a"
	web := podidtest.Pod(t, client, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-5d4f8b7c9-x2x7q", Labels: map[string]string{"pod-template-hash": "5d4f8b7c9"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5d4f8b7c9", UID: "rs-uid", Controller: ptr(true)}}},
		Spec: corev1.PodSpec{NodeName: node}}, "10.250.0.2")
	api := podidtest.Pod(t, client, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "api-0", Namespace: "kube-system", Labels: map[string]string{kube.LabelAppName: "api-server", kube.LabelApp: "api"}},
		Spec:       corev1.PodSpec{NodeName: node}}, "10.250.0.3")
	podidtest.Pod(t, client, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "hostnet"},
		Spec: corev1.PodSpec{NodeName: node, HostNetwork: true}}, "10.250.0.9")
	podidtest.Pod(t, client, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0"},
		Spec: corev1.PodSpec{NodeName: "node-b"}}, "10.250.0.5")
	twinA := podidtest.Pod(t, client, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "twin-a"}, Spec: corev1.PodSpec{NodeName: node}}, "10.250.0.7")
	podidtest.Pod(t, client, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "twin-b"}, Spec: corev1.PodSpec{NodeName: node}}, "10.250.0.7")
	done := podidtest.Pod(t, client, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "done"}, Spec: corev1.PodSpec{NodeName: node}}, "")
	done.Status = corev1.PodStatus{Phase: corev1.PodSucceeded, PodIP: "10.250.0.8"}
	if _, err := client.CoreV1().Pods("default").UpdateStatus(context.Background(), done, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	root := podidtest.Root(t)
	_, webID := podidtest.Cgroup(t, root, podidtest.SystemdPath(string(web.UID)))
	_, webPodID := podidtest.Cgroup(t, root, "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"+underscore(string(web.UID))+".slice")
	_, apiID := podidtest.Cgroup(t, root, podidtest.CgroupfsPath(string(api.UID)))
	const unknownUID = "0b5e2a6c-1111-4222-8333-944455556666"
	_, unknownID := podidtest.Cgroup(t, root, podidtest.SystemdPath(unknownUID))
	_, nginxID := podidtest.Cgroup(t, root, "system.slice/nginx.service")

	n, reg := newNamer(t, client, node)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); n.Stop() })
	n.Start(ctx)
	sctx, scancel := context.WithTimeout(ctx, time.Minute)
	defer scancel()
	if !n.WaitSynced(sctx) {
		t.Fatal("pods never synced")
	}

	if api.CreationTimestamp.IsZero() {
		t.Fatal("the API server set no creationTimestamp on the api pod")
	}
	podNetns := nettest.NewNetns(t)
	podNS := podNetns.Inode
	own := hostNetns(t)
	host := func(name string) flow.Workload { return flow.Workload{Name: name, Node: node, Cluster: "lab"} }
	// hostid names a socket in a namespace `ip netns` named by the namespace.
	inNetns := host("netns/" + podNetns.Name)
	ip := netip.MustParseAddr
	cases := []struct {
		name string
		r    flow.Record
		want flow.Workload
	}{
		{"systemd driver: container cgroup", flow.Record{CgroupID: webID, Netns: podNS, LocalAddr: ip("10.250.0.2"), Comm: "nginx"}, kube.PodWorkload(web, "lab")},
		{"systemd driver: pod cgroup", flow.Record{CgroupID: webPodID, Netns: podNS, LocalAddr: ip("127.0.0.1"), Comm: "nginx"}, kube.PodWorkload(web, "lab")},
		{"cgroupfs driver", flow.Record{CgroupID: apiID, Netns: own, LocalAddr: ip("10.1.1.1"), Comm: "api"}, kube.PodWorkload(api, "lab")},
		{"pod IP in a pod netns", flow.Record{Netns: podNS, LocalAddr: ip("10.250.0.3"), Comm: "api"}, kube.PodWorkload(api, "lab")},
		{"pod IP, a connection younger than the pod", flow.Record{Netns: podNS, LocalAddr: ip("10.250.0.3"), Comm: "api",
			StartTime: api.CreationTimestamp.UnixNano() + 1e9}, kube.PodWorkload(api, "lab")},
		{"pod IP, a connection older than the pod: the address was another's", flow.Record{Netns: podNS, LocalAddr: ip("10.250.0.3"),
			Comm: "old", StartTime: api.CreationTimestamp.UnixNano() - 1e9}, inNetns},
		{"pod IP in the host netns", flow.Record{Netns: own, LocalAddr: ip("10.250.0.3"), Comm: "curl"}, host("curl")},
		{"hostNetwork pod's IP", flow.Record{Netns: podNS, LocalAddr: ip("10.250.0.9"), Comm: "curl"}, inNetns},
		{"another node's pod", flow.Record{Netns: podNS, LocalAddr: ip("10.250.0.5"), Comm: "curl"}, inNetns},
		{"finished pod's IP", flow.Record{Netns: podNS, LocalAddr: ip("10.250.0.8"), Comm: "curl"}, inNetns},
		{"two pods on one IP", flow.Record{Netns: podNS, LocalAddr: ip("10.250.0.7"), Comm: "curl"}, inNetns},
		{"pod not cached: UID only", flow.Record{CgroupID: unknownID, Netns: podNS, LocalAddr: ip("10.250.0.3"), Comm: "x"},
			flow.Workload{PodUID: unknownUID, Node: node, Cluster: "lab"}},
		{"host service", flow.Record{CgroupID: nginxID, Netns: own, LocalAddr: ip("10.1.1.1"), Comm: "nginx"}, host("nginx")},
	}
	for _, c := range cases {
		if got := n.Workload(&c.r); got != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, got, c.want)
		}
	}
	if w := kube.PodWorkload(web, "lab"); w.Name != "web" || w.Pod != "web-5d4f8b7c9-x2x7q" || w.PodUID != string(web.UID) || w.Node != node {
		t.Errorf("web's workload %+v: want the deployment's name", w)
	}
	if w := kube.PodWorkload(api, "lab"); w.Name != "api-server" || w.Namespace != "kube-system" {
		t.Errorf("api's workload %+v", w)
	}
	for _, c := range []struct {
		name, label, value string
		want               float64
	}{
		{"flowlens_exporter_local_workloads_total", "by", "pod_cgroup", 3},
		{"flowlens_exporter_local_workloads_total", "by", "pod_ip", 2},
		{"flowlens_exporter_local_workloads_total", "by", "host", 7},
		{"flowlens_exporter_local_workload_incomplete_total", "reason", "pod_not_cached", 1},
		{"flowlens_exporter_local_workload_incomplete_total", "reason", "pod_ip_ambiguous", 1},
		{"flowlens_exporter_local_workload_incomplete_total", "reason", "pods_not_synced", 0},
		{"flowlens_exporter_local_workload_incomplete_total", "reason", "pod_ip_reused", 1},
	} {
		if got := counter(t, reg, c.name, c.label, c.value); got != c.want {
			t.Errorf("%s{%s=%q} = %v, want %v", c.name, c.label, c.value, got, c.want)
		}
	}

	t.Run("changes", func(t *testing.T) {
		// A pod scheduled after the start, its cgroup made after the last walk: found by both.
		late := podidtest.Pod(t, client, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "late", Labels: map[string]string{kube.LabelApp: "late"}},
			Spec: corev1.PodSpec{NodeName: node}}, "10.250.0.6")
		_, lateID := podidtest.Cgroup(t, root, podidtest.CgroupfsPath(string(late.UID)))
		want := kube.PodWorkload(late, "lab")
		eventually(t, "the late pod by cgroup", func() bool {
			return n.Workload(&flow.Record{CgroupID: lateID, Netns: own, Comm: "x"}) == want
		})
		eventually(t, "the late pod by IP", func() bool {
			return n.Workload(&flow.Record{Netns: podNS, LocalAddr: ip("10.250.0.6"), Comm: "x"}) == want
		})

		// Deleting one of the twins leaves the address to the other.
		if err := client.CoreV1().Pods("default").Delete(context.Background(), twinA.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr[int64](0)}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "twin-b alone on its IP", func() bool {
			return n.Workload(&flow.Record{Netns: podNS, LocalAddr: ip("10.250.0.7"), Comm: "x"}).Pod == "twin-b"
		})

		// A pod being deleted (a finalizer holds it) is named by its cgroup, no longer by its address.
		closing := podidtest.Pod(t, client, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "closing", Finalizers: []string{"flowlens.io/test"}},
			Spec: corev1.PodSpec{NodeName: node}}, "10.250.0.10")
		_, closingID := podidtest.Cgroup(t, root, podidtest.SystemdPath(string(closing.UID)))
		eventually(t, "the closing pod by IP", func() bool {
			return n.Workload(&flow.Record{Netns: podNS, LocalAddr: ip("10.250.0.10"), Comm: "x"}).Pod == "closing"
		})
		if err := client.CoreV1().Pods("default").Delete(context.Background(), closing.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "the closing pod's IP forgotten", func() bool {
			return n.Workload(&flow.Record{Netns: podNS, LocalAddr: ip("10.250.0.10"), Comm: "curl"}) == inNetns
		})
		eventually(t, "the closing pod by cgroup", func() bool {
			return n.Workload(&flow.Record{CgroupID: closingID, Netns: podNS, Comm: "x"}) == kube.PodWorkload(closing, "lab")
		})

		// A deleted pod's address is forgotten at once, its cgroup's UID is not: the last records of its
		// connections arrive after the delete.
		if err := client.CoreV1().Pods("default").Delete(context.Background(), web.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr[int64](0)}); err != nil {
			t.Fatal(err)
		}
		eventually(t, "web's IP forgotten", func() bool {
			return n.Workload(&flow.Record{Netns: podNS, LocalAddr: ip("10.250.0.2"), Comm: "curl"}) == inNetns
		})
		if got := n.Workload(&flow.Record{CgroupID: webID, Netns: podNS, Comm: "nginx"}); got != kube.PodWorkload(web, "lab") {
			t.Errorf("deleted pod's cgroup: got %+v", got)
		}
	})
}

// TestNotSynced: while the API server cannot be reached, records are answered at once with what is
// known, and counted.
func TestNotSynced(t *testing.T) {
	nettest.RequirePrivileged(t)
	client, err := podid.NewClient(podidtest.Kubeconfig(t, deadServer(t)))
	if err != nil {
		t.Fatal(err)
	}
	root := podidtest.Root(t)
	const uid = "5c3f0e9a-aaaa-4bbb-8ccc-9dddeeeeffff"
	_, id := podidtest.Cgroup(t, root, podidtest.SystemdPath(uid))
	n, reg := newNamer(t, client, "node-a")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); n.Stop() })
	n.Start(ctx)

	start := time.Now()
	if got, want := n.Workload(&flow.Record{CgroupID: id, Comm: "x"}), (flow.Workload{PodUID: uid, Node: "node-a", Cluster: "lab"}); got != want {
		t.Errorf("cgroup of an unknown pod: got %+v, want %+v", got, want)
	}
	if got, want := n.Workload(&flow.Record{Netns: 1, LocalAddr: netip.MustParseAddr("10.250.0.3"), Comm: "curl"}), (flow.Workload{Name: "curl", Node: "node-a", Cluster: "lab"}); got != want {
		t.Errorf("pod netns before sync: got %+v, want %+v", got, want)
	}
	t.Logf("two answers with the API server down in %v", time.Since(start))
	if got := counter(t, reg, "flowlens_exporter_local_workload_incomplete_total", "reason", "pod_not_cached"); got != 1 {
		t.Errorf("pod_not_cached %v, want 1", got)
	}
	if got := counter(t, reg, "flowlens_exporter_local_workload_incomplete_total", "reason", "pods_not_synced"); got != 1 {
		t.Errorf("pods_not_synced %v, want 1", got)
	}
}

func underscore(uid string) string {
	b := []byte(uid)
	for i := range b {
		if b[i] == '-' {
			b[i] = '_'
		}
	}
	return string(b)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// deadServer is an API server address nothing listens on.
func deadServer(t *testing.T) *rest.Config {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	return &rest.Config{Host: "https://" + ln.Addr().String()}
}

// FuzzPodUID: whatever a cgroup path holds, PodUID answers "" or a UID-shaped string that the path
// spells (dashes or, under the systemd driver, underscores).
func FuzzPodUID(f *testing.F) {
	for _, s := range []string{"/" + podidtest.SystemdPath("7f9c2b1e-4d3a-4c5b-9e8f-0a1b2c3d4e5f"), "/" + podidtest.CgroupfsPath("7f9c2b1e-4d3a-4c5b-9e8f-0a1b2c3d4e5f"),
		"/kubepods/pod", "/kubepods.slice/kubepods-pod.slice", "/a-kubepods-podffffffff.slice", "//kubepods//pod12345678//", "-.slice", "/kubepods/pod1234_5678abcd", "/kubepods-pod1234-5678abcd.slice"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		uid := podid.PodUID(path)
		if uid == "" {
			return
		}
		if len(uid) < 8 || strings.Trim(uid, "0123456789abcdef-") != "" {
			t.Fatalf("PodUID(%q) = %q: not UID-shaped", path, uid)
		}
		if !strings.Contains(path, "pod"+uid) && !strings.Contains(path, "pod"+underscore(uid)) {
			t.Fatalf("PodUID(%q) = %q: not in the path", path, uid)
		}
	})
}
