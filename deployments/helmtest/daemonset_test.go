package helmtest

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap/zaptest"
	authv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	exporterconfig "github.com/flowlens/flowlens/exporter/config"
	"github.com/flowlens/flowlens/exporter/podid"
	"github.com/flowlens/flowlens/exporter/podid/podidtest"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/kubetest"
	"github.com/flowlens/flowlens/sonar/kube"
)

// TestDaemonSetRBAC applies the DaemonSet's ServiceAccount and RBAC for real, then runs the exporter's
// pod namer as that ServiceAccount: the chart grants what DaemonSet mode needs (its node's pods, from
// every namespace) and nothing more.
func TestDaemonSetRBAC(t *testing.T) {
	objs := render(t, "daemonset.enabled=true")
	ee := env(t, find(t, objs, "DaemonSet", "flow-exporter"))
	if ee["FLOWLENS_KUBERNETES"] != "true" || ee["FLOWLENS_WORKLOAD_NODE"] != "fieldRef:spec.nodeName" {
		t.Errorf("DaemonSet env %v: want FLOWLENS_KUBERNETES=true and the node from spec.nodeName", ee)
	}
	ee["FLOWLENS_WORKLOAD_NODE"] = "node-a"
	delete(ee, "FLOWLENS_COLLECTOR_CA_FILE")
	ee["FLOWLENS_COLLECTOR_INSECURE"] = "true"
	if c := loadWith(t, ee, exporterconfig.Load); !c.Kubernetes || c.Kubeconfig != "" || c.Workload.Node != "node-a" || c.Workload.Name != "" {
		t.Errorf("exporter config from the DaemonSet's env: kubernetes %v kubeconfig %q workload %+v", c.Kubernetes, c.Kubeconfig, c.Workload)
	}

	cfg, admin := kubetest.Start(t)
	dc, mapper := clients(t, cfg)
	ctx := context.Background()
	if _, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, o := range []struct{ kind, name string }{
		{"ServiceAccount", "flow-exporter"}, {"ClusterRole", "flowlens-flow-exporter"}, {"ClusterRoleBinding", "flowlens-flow-exporter"},
	} {
		obj := find(t, objs, o.kind, o.name)
		gvk := obj.GroupVersionKind()
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dc.Resource(m.Resource).Namespace(obj.GetNamespace()).Apply(ctx, obj.GetName(), obj,
			metav1.ApplyOptions{FieldManager: "flowlens-helm-test", Force: true}); err != nil {
			t.Fatalf("apply %s %s: %v", o.kind, o.name, err)
		}
	}
	sa := rest.CopyConfig(cfg)
	sa.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:" + namespace + ":flow-exporter"}
	client, err := kubernetes.NewForConfig(sa)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		verb, resource string
		want           bool
	}{
		{"get", "pods", false}, {"list", "pods", true}, {"watch", "pods", true},
		{"update", "pods", false}, {"list", "secrets", false}, {"list", "nodes", false},
	} {
		r, err := client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authv1.SelfSubjectAccessReview{
			Spec: authv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authv1.ResourceAttributes{Verb: c.verb, Resource: c.resource}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status.Allowed != c.want {
			t.Errorf("flow-exporter may %s %s: %v, want %v", c.verb, c.resource, r.Status.Allowed, c.want)
		}
	}

	// The namer itself, as the ServiceAccount: a pod of another namespace on this node is named.
	p := podidtest.Pod(t, admin, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "cart-0", Namespace: "kube-system", Labels: map[string]string{kube.LabelApp: "cart"}},
		Spec: corev1.PodSpec{NodeName: "node-a"}}, "10.252.0.4")
	n, err := podid.New(client, podid.Config{Node: "node-a", Cluster: "prod", HostNetns: 1}, hostName{}, prometheus.NewRegistry(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	nctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	n.Start(nctx)
	defer n.Stop()
	if !n.WaitSynced(nctx) {
		t.Fatal("the ServiceAccount could not list the node's pods")
	}
	got := n.Workload(&flow.Record{Netns: 2, LocalAddr: netip.MustParseAddr("10.252.0.4")})
	if want := kube.PodWorkload(p, "prod"); got != want || got.Name != "cart" {
		t.Errorf("workload %+v, want %+v", got, want)
	}
}

// hostName is the namer's fallback here: no host naming is under test.
type hostName struct{}

func (hostName) Workload(*flow.Record) flow.Workload { return flow.Workload{Name: "host"} }
