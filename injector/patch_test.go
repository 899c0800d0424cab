package injector

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func testConfig() Config {
	return Config{
		ListenAddr: "127.0.0.1:0", CertFile: "c", KeyFile: "k", LogLevel: "info", Cluster: "prod-eu",
		Sidecar: Sidecar{Image: "flowlens/flow-exporter:test", PullPolicy: "IfNotPresent", Name: "flowlens-exporter",
			CPURequest: "10m", MemoryRequest: "32Mi", CPULimit: "100m", MemoryLimit: "64Mi"},
		Collector: Collector{Transport: "auto", GRPCAddr: "flow-collector.flowlens:4317", HTTPSURL: "https://flow-collector.flowlens/v1/batches"},
	}
}

func TestDecide(t *testing.T) {
	sidecar := corev1.Container{Name: "flowlens-exporter"}
	app := corev1.Container{Name: "app"}
	pod := func(annot string, cs ...corev1.Container) *corev1.Pod {
		p := &corev1.Pod{Spec: corev1.PodSpec{Containers: cs}}
		if annot != "" {
			p.Annotations = map[string]string{PodAnnotation: annot}
		}
		return p
	}
	for _, tc := range []struct {
		name      string
		pod       *corev1.Pod
		nsEnabled bool
		want      Decision
	}{
		{"namespace opted in", pod("", app), true, Inject},
		{"namespace not opted in", pod("", app), false, NotSelected},
		{"pod annotated", pod("true", app), false, Inject},
		{"pod opted out in opted-in namespace", pod("false", app), true, OptedOut},
		{"unknown annotation value follows the namespace", pod("yes", app), false, NotSelected},
		{"already injected", pod("true", app, sidecar), true, AlreadyInjected},
		{"already injected wins over opt-out", pod("false", sidecar), false, AlreadyInjected},
		{"already injected as a native sidecar", &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{app},
			InitContainers: []corev1.Container{sidecar}}}, true, AlreadyInjected},
	} {
		if got := Decide(tc.pod, tc.nsEnabled, "flowlens-exporter"); got != tc.want {
			t.Errorf("%s: Decide = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// applyPatch applies Patch's operations to pod's JSON the way the API server does.
func applyPatch(t *testing.T, pod *corev1.Pod, cfg Config) *corev1.Pod {
	t.Helper()
	ops, err := Patch(pod, cfg)
	if err != nil {
		t.Fatalf("Patch: %v", err)
	}
	raw, _ := json.Marshal(pod)
	patch, _ := json.Marshal(ops)
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("decode patch %s: %v", patch, err)
	}
	out, err := p.Apply(raw)
	if err != nil {
		t.Fatalf("apply patch %s: %v", patch, err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

func TestPatchBarePod(t *testing.T) {
	cfg := testConfig()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "web-", Labels: map[string]string{"app": "web"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx"}}},
	}
	got := applyPatch(t, pod, cfg)
	if len(got.Spec.Containers) != 2 || got.Spec.Containers[0].Name != "app" {
		t.Fatalf("containers %+v: want app then the sidecar", got.Spec.Containers)
	}
	want, err := Container(pod, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(normalize(t, got.Spec.Containers[1]), normalize(t, want)) {
		t.Errorf("sidecar after patching:\n%+v\nwant\n%+v", got.Spec.Containers[1], want)
	}
	if !reflect.DeepEqual(got.Spec.Volumes, Volumes()) {
		t.Errorf("volumes %+v, want %+v", got.Spec.Volumes, Volumes())
	}
	if got.Annotations[InjectedAnnotation] != cfg.Sidecar.Image || len(got.Annotations) != 1 {
		t.Errorf("annotations %v, want only %s", got.Annotations, InjectedAnnotation)
	}
	if Decide(got, true, cfg.Sidecar.Name) != AlreadyInjected {
		t.Error("a patched pod is not recognised as injected")
	}
}

func TestPatchKeepsExistingVolumesAndAnnotations(t *testing.T) {
	cfg := testConfig()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "db-0", Annotations: map[string]string{PodAnnotation: "true", "a/b~c": "x"}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "db", Image: "postgres"}},
			Volumes:    []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
		},
	}
	got := applyPatch(t, pod, cfg)
	names := []string{}
	for _, v := range got.Spec.Volumes {
		names = append(names, v.Name)
	}
	if strings.Join(names, ",") != "data,"+VolumeBTF+","+VolumeTracefs {
		t.Errorf("volumes %v", names)
	}
	want := map[string]string{PodAnnotation: "true", "a/b~c": "x", InjectedAnnotation: cfg.Sidecar.Image}
	if !reflect.DeepEqual(got.Annotations, want) {
		t.Errorf("annotations %v, want %v", got.Annotations, want)
	}
}

func TestPatchNative(t *testing.T) {
	cfg := testConfig()
	cfg.Sidecar.Native = true
	app := []corev1.Container{{Name: "app", Image: "nginx"}}
	bare := applyPatch(t, &corev1.Pod{Spec: corev1.PodSpec{Containers: app}}, cfg)
	if !reflect.DeepEqual(bare.Spec.Containers, app) || len(bare.Spec.InitContainers) != 1 ||
		bare.Spec.InitContainers[0].Name != cfg.Sidecar.Name {
		t.Fatalf("containers %v init containers %v: want app and the sidecar as the one init container",
			bare.Spec.Containers, bare.Spec.InitContainers)
	}
	if rp := bare.Spec.InitContainers[0].RestartPolicy; rp == nil || *rp != corev1.ContainerRestartPolicyAlways {
		t.Errorf("restartPolicy %v, want Always", rp)
	}
	withInit := applyPatch(t, &corev1.Pod{Spec: corev1.PodSpec{Containers: app,
		InitContainers: []corev1.Container{{Name: "migrate"}}}}, cfg)
	if n := len(withInit.Spec.InitContainers); n != 2 || withInit.Spec.InitContainers[0].Name != cfg.Sidecar.Name ||
		withInit.Spec.InitContainers[1].Name != "migrate" {
		t.Errorf("init containers %v: want the sidecar, then migrate", withInit.Spec.InitContainers)
	}
	if Decide(withInit, true, cfg.Sidecar.Name) != AlreadyInjected {
		t.Error("a natively injected pod is not recognised as injected")
	}
	cfg.Sidecar.Native = false
	if c, _ := Container(&corev1.Pod{}, cfg); c.RestartPolicy != nil {
		t.Errorf("plain sidecar has restartPolicy %v", *c.RestartPolicy)
	}
}

func TestPatchRefusesVolumeClash(t *testing.T) {
	pod := &corev1.Pod{Spec: corev1.PodSpec{Volumes: []corev1.Volume{{Name: VolumeTracefs}}}}
	if _, err := Patch(pod, testConfig()); err == nil || !strings.Contains(err.Error(), VolumeTracefs) {
		t.Fatalf("Patch with a clashing volume: err %v, want one naming %s", err, VolumeTracefs)
	}
}

func TestContainer(t *testing.T) {
	cfg := testConfig()
	yes := true
	for _, tc := range []struct {
		name string
		pod  corev1.Pod
		want string
	}{
		{"app.kubernetes.io/name label", corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "x-",
			Labels: map[string]string{"app.kubernetes.io/name": "checkout", "app": "other"}}}, "checkout"},
		{"deployment through its replicaset", corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "cart-7d9f8-",
			Labels:          map[string]string{"pod-template-hash": "7d9f8"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "cart-7d9f8", Controller: &yes}}}}, "cart"},
		{"named pod", corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "debug"}}, "debug"},
		{"generateName pod without labels or owner", corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "tmp-"}},
			"$(FLOWLENS_WORKLOAD_POD)"},
	} {
		c, err := Container(&tc.pod, cfg)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		env := map[string]string{}
		for _, e := range c.Env {
			if e.ValueFrom != nil {
				env[e.Name] = "field:" + e.ValueFrom.FieldRef.FieldPath
			} else {
				env[e.Name] = e.Value
			}
		}
		want := map[string]string{
			"FLOWLENS_WORKLOAD_POD":        "field:metadata.name",
			"FLOWLENS_WORKLOAD_NAMESPACE":  "field:metadata.namespace",
			"FLOWLENS_WORKLOAD_POD_UID":    "field:metadata.uid",
			"FLOWLENS_WORKLOAD_NODE":       "field:spec.nodeName",
			"FLOWLENS_POD_IP":              "field:status.podIP",
			"FLOWLENS_WORKLOAD_NAME":       tc.want,
			"FLOWLENS_WORKLOAD_CLUSTER":    "prod-eu",
			"FLOWLENS_SCOPE":               "netns",
			"FLOWLENS_OUTPUT":              "collector",
			"FLOWLENS_COLLECTOR_TRANSPORT": "auto",
			"FLOWLENS_COLLECTOR_GRPC_ADDR": "flow-collector.flowlens:4317",
			"FLOWLENS_COLLECTOR_HTTPS_URL": "https://flow-collector.flowlens/v1/batches",
		}
		if !reflect.DeepEqual(env, want) || len(c.Env) != len(want) {
			t.Errorf("%s: env %v\nwant %v", tc.name, env, want)
		}
		// $(VAR) expands only variables defined earlier in the list.
		if c.Env[0].Name != "FLOWLENS_WORKLOAD_POD" {
			t.Errorf("%s: first env var %s, want FLOWLENS_WORKLOAD_POD", tc.name, c.Env[0].Name)
		}
	}
}

