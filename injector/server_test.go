package injector

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flowlens/flowlens/internal/tlstest"
)

// writeCert writes a fresh server certificate for localhost and loopback to dir/tls.crt and dir/tls.key
// and returns its serial number.
func writeCert(t *testing.T, dir string) *big.Int {
	t.Helper()
	ca, err := tlstest.NewCA("flowlens-injector test")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ca.Server()
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"tls.crt": p.CertPEM, "tls.key": p.KeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p.TLS.Leaf.SerialNumber
}

// touch moves both files' modification time, as a Secret update's new files have.
func touch(t *testing.T, dir string, at time.Time) {
	t.Helper()
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Chtimes(filepath.Join(dir, f), at, at); err != nil {
			t.Fatal(err)
		}
	}
}

func startServer(t *testing.T, dir string) (*Server, *prometheus.Registry) {
	t.Helper()
	cfg := testConfig()
	cfg.CertFile, cfg.KeyFile, cfg.MetricsAddr = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), ""
	reg := prometheus.NewRegistry()
	s, err := Start(cfg, zap.NewNop(), reg, reg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })
	return s, reg
}

// servedSerial handshakes with the server and returns its certificate's serial number.
func servedSerial(t *testing.T, s *Server) *big.Int {
	t.Helper()
	conn, err := tls.Dial("tcp", s.Addr.String(), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber
}

func TestCertificateReload(t *testing.T) {
	dir := t.TempDir()
	first := writeCert(t, dir)
	touch(t, dir, time.Now().Add(-time.Minute))
	s, reg := startServer(t, dir)
	if got := servedSerial(t, s); got.Cmp(first) != 0 {
		t.Fatalf("serial %v, want %v", got, first)
	}
	second := writeCert(t, dir)
	touch(t, dir, time.Now())
	if got := servedSerial(t, s); got.Cmp(second) != 0 {
		t.Fatalf("after rotation: serial %v, want %v", got, second)
	}
	// A half-written rotation (a key that does not match) keeps the previous certificate in service.
	other := t.TempDir()
	writeCert(t, other)
	key, _ := os.ReadFile(filepath.Join(other, "tls.key"))
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), key, 0o600); err != nil {
		t.Fatal(err)
	}
	touch(t, dir, time.Now().Add(time.Minute))
	if got := servedSerial(t, s); got.Cmp(second) != 0 {
		t.Fatalf("after a mismatched pair: serial %v, want %v kept", got, second)
	}
	servedSerial(t, s) // not retried until the files change again
	ok, bad := counter(reg, "flowlens_injector_cert_reloads_total", "ok"), counter(reg, "flowlens_injector_cert_reloads_total", "error")
	if ok != 1 || bad != 1 {
		t.Errorf("reloads ok %v error %v, want 1 and 1", ok, bad)
	}
}

// counter is the value of the counter metric whose one label is value; -1 when it is not there.
func counter(reg *prometheus.Registry, metric, value string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.Metric {
			if m.Label[0].GetValue() == value {
				return m.Counter.GetValue()
			}
		}
	}
	return -1
}

func TestStartRefusesMissingCertificate(t *testing.T) {
	cfg := testConfig()
	cfg.CertFile, cfg.KeyFile = filepath.Join(t.TempDir(), "none.crt"), filepath.Join(t.TempDir(), "none.key")
	reg := prometheus.NewRegistry()
	if _, err := Start(cfg, zap.NewNop(), reg, reg); err == nil || !strings.Contains(err.Error(), "none.crt") {
		t.Fatalf("Start without certificate: err %v", err)
	}
}

// review posts an AdmissionReview for pod to path and returns the response.
func review(t *testing.T, s *Server, path string, op admissionv1.Operation, pod *corev1.Pod) *admissionv1.AdmissionResponse {
	t.Helper()
	code, out := post(t, s, path, reviewBody(t, op, pod))
	if code != http.StatusOK {
		t.Fatalf("POST %s: %d %s", path, code, out)
	}
	var rv admissionv1.AdmissionReview
	if err := json.Unmarshal(out, &rv); err != nil {
		t.Fatalf("decode response %s: %v", out, err)
	}
	if rv.Response == nil || rv.Response.UID != "u" || !rv.Response.Allowed || rv.Kind != "AdmissionReview" {
		t.Fatalf("response %s: want allowed, the request's uid, kind AdmissionReview", out)
	}
	return rv.Response
}

