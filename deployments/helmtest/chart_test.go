package helmtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	collectorconfig "github.com/flowlens/flowlens/collector/config"
	exporterconfig "github.com/flowlens/flowlens/exporter/config"
	"github.com/flowlens/flowlens/internal/kubetest"
	sonarconfig "github.com/flowlens/flowlens/sonar/config"
)

// crdKinds are served only where their operator installed its CRDs; values that render them are off
// by default.
var crdKinds = []string{"ServiceMonitor", "PodMonitor", "Certificate", "Issuer"}

func TestLint(t *testing.T) {
	for _, set := range [][]string{nil, {"daemonset.enabled=true", "nats.enabled=true"},
		{"serviceMonitor.enabled=true", "certManager.enabled=true", "collector.insecure=true"}} {
		args := append([]string{"lint", "--strict", chartDir}, setArgs(set)...)
		out := helm(t, args...)
		if !strings.Contains(string(out), "0 chart(s) failed") {
			t.Errorf("helm %v: %s", args, out)
		}
	}
}

func TestDefaultRender(t *testing.T) {
	objs := render(t)
	want := []string{
		"ServiceAccount/flow-collector", "ServiceAccount/flowlens-injector", "ServiceAccount/flowlens-sonar",
		"ConfigMap/flowlens-injector",
		"ClusterRole/flowlens-sonar", "ClusterRoleBinding/flowlens-sonar",
		"Service/flow-collector", "Service/flowlens-injector", "Service/flowlens-sonar",
		"Deployment/flow-collector", "Deployment/flowlens-injector", "Deployment/flowlens-sonar",
		"PodDisruptionBudget/flowlens-injector",
		"MutatingWebhookConfiguration/flowlens-injector",
	}
	got := names(objs)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("rendered %v\nwant %v", got, want)
	}

	svc := find(t, objs, "Service", "flow-collector")
	ports, _, _ := unstructured.NestedSlice(svc.Object, "spec", "ports")
	gotPorts := map[string]int64{}
	for _, p := range ports {
		p := p.(map[string]any)
		gotPorts[p["name"].(string)] = p["port"].(int64)
	}
	if !reflect.DeepEqual(gotPorts, map[string]int64{"grpc": 9990, "api": 9480, "metrics": 9478}) {
		t.Errorf("collector service ports %v", gotPorts)
	}

	whc := find(t, objs, "MutatingWebhookConfiguration", "flowlens-injector")
	hooks, _, _ := unstructured.NestedSlice(whc.Object, "webhooks")
	if len(hooks) != 2 {
		t.Fatalf("%d webhooks, want 2", len(hooks))
	}
	for _, h := range hooks {
		h := h.(map[string]any)
		if h["failurePolicy"] != "Ignore" {
			t.Errorf("webhook %s failurePolicy %v, want Ignore", h["name"], h["failurePolicy"])
		}
	}

	role := find(t, objs, "ClusterRole", "flowlens-sonar")
	rules, _, _ := unstructured.NestedSlice(role.Object, "rules")
	wantRules := []any{map[string]any{"apiGroups": []any{""}, "resources": []any{"pods", "services", "nodes"},
		"verbs": []any{"get", "list", "watch"}}}
	if !reflect.DeepEqual(rules, wantRules) {
		t.Errorf("sonar ClusterRole rules %v, want %v", rules, wantRules)
	}

	// The collector's environment, read back by the collector's own config loader.
	ce := env(t, find(t, objs, "Deployment", "flow-collector"))
	c := loadWith(t, ce, collectorconfig.Load)
	if c.GRPCAddr != ":9990" || c.APIAddr != ":9480" || c.MetricsAddr != ":9478" || c.DataDir != "/data" ||
		c.Attribution.SonarAddr != "flowlens-sonar.flowlens.svc:9491" || c.Retention != 168*time.Hour ||
		c.CertFile != "/etc/flowlens/tls/tls.crt" || c.Insecure || c.NATS.URL != "" {
		t.Errorf("collector config from the chart's env %v:\n%+v", ce, c)
	}
	se := env(t, find(t, objs, "Deployment", "flowlens-sonar"))
	s := loadWith(t, se, sonarconfig.Load)
	if s.GRPCAddr != ":9491" || s.HTTPAddr != ":9492" || !s.InCluster || s.DataDir != "/data" {
		t.Errorf("sonar config from the chart's env %v:\n%+v", se, s)
	}
}

