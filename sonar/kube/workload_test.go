package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/flowlens/flowlens/internal/flow"
)

func TestPodWorkload(t *testing.T) {
	yes, no := true, false
	owner := func(kind, name string, controller *bool) []metav1.OwnerReference {
		return []metav1.OwnerReference{{Kind: kind, Name: name, Controller: controller}}
	}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		owners []metav1.OwnerReference
		want   string
	}{
		{"app.kubernetes.io/name first", map[string]string{LabelAppName: "checkout", LabelApp: "other"}, owner("ReplicaSet", "x-1", &yes), "checkout"},
		{"then app", map[string]string{LabelApp: "cart"}, owner("ReplicaSet", "x-1", &yes), "cart"},
		{"empty label skipped", map[string]string{LabelAppName: "", LabelApp: "cart"}, nil, "cart"},
		{"deployment: hash stripped", map[string]string{labelTemplateHash: "7d9f8b6c5d"}, owner("ReplicaSet", "web-7d9f8b6c5d", &yes), "web"},
		{"replicaset without the hash label kept whole", nil, owner("ReplicaSet", "web-7d9f8b6c5d", &yes), "web-7d9f8b6c5d"},
		{"hash label not the suffix", map[string]string{labelTemplateHash: "abc"}, owner("ReplicaSet", "web-7d9f8b6c5d", &yes), "web-7d9f8b6c5d"},
		{"statefulset", nil, owner("StatefulSet", "db", &yes), "db"},
		{"job name kept whole", map[string]string{labelTemplateHash: "28123456"}, owner("Job", "backup-28123456", &yes), "backup-28123456"},
		{"non-controller owner ignored", nil, owner("ReplicaSet", "web-1", &no), "pod-1"},
		{"nil controller ignored", nil, owner("ReplicaSet", "web-1", nil), "pod-1"},
		{"bare pod", nil, nil, "pod-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: "pod-1", Namespace: "shop", UID: "u-1", Labels: tc.labels, OwnerReferences: tc.owners},
				Spec:       corev1.PodSpec{NodeName: "node-a"},
			}
			want := flow.Workload{Name: tc.want, Namespace: "shop", Pod: "pod-1", PodUID: "u-1", Node: "node-a", Cluster: "prod"}
			if got := PodWorkload(p, "prod"); got != want {
				t.Fatalf("PodWorkload = %+v, want %+v", got, want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	if err := (Config{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	for _, c := range []Config{{Resync: -1}, {ResyncLag: -1}} {
		if err := c.Validate(); err == nil {
			t.Fatalf("%+v: no error", c)
		}
	}
	if d := (Config{}).withDefaults(); d.Resync.Seconds() != 30 || d.ResyncLag.Seconds() != 60 {
		t.Fatalf("defaults %+v", d)
	}
}