func post(t *testing.T, s *Server, path string, body []byte) (int, []byte) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Post("https://"+s.Addr.String()+path, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.Bytes()
}

func TestWebhookAnswers(t *testing.T) {
	dir := t.TempDir()
	writeCert(t, dir)
	s, reg := startServer(t, dir)
	app := func() *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
	}
	if r := review(t, s, PathNamespace, admissionv1.Create, app()); r.PatchType == nil || len(r.Patch) == 0 {
		t.Error("opted-in namespace: no patch")
	}
	if r := review(t, s, PathPod, admissionv1.Create, app()); r.Patch != nil {
		t.Errorf("unlabelled namespace, no annotation: patch %s", r.Patch)
	}
	if r := review(t, s, "/"+PathNamespace, admissionv1.Update, app()); r.Patch != nil {
		t.Errorf("update: patch %s", r.Patch)
	}
	clash := app()
	clash.Spec.Volumes = []corev1.Volume{{Name: VolumeBTF}}
	if r := review(t, s, PathNamespace, admissionv1.Create, clash); r.Patch != nil || len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], VolumeBTF) {
		t.Errorf("volume clash: patch %s warnings %v, want no patch and a warning", r.Patch, r.Warnings)
	}
	if code, _ := post(t, s, PathPod, []byte("{not json")); code != http.StatusBadRequest {
		t.Errorf("garbage: status %d, want 400", code)
	}
	if code, _ := post(t, s, "/other", []byte("{}")); code != http.StatusNotFound {
		t.Errorf("unknown path: status %d, want 404", code)
	}
	want := map[string]float64{"injected": 1, "not_selected": 1, "not_create": 1, "error": 2, "opted_out": 0, "already_injected": 0}
	for outcome, n := range want {
		if got := counter(reg, "flowlens_injector_admissions_total", outcome); got != n {
			t.Errorf("admissions{outcome=%s} = %v, want %v", outcome, got, n)
		}
	}
}

func TestLoad(t *testing.T) {
	t.Setenv("FLOWLENS_SIDECAR_IMAGE", "img:1")
	t.Setenv("FLOWLENS_COLLECTOR_GRPC_ADDR", "collector:4317")
	c, err := Load([]string{"--cluster", "c1"})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if c.Sidecar.Image != "img:1" || c.Collector.GRPCAddr != "collector:4317" || c.Cluster != "c1" ||
		c.Sidecar.Name != "flowlens-exporter" || !c.Sidecar.Native || c.Sidecar.MemoryLimit != "64Mi" || c.ListenAddr != ":8443" {
		t.Errorf("config %+v", c)
	}
	t.Setenv("FLOWLENS_SIDECAR_IMAGE", "")
	t.Setenv("FLOWLENS_COLLECTOR_GRPC_ADDR", "")
	_, err = Load([]string{"--collector-transport", "udp", "--sidecar-cpu-limit", "fast"})
	for _, want := range []string{"sidecar.image is required", `transport "udp"`, "cpu_limit", "collector.grpc_addr or collector.https_url"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Load with bad settings: err %v, want it to say %q", err, want)
		}
	}
}

