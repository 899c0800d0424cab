package helmtest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

const (
	// installScript installs helm; make test runs it.
	installScript = "scripts/install-helm.sh"
	chartDir      = "../helm/flowlens"
	// manifestsFile is the chart rendered with its default values, for kubectl apply users.
	manifestsFile = "../manifests/flowlens.yaml"
	namespace     = "flowlens"
)

// helmBin finds helm on PATH or in $(go env GOPATH)/bin, where the install script puts it. Missing: the
// test fails under CI=true (make test installs it) and is skipped elsewhere.
func helmBin(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		p := filepath.Join(strings.TrimSpace(string(out)), "bin", "helm")
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("helm not found on PATH or in $(go env GOPATH)/bin: run %s (make test does)", installScript)
	}
	t.Skipf("helm not found: run %s", installScript)
	return ""
}

func helm(t *testing.T, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return out
}

// render runs helm template with the --set values given and returns every object it rendered.
func render(t *testing.T, set ...string) []*unstructured.Unstructured {
	t.Helper()
	return parse(t, helm(t, templateArgs(set...)...))
}

// templateArgs is helm's arguments to render the chart as it is installed, with the --set values given.
func templateArgs(set ...string) []string {
	return append([]string{"template", "flowlens", chartDir, "--namespace", namespace}, setArgs(set)...)
}

// parse splits a multi-document YAML stream into objects, skipping empty documents.
func parse(t *testing.T, raw []byte) []*unstructured.Unstructured {
	t.Helper()
	var objs []*unstructured.Unstructured
	for i, doc := range strings.Split(string(raw), "\n---") {
		js, err := yaml.YAMLToJSON([]byte(doc))
		if err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, doc)
		}
		if string(js) == "null" {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(js); err != nil {
			t.Fatalf("document %d: %v\n%s", i, err, doc)
		}
		objs = append(objs, u)
	}
	return objs
}

// names lists objects as Kind/name, in render order.
func names(objs []*unstructured.Unstructured) []string {
	var s []string
	for _, o := range objs {
		s = append(s, o.GetKind()+"/"+o.GetName())
	}
	return s
}

func find(t *testing.T, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("%s/%s not rendered; rendered: %v", kind, name, names(objs))
	return nil
}

// container returns the first container of a workload's pod template.
func container(t *testing.T, o *unstructured.Unstructured) map[string]any {
	t.Helper()
	cs, _, _ := unstructured.NestedSlice(o.Object, "spec", "template", "spec", "containers")
	if len(cs) == 0 {
		t.Fatalf("%s/%s has no containers", o.GetKind(), o.GetName())
	}
	return cs[0].(map[string]any)
}

// env returns a container's plain-value environment; fieldRef variables map to "fieldRef:<path>".
func env(t *testing.T, o *unstructured.Unstructured) map[string]string {
	t.Helper()
	m := map[string]string{}
	list, _, _ := unstructured.NestedSlice(container(t, o), "env")
	for _, e := range list {
		e := e.(map[string]any)
		name := e["name"].(string)
		if _, dup := m[name]; dup {
			t.Errorf("%s/%s: env %s set twice", o.GetKind(), o.GetName(), name)
		}
		if v, ok := e["value"].(string); ok {
			m[name] = v
		} else if p, ok, _ := unstructured.NestedString(e, "valueFrom", "fieldRef", "fieldPath"); ok {
			m[name] = "fieldRef:" + p
		}
	}
	return m
}