// Several collector replicas answer queries completely only in fleet mode (each stores its peers' flows
// from the flows stream): the chart renders the HPA and the PDB there and refuses them without it.
func TestCollectorScalesOnlyInFleetMode(t *testing.T) {
	d := find(t, render(t), "Deployment", "flow-collector")
	if n, _, _ := unstructured.NestedInt64(d.Object, "spec", "replicas"); n != 1 {
		t.Errorf("default collector replicas %d, want 1", n)
	}
	for _, set := range [][]string{{"collector.hpa.enabled=true"}, {"collector.replicas=2"}} {
		args := templateArgs(set...)
		out, err := exec.Command(helmBin(t), args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "needs fleet mode (nats.enabled=true or collector.config.nats.url)") {
			t.Errorf("helm template --set %v: err %v, want the fleet-mode refusal:\n%s", set, err, out)
		}
	}
	for _, fleet := range []string{"nats.enabled=true", "collector.config.nats.url=nats://nats.example:4222"} {
		objs := render(t, fleet, "collector.hpa.enabled=true", "collector.pdb.enabled=true")
		hpa := find(t, objs, "HorizontalPodAutoscaler", "flow-collector")
		if lo, _, _ := unstructured.NestedInt64(hpa.Object, "spec", "minReplicas"); lo != 2 {
			t.Errorf("%s: HPA minReplicas %d, want 2", fleet, lo)
		}
		find(t, objs, "PodDisruptionBudget", "flow-collector")
		c := loadWith(t, env(t, find(t, objs, "Deployment", "flow-collector")), collectorconfig.Load)
		if c.NATS.URL == "" || !c.NATS.StoreFleetFlows {
			t.Errorf("%s: collector nats %+v, want a URL and store_fleet_flows", fleet, c.NATS)
		}
	}
}

func TestDaemonSetAndNATSRender(t *testing.T) {
	objs := render(t, "daemonset.enabled=true", "nats.enabled=true", "cluster=prod", "daemonset.config.flush_interval=30s")
	ds := find(t, objs, "DaemonSet", "flow-exporter")
	spec, _, _ := unstructured.NestedMap(ds.Object, "spec", "template", "spec")
	if spec["hostNetwork"] != true || spec["hostPID"] != nil {
		t.Errorf("DaemonSet hostNetwork %v hostPID %v, want true and unset", spec["hostNetwork"], spec["hostPID"])
	}
	ctr := container(t, ds)
	caps, _, _ := unstructured.NestedStringSlice(ctr, "securityContext", "capabilities", "add")
	drop, _, _ := unstructured.NestedStringSlice(ctr, "securityContext", "capabilities", "drop")
	priv, _, _ := unstructured.NestedBool(ctr, "securityContext", "privileged")
	if !slices.Equal(caps, []string{"BPF", "PERFMON"}) || !slices.Equal(drop, []string{"ALL"}) || priv {
		t.Errorf("exporter capabilities add %v drop %v privileged %v", caps, drop, priv)
	}
	mounts, _, _ := unstructured.NestedSlice(ctr, "volumeMounts")
	ro := map[string]bool{}
	for _, m := range mounts {
		m := m.(map[string]any)
		ro[m["mountPath"].(string)] = m["readOnly"] == true
	}
	for _, p := range []string{"/sys/kernel/btf", "/sys/kernel/tracing", "/sys/fs/cgroup", "/run/netns"} {
		if !ro[p] {
			t.Errorf("%s not mounted read-only (mounts %v)", p, ro)
		}
	}
	ee := env(t, ds)
	// The exporter's own loader: the env must make a valid host-scope configuration. The node name
	// comes from the downward API at run time; here it is set as the kubelet would.
	ee["FLOWLENS_WORKLOAD_NODE"] = "node-a"
	ee["FLOWLENS_COLLECTOR_CA_FILE"] = filepath.Join(t.TempDir(), "ca.crt")
	e := loadWith(t, ee, exporterconfig.Load)
	if e.Scope != "host" || e.Output != "collector" || e.Collector.GRPCAddr != "flow-collector.flowlens.svc:9990" ||
		e.FlushInterval != 30*time.Second || e.Workload.Cluster != "prod" || e.MetricsAddr != ":9477" {
		t.Errorf("exporter config from the DaemonSet's env %v:\n%+v", ee, e)
	}

	find(t, objs, "StatefulSet", "flowlens-nats")
	find(t, objs, "Service", "flowlens-nats")
	for _, d := range []string{"flow-collector", "flowlens-sonar"} {
		if got := env(t, find(t, objs, "Deployment", d))["FLOWLENS_NATS_URL"]; got != "nats://flowlens-nats.flowlens.svc:4222" {
			t.Errorf("%s FLOWLENS_NATS_URL = %q", d, got)
		}
	}
}

