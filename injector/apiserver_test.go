package injector

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"strings"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	"github.com/flowlens/flowlens/internal/kubetest"
)

// The shipped registration: the test proves the manifest, not a copy of it.
const webhookManifest = "../deployments/injector/mutatingwebhookconfiguration.yaml"

// startAPIServer starts kube-apiserver with the shipped MutatingWebhookConfiguration installed, its
// service rewritten by envtest to a local port with a certificate envtest generated. kubetest.Start has
// no webhook option, so the binary check and the start are done here the same way.
func startAPIServer(t *testing.T) (*rest.Config, kubernetes.Interface, *envtest.WebhookInstallOptions) {
	t.Helper()
	dir := kubetest.Dir()
	for _, b := range kubetest.Binaries {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s not found in %s: run %s (make test does)", b, dir, kubetest.InstallScript)
			}
			t.Skipf("%s not found in %s: run %s", b, dir, kubetest.InstallScript)
		}
	}
	ctrllog.SetLogger(logr.Discard())
	env := &envtest.Environment{
		BinaryAssetsDirectory:    dir,
		ControlPlaneStartTimeout: 2 * time.Minute,
		ControlPlaneStopTimeout:  30 * time.Second,
		WebhookInstallOptions:    envtest.WebhookInstallOptions{Paths: []string{webhookManifest}, LocalServingHost: "127.0.0.1"},
	}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, client, &env.WebhookInstallOptions
}

func TestAgainstAPIServer(t *testing.T) {
	restCfg, client, wh := startAPIServer(t)
	cfg := testConfig()
	cfg.ListenAddr = net.JoinHostPort(wh.LocalServingHost, strconv.Itoa(wh.LocalServingPort))
	cfg.CertFile, cfg.KeyFile = filepath.Join(wh.LocalServingCertDir, "tls.crt"), filepath.Join(wh.LocalServingCertDir, "tls.key")
	cfg.MetricsAddr = ""
	cfg.Sidecar.Native = true // the default; the plain sidecar's patch differs only in its path (patch_test)
	reg := prometheus.NewRegistry()
	srv, err := Start(cfg, zap.NewNop(), reg, reg)
	if err != nil {
		t.Fatalf("start injector: %v", err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			srv.Stop(context.Background())
		}
	})

	ctx := context.Background()
	for name, labels := range map[string]map[string]string{
		"shop":   {NamespaceLabel: NamespaceEnabled},
		"other":  nil,
		"strict": {NamespaceLabel: NamespaceEnabled, "pod-security.kubernetes.io/enforce": "baseline"},
	} {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
		if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	create := func(t *testing.T, ns string, annot map[string]string, containers ...corev1.Container) *corev1.Pod {
		t.Helper()
		if len(containers) == 0 {
			containers = []corev1.Container{{Name: "app", Image: "nginx"}}
		}
		p, err := client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "web-", Labels: map[string]string{"app": "web"}, Annotations: annot},
			Spec:       corev1.PodSpec{NodeName: "node-1", Containers: containers},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create pod in %s: %v", ns, err)
		}
		return p
	}
	sidecars := func(p *corev1.Pod) []corev1.Container {
		var out []corev1.Container
		for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
			if c.Name == cfg.Sidecar.Name {
				out = append(out, c)
			}
		}
		return out
	}
	untouched := func(t *testing.T, p *corev1.Pod) {
		t.Helper()
		if len(p.Spec.Containers) != 1 || p.Spec.Containers[0].Name != "app" || len(p.Spec.InitContainers) != 0 ||
			len(p.Spec.Volumes) != 0 || p.Annotations[InjectedAnnotation] != "" {
			t.Errorf("pod %s/%s changed: containers %v init containers %v volumes %v annotations %v",
				p.Namespace, p.Name, p.Spec.Containers, p.Spec.InitContainers, p.Spec.Volumes, p.Annotations)
		}
	}

	var injected *corev1.Pod
	t.Run("opted-in namespace gets exactly one sidecar", func(t *testing.T) {
		injected = create(t, "shop", nil)
		sc := sidecars(injected)
		if len(sc) != 1 || len(injected.Spec.Containers) != 1 || injected.Spec.Containers[0].Name != "app" ||
			len(injected.Spec.InitContainers) != 1 {
			t.Fatalf("containers %+v init containers %+v: want app and one native sidecar", injected.Spec.Containers, injected.Spec.InitContainers)
		}
		if rp := sc[0].RestartPolicy; rp == nil || *rp != corev1.ContainerRestartPolicyAlways {
			t.Errorf("sidecar restartPolicy %v, want Always", rp)
		}
		want, _ := Container(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}}}, cfg)
		got := sc[0]
		if got.Image != cfg.Sidecar.Image || !reflect.DeepEqual(got.Env, want.Env) {
			t.Errorf("sidecar image %s env %+v\nwant %s %+v", got.Image, got.Env, cfg.Sidecar.Image, want.Env)
		}
		if !reflect.DeepEqual(got.VolumeMounts, want.VolumeMounts) {
			t.Errorf("mounts %+v, want %+v", got.VolumeMounts, want.VolumeMounts)
		}
		if !reflect.DeepEqual(got.SecurityContext.Capabilities, want.SecurityContext.Capabilities) ||
			*got.SecurityContext.Privileged || *got.SecurityContext.AllowPrivilegeEscalation || !*got.SecurityContext.ReadOnlyRootFilesystem {
			t.Errorf("security context %+v", got.SecurityContext)
		}
		if !got.Resources.Requests.Memory().Equal(*want.Resources.Requests.Memory()) || !got.Resources.Limits.Cpu().Equal(*want.Resources.Limits.Cpu()) {
			t.Errorf("resources %+v", got.Resources)
		}
		vols := map[string]string{}
		for _, v := range injected.Spec.Volumes {
			vols[v.Name] = v.HostPath.Path
		}
		if !reflect.DeepEqual(vols, map[string]string{VolumeBTF: "/sys/kernel/btf", VolumeTracefs: "/sys/kernel/tracing"}) {
			t.Errorf("volumes %v", vols)
		}
		if injected.Annotations[InjectedAnnotation] != cfg.Sidecar.Image {
			t.Errorf("annotations %v", injected.Annotations)
		}
	})
	t.Run("other namespace untouched", func(t *testing.T) {
		untouched(t, create(t, "other", nil))
	})
	t.Run("opted-out pod untouched", func(t *testing.T) {
		untouched(t, create(t, "shop", map[string]string{PodAnnotation: "false"}))
	})
	t.Run("annotated pod in other namespace injected", func(t *testing.T) {
		if p := create(t, "other", map[string]string{PodAnnotation: "true"}); len(sidecars(p)) != 1 || len(p.Spec.Containers) != 1 {
			t.Errorf("containers %v init containers %v: want app and one sidecar", p.Spec.Containers, p.Spec.InitContainers)
		}
	})
	t.Run("opted-in namespace enforcing baseline starts pods without the sidecar", func(t *testing.T) {
		// Injected, the pod would be refused by Pod Security admission (hostPath, added capabilities).
		untouched(t, create(t, "strict", nil))
		untouched(t, create(t, "strict", map[string]string{PodAnnotation: "true"}))
	})
	t.Run("pod that brings its own sidecar is kept as is", func(t *testing.T) {
		own := corev1.Container{Name: cfg.Sidecar.Name, Image: "mine/exporter:1"}
		p := create(t, "shop", nil, corev1.Container{Name: "app", Image: "nginx"}, own)
		if sc := sidecars(p); len(sc) != 1 || sc[0].Image != "mine/exporter:1" || len(p.Spec.Volumes) != 0 || len(p.Spec.InitContainers) != 0 {
			t.Errorf("containers %v init containers %v volumes %v: want the pod's own sidecar only",
				p.Spec.Containers, p.Spec.InitContainers, p.Spec.Volumes)
		}
	})
	t.Run("second admission does not inject again", func(t *testing.T) {
		if injected == nil {
			t.Skip("first subtest failed")
		}
		// The same object admitted again, as a reinvocation or a replayed create would send it.
		r := review(t, srv, PathNamespace, admissionv1.Create, injected)
		if r.Patch != nil {
			t.Errorf("second admission patched: %s", r.Patch)
		}
		// An update goes through the API server unchanged.
		p := injected.DeepCopy()
		p.Labels["tier"] = "front"
		up, err := client.CoreV1().Pods("shop").Update(ctx, p, metav1.UpdateOptions{})
		if err != nil {
			t.Fatalf("update: %v", err)
		}
		if len(sidecars(up)) != 1 || len(up.Spec.Containers)+len(up.Spec.InitContainers) != 2 || len(up.Spec.Volumes) != 2 {
			t.Errorf("after update: containers %v init containers %v volumes %v", up.Spec.Containers, up.Spec.InitContainers, up.Spec.Volumes)
		}
	})
	t.Run("manifests are accepted by the API server", func(t *testing.T) {
		dryRunApply(t, restCfg, "../deployments/injector")
	})
	t.Run("injector down admits pods unchanged", func(t *testing.T) {
		srv.Stop(context.Background())
		stopped = true
		untouched(t, create(t, "shop", nil))
	})

	// Every admission the API server sent, and the one the test sent, counted by outcome.
	want := map[string]float64{"injected": 2, "already_injected": 2, "opted_out": 1, "not_selected": 1, "not_create": 0, "error": 0}
	for outcome, n := range want {
		if got := counter(reg, "flowlens_injector_admissions_total", outcome); got != n {
			t.Errorf("admissions{outcome=%s} = %v, want %v", outcome, got, n)
		}
	}
}

