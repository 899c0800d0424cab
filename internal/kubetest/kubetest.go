// Package kubetest starts a real kube-apiserver (with its etcd) for tests through controller-runtime's
// envtest. There is no scheduler, kubelet or controller manager: tests set what those would (a pod's
// spec.nodeName at creation, its status through UpdateStatus).
//
// The binaries come from the cache that scripts/install-envtest.sh (run by `make test`) fills: Dir().
// When they are missing the test fails under CI=true, naming the script, and is skipped elsewhere.
//
// A start costs a few seconds: start one environment per test package and share it across subtests.
package kubetest

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

const (
	// InstallScript is what builds and caches the binaries.
	InstallScript = "scripts/install-envtest.sh"
	// KubeVersion is the kube-apiserver version the script builds; it names the default cache directory.
	// Keep it equal to kube_version in the script.
	KubeVersion = "v1.37.2"
	// DirEnv overrides the directory holding kube-apiserver and etcd, for the script and the tests alike.
	DirEnv = "FLOWLENS_ENVTEST_DIR"
)

// Binaries are the files envtest needs in Dir().
var Binaries = []string{"kube-apiserver", "etcd"}

// Dir is where the binaries are cached: $FLOWLENS_ENVTEST_DIR, else /var/cache/flowlens/envtest/<version>.
func Dir() string {
	if d := os.Getenv(DirEnv); d != "" {
		return d
	}
	return filepath.Join("/var/cache/flowlens/envtest", KubeVersion)
}

// requireBinaries fails (CI=true) or skips the test when a binary is missing from Dir().
func requireBinaries(t testing.TB) string {
	t.Helper()
	dir := Dir()
	for _, b := range Binaries {
		fi, err := os.Stat(filepath.Join(dir, b)) // follows the etcd symlink
		if err == nil && fi.Mode()&0o111 != 0 {
			continue
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found in %s: run %s (make test does)", b, dir, InstallScript)
		}
		t.Skipf("%s not found in %s: run %s", b, dir, InstallScript)
	}
	return dir
}

var quietOnce sync.Once

// Start starts etcd and kube-apiserver on loopback ports and returns an admin rest.Config and a
// clientset for it. They are stopped at the test's cleanup.
func Start(t testing.TB) (*rest.Config, kubernetes.Interface) {
	t.Helper()
	// envtest logs through controller-runtime's process-wide logger and prints a stack trace when none
	// was set; its messages add nothing to a failing test's own (Start reports errors).
	quietOnce.Do(func() { ctrllog.SetLogger(logr.Discard()) })
	env := &envtest.Environment{
		BinaryAssetsDirectory: requireBinaries(t),
		// Two cores shared with other tests: the apiserver's first start (certificates, RBAC bootstrap)
		// can take well over envtest's 20 s default when the machine is busy.
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
	}
	start := time.Now()
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest (kube-apiserver and etcd from %s): %v", env.BinaryAssetsDirectory, err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})
	t.Logf("kube-apiserver %s ready in %v", cfg.Host, time.Since(start).Round(time.Millisecond))
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("clientset: %v", err)
	}
	return cfg, client
}
