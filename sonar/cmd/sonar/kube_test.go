package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/kubetest"
	"github.com/flowlens/flowlens/sonar/api"
)

// TestKubernetesSource runs sonar with --kubeconfig against a real kube-apiserver (envtest): a
// service's cluster IP, allocated by the apiserver, is answered over HTTP as that service, SERVICE
// evidence.
func TestKubernetesSource(t *testing.T) {
	rc, client := kubetest.Start(t)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: rc.Host, CertificateAuthorityData: rc.CAData}
	kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: rc.CertData, ClientKeyData: rc.KeyData, Token: rc.BearerToken}
	kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin"}
	kc.CurrentContext = "envtest"
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}

	cfg := testConfig(t)
	cfg.Kubeconfig, cfg.Cluster = kubeconfig, "test-cluster"
	_, httpURL, stop := start(t, cfg)
	defer stop()

	svc, err := client.CoreV1().Services("default").Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "checkout"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ip := svc.Spec.ClusterIP
	// A range covers only what the source observed (it starts at the first observation and grows with
	// later ones), so ask for the ranges, then look up inside one. The wait is for the informer to
	// deliver the service; its bound only keeps a broken source from hanging.
	var rs api.RangesJSON
	for deadline := time.Now().Add(30 * time.Second); len(rs.Ranges) == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("service %s never claimed", ip)
		}
		getJSON(t, fmt.Sprintf("%s/api/v1/ranges?ip=%s", httpURL, ip), &rs)
	}
	var a api.AnswerJSON
	getJSON(t, fmt.Sprintf("%s/api/v1/lookup?ip=%s&at=%d", httpURL, ip, rs.Ranges[0].Start), &a)
	if a.Status != "OWNER" || a.Range.Evidence != "SERVICE" || a.Range.Owner != (flow.Workload{Name: "checkout", Namespace: "default", Cluster: "test-cluster"}) {
		t.Fatalf("service %s answered %+v %+v", ip, a, a.Range)
	}
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
}
