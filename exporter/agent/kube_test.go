package agent

import (
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flowlens/flowlens/exporter/config"
	"github.com/flowlens/flowlens/exporter/podid/podidtest"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/kubetest"
	"github.com/flowlens/flowlens/internal/nettest"
	"github.com/flowlens/flowlens/sonar/kube"
)

// TestDaemonSetNamesPods runs the exporter as the DaemonSet does (scope host, kubernetes) against a real
// kube-apiserver, with the real kernel programs: processes moved into kubelet-named cgroups (systemd
// and cgroupfs drivers) and a socket in a pod's network namespace, holding the pod's IP, make real
// connections, and each record's local workload is exactly the pod's, as its sidecar would name it.
func TestDaemonSetNamesPods(t *testing.T) {
	nettest.RequirePrivileged(t)
	rc, client := kubetest.Start(t)
	const node, podIP = "node-e2e", "10.251.0.2"
	ctrl := true
	web := podidtest.Pod(t, client, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-6c8f9d7b5-k2j4m", Namespace: "default", Labels: map[string]string{"pod-template-hash": "6c8f9d7b5"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-6c8f9d7b5", UID: "rs", Controller: &ctrl}}},
		Spec: corev1.PodSpec{NodeName: node}}, "10.251.1.2")
	api := podidtest.Pod(t, client, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "api-0", Namespace: "default", Labels: map[string]string{kube.LabelAppName: "api"}},
		Spec:       corev1.PodSpec{NodeName: node}}, "10.251.1.3")
	netPod := podidtest.Pod(t, client, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "cache-0", Namespace: "default", Labels: map[string]string{kube.LabelApp: "cache"}},
		Spec:       corev1.PodSpec{NodeName: node}}, podIP)
	root := podidtest.Root(t)
	webCg, _ := podidtest.Cgroup(t, root, podidtest.SystemdPath(string(web.UID)))
	apiCg, _ := podidtest.Cgroup(t, root, podidtest.CgroupfsPath(string(api.UID)))

	// The namespaces exist before the exporter starts: the host's naming (hostid) re-reads the names of
	// namespaces at most once a second, so one made just after a read is named by process until the next.
	podNS, peerNS := nettest.NewNetns(t), nettest.NewNetns(t)
	nettest.Veth(t, podNS, peerNS, podIP+"/24", "10.251.0.1/24")

	cfg, err := config.Load([]string{"--scope", "host", "--kubernetes", "--workload-node", node, "--workload-cluster", "lab",
		"--kubeconfig", podidtest.Kubeconfig(t, rc), "--flush-interval", "1s", "--metrics-addr", "", "--close-grace", "50ms"})
	if err != nil {
		t.Fatal(err)
	}
	sink := &memSink{}
	start(t, cfg, sink)

	// Processes in the pods' cgroups: bash moves itself in, then connects (the socket takes the cgroup
	// of the process that makes it) and sends.
	listen := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		nettest.Serve(ln, func(c net.Conn) { io.Copy(io.Discard, c); c.Close() })
		return ln.Addr().(*net.TCPAddr).Port
	}
	connectFrom := func(cgroup string, port int) {
		script := fmt.Sprintf("echo $$ > %s && exec 3<>/dev/tcp/127.0.0.1/%d && printf hello >&3 && exec 3>&-",
			filepath.Join(cgroup, "cgroup.procs"), port)
		if out, err := exec.Command("bash", "-c", script).CombinedOutput(); err != nil {
			t.Fatalf("client in %s: %v\n%s", cgroup, err, out)
		}
	}
	webPort, apiPort := listen(), listen()
	connectFrom(webCg, webPort)
	connectFrom(apiCg, apiPort)

	// A socket in the pod's network namespace with the pod's IP (the test process's own cgroup is no
	// pod's), to the peer namespace.
	var ln net.Listener
	peerNS.Do(t, func() { ln, err = net.Listen("tcp", "10.251.0.1:0") })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	nettest.Serve(ln, func(c net.Conn) { io.Copy(io.Discard, c); c.Close() })
	netPort := ln.Addr().(*net.TCPAddr).Port
	var c net.Conn
	podNS.Do(t, func() { c, err = net.Dial("tcp", ln.Addr().String()) })
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("hello"))
	c.Close()

	final := func(port int, role flow.Role) (flow.Record, bool) {
		for _, r := range forPort(sink.snapshot(), port, role) {
			if r.Close != flow.CloseActive {
				return r, true
			}
		}
		return flow.Record{}, false
	}
	for _, want := range []struct {
		name string
		port int
		role flow.Role
		w    flow.Workload
	}{
		{"systemd-driver cgroup", webPort, flow.RoleClient, kube.PodWorkload(web, "lab")},
		{"cgroupfs-driver cgroup", apiPort, flow.RoleClient, kube.PodWorkload(api, "lab")},
		{"pod IP in the pod's netns", netPort, flow.RoleClient, kube.PodWorkload(netPod, "lab")},
		{"the peer: a named netns, no pod", netPort, flow.RoleServer, flow.Workload{Name: "netns/" + peerNS.Name, Node: node, Cluster: "lab"}},
	} {
		waitFor(t, want.name+" record", func() bool { _, ok := final(want.port, want.role); return ok })
		r, _ := final(want.port, want.role)
		t.Logf("%s: %s %v:%d -> %v:%d comm %s cgroup %d: %+v", want.name, r.Role, r.LocalAddr, r.LocalPort, r.RemoteAddr, r.RemotePort, r.Comm, r.CgroupID, r.LocalWorkload)
		if r.LocalWorkload != want.w {
			t.Errorf("%s: local workload %+v, want %+v (record %+v)", want.name, r.LocalWorkload, want.w, r)
		}
		if want.role == flow.RoleClient && want.port != netPort && (r.Comm != "bash" || r.BytesSent != 5) {
			t.Errorf("%s: comm %q bytes %d, want bash and 5", want.name, r.Comm, r.BytesSent)
		}
	}
	if w := kube.PodWorkload(web, "lab"); w.Name != "web" || w.Namespace != "default" || w.Node != node || w.PodUID != string(web.UID) {
		t.Errorf("web's workload %+v: want the deployment's name", w)
	}
	// The host side of the cgroup tests (the test process, in no pod's cgroup and the host's netns)
	// is never named as a pod.
	for _, port := range []int{webPort, apiPort} {
		for _, r := range forPort(sink.snapshot(), port, flow.RoleServer) {
			if r.LocalWorkload.PodUID != "" || r.LocalWorkload.Pod != "" {
				t.Errorf("server side on the host named as a pod: %+v", r.LocalWorkload)
			}
		}
	}
}
