package injector

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func reviewBody(tb testing.TB, op admissionv1.Operation, pod *corev1.Pod) []byte {
	tb.Helper()
	raw, err := json.Marshal(pod)
	if err != nil {
		tb.Fatal(err)
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "u", Operation: op, Namespace: "shop",
			Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Object: runtime.RawExtension{Raw: raw}},
	})
	if err != nil {
		tb.Fatal(err)
	}
	return body
}

func benchPod() *corev1.Pod {
	yes := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "cart-7d9f8-", Labels: map[string]string{"pod-template-hash": "7d9f8"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "cart-7d9f8", Controller: &yes}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "nginx"}}},
	}
}

// FuzzWebhook feeds the webhook arbitrary request bodies: it must never panic, and must answer either
// 400 (not a review) or an allowing response whose patch, if any, is valid JSON.
func FuzzWebhook(f *testing.F) {
	f.Add(reviewBody(f, admissionv1.Create, benchPod()))
	f.Add(reviewBody(f, admissionv1.Update, benchPod()))
	f.Add([]byte(`{"request":{"uid":"x","kind":{"kind":"Pod"},"operation":"CREATE","object":{"spec":{"volumes":[{"name":"flowlens-btf"}]}}}}`))
	f.Add([]byte(`{"request":{"uid":"x","kind":{"kind":"Pod"},"operation":"CREATE","object":"nope"}}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`null`))
	wh, err := NewWebhook(testConfig(), zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		wh.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, PathNamespace, bytes.NewReader(body)))
		switch rec.Code {
		case http.StatusBadRequest:
			return
		case http.StatusOK:
		default:
			t.Fatalf("status %d for %q", rec.Code, body)
		}
		var rv admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &rv); err != nil || rv.Response == nil || !rv.Response.Allowed {
			t.Fatalf("answer %s (%v) for %q: want an allowing response", rec.Body.Bytes(), err, body)
		}
		if rv.Response.Patch != nil && !json.Valid(rv.Response.Patch) {
			t.Fatalf("invalid patch %s", rv.Response.Patch)
		}
	})
}

// BenchmarkAdmit measures one injecting admission answered through the handler (decode, decide, build
// and encode the patch), without TLS.
func BenchmarkAdmit(b *testing.B) {
	wh, err := NewWebhook(testConfig(), zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	body := reviewBody(b, admissionv1.Create, benchPod())
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		rec := httptest.NewRecorder()
		wh.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, PathNamespace, bytes.NewReader(body)))
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "µs/admission")
}