func TestContainerPrivilegesAndResources(t *testing.T) {
	cfg := testConfig()
	cfg.Collector = Collector{Transport: "grpc", GRPCAddr: "127.0.0.1:4317", Insecure: true}
	c, err := Container(&corev1.Pod{}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sc := c.SecurityContext
	if !reflect.DeepEqual(sc.Capabilities, &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"BPF", "PERFMON"}}) {
		t.Errorf("capabilities %+v", sc.Capabilities)
	}
	if *sc.Privileged || *sc.AllowPrivilegeEscalation || !*sc.ReadOnlyRootFilesystem || *sc.RunAsUser != 0 {
		t.Errorf("security context %+v", sc)
	}
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly {
			t.Errorf("mount %s is writable", m.Name)
		}
	}
	if got := c.Resources.Requests.Cpu().String() + "/" + c.Resources.Requests.Memory().String() + " " +
		c.Resources.Limits.Cpu().String() + "/" + c.Resources.Limits.Memory().String(); got != "10m/32Mi 100m/64Mi" {
		t.Errorf("resources %s", got)
	}
	var insecure, https bool
	for _, e := range c.Env {
		insecure = insecure || e.Name == "FLOWLENS_COLLECTOR_INSECURE" && e.Value == "true"
		https = https || e.Name == "FLOWLENS_COLLECTOR_HTTPS_URL"
	}
	if !insecure || https {
		t.Errorf("env %v: want FLOWLENS_COLLECTOR_INSECURE=true and no HTTPS URL", c.Env)
	}
	cfg.Sidecar.MemoryLimit = "lots"
	if _, err := Container(&corev1.Pod{}, cfg); err == nil || !strings.Contains(err.Error(), "memory_limit") {
		t.Errorf("bad quantity: err %v", err)
	}
}

// normalize round-trips a container through JSON, as the API server's copy went.
func normalize(t *testing.T, c corev1.Container) corev1.Container {
	t.Helper()
	raw, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	var out corev1.Container
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