func TestCollectorCAHandedToSidecars(t *testing.T) {
	dir, caDir := t.TempDir(), t.TempDir()
	writeCert(t, dir)
	// The CA file as a Secret's ca.crt may come: with a key block beside the certificate, which must
	// never reach a pod spec.
	writeCert(t, caDir)
	caFile := filepath.Join(caDir, "ca.crt")
	certPEM := func() string {
		b, err := os.ReadFile(filepath.Join(caDir, "tls.crt"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	writeCA := func(at time.Time) string {
		crt := certPEM()
		key, _ := os.ReadFile(filepath.Join(caDir, "tls.key"))
		if err := os.WriteFile(caFile, append([]byte(crt), key...), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(caFile, at, at); err != nil {
			t.Fatal(err)
		}
		return crt
	}
	first := writeCA(time.Now().Add(-time.Minute))

	cfg := testConfig()
	cfg.CertFile, cfg.KeyFile, cfg.MetricsAddr = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), ""
	cfg.Collector.CAFile = caFile
	reg := prometheus.NewRegistry()
	s, err := Start(cfg, zap.NewNop(), reg, reg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { s.Stop(context.Background()) })

	// caEnv is the FLOWLENS_COLLECTOR_CA_PEM the injected sidecar gets.
	caEnv := func() string {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}}
		r := review(t, s, PathNamespace, admissionv1.Create, pod)
		var ops []struct {
			Path  string          `json:"path"`
			Value json.RawMessage `json:"value"`
		}
		if err := json.Unmarshal(r.Patch, &ops); err != nil {
			t.Fatalf("patch %s: %v", r.Patch, err)
		}
		for _, op := range ops {
			var c corev1.Container
			if json.Unmarshal(op.Value, &c) != nil || c.Name != cfg.Sidecar.Name {
				var cs []corev1.Container
				if json.Unmarshal(op.Value, &cs) != nil || len(cs) == 0 || cs[0].Name != cfg.Sidecar.Name {
					continue
				}
				c = cs[0]
			}
			for _, e := range c.Env {
				if e.Name == "FLOWLENS_COLLECTOR_CA_PEM" {
					return e.Value
				}
			}
			t.Fatalf("sidecar env %v: no FLOWLENS_COLLECTOR_CA_PEM", c.Env)
		}
		t.Fatalf("patch %s: no sidecar", r.Patch)
		return ""
	}
	if got := caEnv(); got != first || strings.Contains(got, "PRIVATE KEY") {
		t.Fatalf("sidecar CA:\n%s\nwant exactly the certificate:\n%s", got, first)
	}
	// A rotated CA reaches the pods admitted after it.
	writeCert(t, caDir)
	second := writeCA(time.Now())
	if second == first {
		t.Fatal("test bug: the rotated CA is the same")
	}
	if got := caEnv(); got != second {
		t.Fatalf("after rotation, sidecar CA:\n%s\nwant:\n%s", got, second)
	}
	// A broken file keeps the previous CA in service.
	if err := os.WriteFile(caFile, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(caFile, later, later); err != nil {
		t.Fatal(err)
	}
	if got := caEnv(); got != second {
		t.Fatalf("after a broken file, sidecar CA:\n%s\nwant the previous one", got)
	}
	caEnv()
	if ok, bad := counter(reg, "flowlens_injector_ca_reloads_total", "ok"), counter(reg, "flowlens_injector_ca_reloads_total", "error"); ok != 1 || bad != 1 {
		t.Errorf("CA reloads ok %v error %v, want 1 and 1", ok, bad)
	}

	// At start, a bundle too large for every pod spec is refused.
	huge := filepath.Join(t.TempDir(), "huge.crt")
	one, _ := os.ReadFile(filepath.Join(caDir, "tls.crt"))
	os.WriteFile(huge, bytes.Repeat(one, 200), 0o600)
	cfg.Collector.CAFile = huge
	if _, err := Start(cfg, zap.NewNop(), prometheus.NewRegistry(), prometheus.NewRegistry()); err == nil || !strings.Contains(err.Error(), "more than 65536") {
		t.Fatalf("Start with a huge CA bundle: err %v", err)
	}

	// At start, a CA file without a certificate is refused with its name.
	empty := filepath.Join(t.TempDir(), "empty.crt")
	os.WriteFile(empty, []byte("nothing"), 0o600)
	cfg.Collector.CAFile = empty
	if _, err := Start(cfg, zap.NewNop(), prometheus.NewRegistry(), prometheus.NewRegistry()); err == nil || !strings.Contains(err.Error(), "empty.crt: no certificate") {
		t.Fatalf("Start with an empty CA file: err %v", err)
	}
}
