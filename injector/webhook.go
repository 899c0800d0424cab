package injector

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
)

// The webhook's paths. The MutatingWebhookConfiguration sends pods of opted-in namespaces (its
// namespaceSelector matches NamespaceLabel=NamespaceEnabled) to PathNamespace and every other pod to
// PathPod, so the webhook never has to look a namespace up: no RBAC, no API call inside an admission.
const (
	PathNamespace = "/mutate/namespace"
	PathPod       = "/mutate/pod"
)

// Outcomes that are not a Decide answer.
const (
	NotCreate Decision = "not_create" // an update, delete or connect, or not a pod: pods' containers are immutable
	Failed    Decision = "error"      // the pod was admitted unchanged because something went wrong
)

// maxReview bounds a request body: the API server limits objects to about 1.5 MiB.
const maxReview = 4 << 20

// Webhook answers AdmissionReviews for pods.
type Webhook struct {
	cfg        Config
	ca         *CABundle // nil without collector.ca_file
	log        *zap.Logger
	admissions *prometheus.CounterVec
}

// NewWebhook returns the handler for both paths; cfg must have passed Validate.
func NewWebhook(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Webhook, error) {
	w := &Webhook{cfg: cfg, log: log, admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowlens_injector_admissions_total",
		Help: "Pod admissions answered, by outcome: injected, already_injected, opted_out, not_selected, not_create, error.",
	}, []string{"outcome"})}
	for _, d := range []Decision{Inject, AlreadyInjected, OptedOut, NotSelected, NotCreate, Failed} {
		w.admissions.WithLabelValues(string(d))
	}
	if err := reg.Register(w.admissions); err != nil {
		return nil, fmt.Errorf("register admissions metric: %w", err)
	}
	if cfg.Collector.CAFile != "" {
		ca, err := NewCABundle(cfg.Collector.CAFile, log, reg)
		if err != nil {
			return nil, err
		}
		w.ca = ca
	}
	return w, nil
}

// ServeHTTP answers one AdmissionReview. Whatever goes wrong with the pod, the answer allows it
// unchanged: a broken injector must never stop workloads from starting. Only a request that is not an
// AdmissionReview at all gets an HTTP error (there is nothing to answer), and the webhook's
// failurePolicy Ignore admits the pod then too.
func (w *Webhook) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	// envtest and some proxies join the host and the path with a second slash.
	var nsEnabled bool
	switch "/" + strings.TrimLeft(r.URL.Path, "/") {
	case PathNamespace:
		nsEnabled = true
	case PathPod:
	default:
		http.NotFound(rw, r)
		return
	}
	if r.Method != http.MethodPost {
		http.Error(rw, "admission reviews are POSTed", http.StatusMethodNotAllowed)
		return
	}
	var review admissionv1.AdmissionReview
	body, err := io.ReadAll(http.MaxBytesReader(rw, r.Body, maxReview))
	if err == nil {
		err = json.Unmarshal(body, &review)
	}
	if err == nil && review.Request == nil {
		err = errors.New("no request in the review")
	}
	if err != nil {
		w.admissions.WithLabelValues(string(Failed)).Inc()
		w.log.Warn("bad admission review", zap.Error(err))
		http.Error(rw, fmt.Sprintf("decode admission review: %v", err), http.StatusBadRequest)
		return
	}
	resp, outcome, err := w.admit(review.Request, nsEnabled)
	w.admissions.WithLabelValues(string(outcome)).Inc()
	if err != nil {
		w.log.Warn("pod admitted without sidecar", zap.String("namespace", review.Request.Namespace),
			zap.String("name", review.Request.Name), zap.Error(err))
		resp.Warnings = []string{"flowlens sidecar not injected: " + err.Error()}
	} else {
		w.log.Debug("admission", zap.String("namespace", review.Request.Namespace),
			zap.String("name", review.Request.Name), zap.String("outcome", string(outcome)))
	}
	review.Response = resp
	review.Request = nil
	rw.Header().Set("Content-Type", "application/json")
	if err := json.NewEncoder(rw).Encode(&review); err != nil {
		w.log.Warn("write admission response", zap.Error(err))
	}
}

// admit always returns an allowing response, with the patch when the pod is injected.
func (w *Webhook) admit(req *admissionv1.AdmissionRequest, nsEnabled bool) (*admissionv1.AdmissionResponse, Decision, error) {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	if req.Operation != admissionv1.Create || req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.SubResource != "" {
		return resp, NotCreate, nil
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return resp, Failed, fmt.Errorf("decode pod: %w", err)
	}
	d := Decide(&pod, nsEnabled, w.cfg.Sidecar.Name)
	if d != Inject {
		return resp, d, nil
	}
	cfg := w.cfg
	if w.ca != nil {
		cfg.Collector.CAPEM = w.ca.PEM()
	}
	ops, err := Patch(&pod, cfg)
	if err != nil {
		return resp, Failed, err
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return resp, Failed, fmt.Errorf("encode patch: %w", err)
	}
	pt := admissionv1.PatchTypeJSONPatch
	resp.Patch, resp.PatchType = patch, &pt
	return resp, Inject, nil
}