// loadWith sets env (as the kubelet would, fieldRefs resolved to a pod name) and runs a binary's config
// loader with no arguments.
func loadWith[C any](t *testing.T, env map[string]string, load func([]string) (C, error)) C {
	t.Helper()
	for k, v := range env {
		if strings.HasPrefix(v, "fieldRef:") {
			v = "pod-0"
		}
		t.Setenv(k, v)
	}
	c, err := load(nil)
	if err != nil {
		t.Fatalf("config from env %v: %v", env, err)
	}
	return c
}

// TestDryRun validates every object the chart renders, for the default values and with each optional
// part on, by a server-side dry-run apply against a real kube-apiserver.
func TestDryRun(t *testing.T) {
	cfg, _ := kubetest.Start(t)
	dc, mapper := clients(t, cfg)
	ns := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": namespace}}}
	if _, err := dc.Resource(corev1.SchemeGroupVersion.WithResource("namespaces")).Create(context.Background(), ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		set  []string
		// absent are the kinds whose CRDs this API server lacks: they must be rejected for that reason only.
		absent []string
		// reject, when set, is what every rejection must name (at least one object must be rejected):
		// the check that the dry run validates at all.
		reject string
	}{
		{"default values", nil, nil, ""},
		{"daemonset and nats", []string{"daemonset.enabled=true", "nats.enabled=true", "injector.enabled=false"}, nil, ""},
		{"fleet with hpa and pdb", []string{"nats.enabled=true", "collector.hpa.enabled=true", "collector.pdb.enabled=true"}, nil, ""},
		{"insecure collector without sonar", []string{"collector.insecure=true", "sonar.enabled=false"}, nil, ""},
		{"servicemonitor and cert-manager", []string{"serviceMonitor.enabled=true", "certManager.enabled=true", "daemonset.enabled=true"}, crdKinds, ""},
		{"out-of-range port is rejected", []string{"collector.ports.grpc=70000"}, nil, "70000"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			objs := render(t, tc.set...)
			applied, rejected, missing := 0, 0, map[string]bool{}
			for _, o := range objs {
				gvk := o.GroupVersionKind()
				m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
				if err != nil {
					if meta.IsNoMatchError(err) && slices.Contains(tc.absent, gvk.Kind) {
						missing[gvk.Kind] = true
						continue
					}
					t.Errorf("%s %s: %v", gvk, o.GetName(), err)
					continue
				}
				// Cluster-scoped objects (the webhook configuration, RBAC) exist once: a per-case name
				// keeps cases from validating a merge with an earlier case's object.
				o.SetName(o.GetName() + "-" + strings.ReplaceAll(tc.name, " ", "-"))
				_, err = dc.Resource(m.Resource).Namespace(o.GetNamespace()).Apply(context.Background(), o.GetName(), o,
					metav1.ApplyOptions{FieldManager: "flowlens-helm-test", Force: true, DryRun: []string{metav1.DryRunAll}})
				switch {
				case err == nil:
					applied++
				case tc.reject != "" && strings.Contains(err.Error(), tc.reject):
					rejected++
				default:
					t.Errorf("%s %s rejected: %v", gvk.Kind, o.GetName(), err)
				}
			}
			if applied == 0 {
				t.Fatal("nothing applied")
			}
			if tc.reject != "" && rejected == 0 {
				t.Errorf("no object rejected for %q", tc.reject)
			}
			for _, k := range tc.absent {
				if !missing[k] {
					t.Errorf("%s: rendered none, or the API server knew it", k)
				}
			}
			t.Logf("%d objects accepted by the API server, %d rejected as expected, CRD kinds not served: %v", applied, rejected, missing)
		})
	}
	t.Run("committed manifests", func(t *testing.T) {
		raw, err := os.ReadFile(manifestsFile)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range parse(t, raw) {
			if o.GetKind() == "Namespace" {
				continue
			}
			gvk := o.GroupVersionKind()
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Fatalf("%s: %v", gvk, err)
			}
			o.SetName(o.GetName() + "-manifests")
			if _, err := dc.Resource(m.Resource).Namespace(o.GetNamespace()).Apply(context.Background(), o.GetName(), o,
				metav1.ApplyOptions{FieldManager: "flowlens-helm-test", Force: true, DryRun: []string{metav1.DryRunAll}}); err != nil {
				t.Errorf("%s %s rejected: %v", gvk.Kind, o.GetName(), err)
			}
		}
	})
}