// dryRunApply server-side applies, as a dry run, every object of the YAML files in dir (not its
// subdirectories: cert-manager's kinds are not served here), so the API server validates them against
// its schemas. The flowlens namespace is created for real first: a dry run does not persist it.
func dryRunApply(t *testing.T, cfg *rest.Config, dir string) {
	t.Helper()
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "flowlens"}}}
	if _, err := dc.Resource(corev1.SchemeGroupVersion.WithResource("namespaces")).Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	n := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range strings.Split(string(raw), "\n---\n") {
			js, err := yaml.YAMLToJSON([]byte(doc))
			if err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			var u unstructured.Unstructured
			if err := u.UnmarshalJSON(js); err != nil {
				t.Fatalf("%s document %d: %v", f, i, err)
			}
			gvk := u.GroupVersionKind()
			// envtest installed the webhook configuration (with its url): a fresh name validates the
			// shipped object alone instead of its merge with envtest's.
			u.SetName(u.GetName() + "-dry-run")
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Fatalf("%s %s: %v", f, gvk, err)
			}
			_, err = dc.Resource(m.Resource).Namespace(u.GetNamespace()).Apply(context.Background(), u.GetName(), &u,
				metav1.ApplyOptions{FieldManager: "flowlens-test", Force: true, DryRun: []string{metav1.DryRunAll}})
			if err != nil {
				t.Errorf("%s: %s %s rejected: %v", filepath.Base(f), gvk.Kind, u.GetName(), err)
			}
			n++
		}
	}
	if n < 7 {
		t.Errorf("applied %d objects from %s, want the 7 shipped", n, dir)
	}
}
