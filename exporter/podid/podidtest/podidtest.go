// Package podidtest gives the tests of DaemonSet-mode naming the real pieces they need: cgroups named
// as the kubelet names them (made in the host's cgroup v2 hierarchy, removed after the test), a
// kubeconfig file for a test API server, and pods as the scheduler and kubelet would leave them.
package podidtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/flowlens/flowlens/exporter/podid"
)

// ContainerID is a container id of the length runtimes use.
const ContainerID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// SystemdPath is the cgroup of a Burstable pod's container under the kubelet's systemd driver with
// containerd, relative to the kubelet's root (the hierarchy's root on a plain node, kubelet.slice on kind).
func SystemdPath(uid string) string {
	u := strings.ReplaceAll(uid, "-", "_")
	return "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + u + ".slice/cri-containerd-" + ContainerID + ".scope"
}

// CgroupfsPath is the cgroup of a BestEffort pod's container under the cgroupfs driver.
func CgroupfsPath(uid string) string {
	return "kubepods/besteffort/pod" + uid + "/" + ContainerID
}

// Root is a directory of the host's cgroup v2 hierarchy for one test, removed with everything below it
// when the test ends; the kubelet-style paths go below it so no real kubelet's cgroups are touched.
func Root(t testing.TB) string {
	t.Helper()
	v2 := podid.CgroupRoot("/sys/fs/cgroup")
	if v2 == "" {
		t.Fatal("no cgroup v2 hierarchy under /sys/fs/cgroup")
	}
	root := filepath.Join(v2, fmt.Sprintf("fltest-%d.slice", os.Getpid()))
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatalf("make test cgroup: %v", err)
	}
	t.Cleanup(func() { removeTree(t, root) })
	return root
}

// Cgroup makes the cgroup root/rel with its parents and returns its id (the inode the kernel reports).
func Cgroup(t testing.TB, root, rel string) (string, uint64) {
	t.Helper()
	dir := filepath.Join(root, rel)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("make cgroup: %v", err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	return dir, st.Ino
}

// removeTree removes cgroups deepest first (rmdir is the only way to delete one; it fails while a
// process is inside).
func removeTree(t testing.TB, dir string) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			removeTree(t, filepath.Join(dir, e.Name()))
		}
	}
	if err := syscall.Rmdir(dir); err != nil {
		t.Errorf("remove cgroup %s: %v", dir, err)
	}
}

// Kubeconfig writes a kubeconfig file for rc (envtest's admin credentials) and returns its path.
func Kubeconfig(t testing.TB, rc *rest.Config) string {
	t.Helper()
	c := clientcmdapi.NewConfig()
	c.Clusters["test"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	c.AuthInfos["test"] = &clientcmdapi.AuthInfo{ClientCertificateData: rc.CertData, ClientKeyData: rc.KeyData, Token: rc.BearerToken}
	c.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "test"}
	c.CurrentContext = "test"
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*c, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// Pod creates p (with a container added) and sets its status as a kubelet would: Running with ip, or
// Pending without an address when ip is empty. It returns the pod as stored, with its UID.
func Pod(t testing.TB, client kubernetes.Interface, p *corev1.Pod, ip string) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	if p.Namespace == "" {
		p.Namespace = "default"
	}
	p.Spec.Containers = []corev1.Container{{Name: "app", Image: "app:1"}}
	got, err := client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", p.Name, err)
	}
	if ip == "" {
		return got
	}
	got.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}}
	if got, err = client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("pod %s status: %v", p.Name, err)
	}
	return got
}