func clients(t *testing.T, cfg *rest.Config) (*dynamic.DynamicClient, meta.RESTMapper) {
	t.Helper()
	dc, err := dynamic.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return dc, restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc))
}

// TestInjectorMatchesPlainManifests: the chart's webhook registration and injector pod template are
// ports of deployments/injector's; they must not drift from them (labels and the config checksum aside).
func TestInjectorMatchesPlainManifests(t *testing.T) {
	objs := render(t)
	var plain []*unstructured.Unstructured
	for _, f := range []string{"../injector/mutatingwebhookconfiguration.yaml", "../injector/injector.yaml"} {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		plain = append(plain, parse(t, raw)...)
	}
	want, _, _ := unstructured.NestedSlice(find(t, plain, "MutatingWebhookConfiguration", "flowlens-injector").Object, "webhooks")
	got, _, _ := unstructured.NestedSlice(find(t, objs, "MutatingWebhookConfiguration", "flowlens-injector").Object, "webhooks")
	if len(want) != 2 {
		t.Fatalf("deployments/injector has %d webhooks, want 2", len(want))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("chart webhooks\n%v\ndeployments/injector webhooks\n%v", got, want)
	}
	for _, path := range [][]string{
		{"spec", "template", "spec", "containers"}, {"spec", "template", "spec", "volumes"},
		{"spec", "template", "spec", "securityContext", "runAsUser"}, {"spec", "template", "spec", "automountServiceAccountToken"},
	} {
		w, _, _ := unstructured.NestedFieldNoCopy(find(t, plain, "Deployment", "flowlens-injector").Object, path...)
		g, _, _ := unstructured.NestedFieldNoCopy(find(t, objs, "Deployment", "flowlens-injector").Object, path...)
		if w == nil {
			t.Fatalf("deployments/injector's Deployment has no %v", path)
		}
		// Images: the chart pins the appVersion tag where the plain manifest says latest.
		if path[len(path)-1] == "containers" {
			g = stripImages(g)
			w = stripImages(w)
		}
		if !reflect.DeepEqual(g, w) {
			t.Errorf("injector Deployment %v:\nchart %v\nplain %v", strings.Join(path, "."), g, w)
		}
	}
}

func stripImages(v any) any {
	cs, _ := v.([]any)
	for _, c := range cs {
		delete(c.(map[string]any), "image")
		delete(c.(map[string]any), "imagePullPolicy")
	}
	return cs
}

// The exporters trust ca.crt of the collector's Secret only with a private CA: with a publicly trusted
// certificate (collector.tls.privateCA=false) nothing mounts the key, which such a Secret may lack.
func TestCollectorCAOnlyForAPrivateCA(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want bool
	}{
		{[]string{"daemonset.enabled=true"}, true},
		{[]string{"daemonset.enabled=true", "collector.tls.privateCA=false"}, false},
		{[]string{"daemonset.enabled=true", "collector.insecure=true"}, false},
	} {
		out := string(helm(t, templateArgs(tc.set...)...))
		for _, s := range []string{"name: collector-ca", "ca_file: /etc/flowlens-injector/collector-ca/ca.crt", "FLOWLENS_COLLECTOR_CA_FILE"} {
			if got := strings.Contains(out, s); got != tc.want {
				t.Errorf("--set %v: %q rendered %v, want %v", tc.set, s, got, tc.want)
			}
		}
	}
}

func setArgs(set []string) []string {
	var out []string
	for _, v := range set {
		out = append(out, "--set", v)
	}
	return out
}
