package kube

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/flowlens/flowlens/internal/flow"
)

// Labels PodWorkload reads the workload name from, first found wins.
const (
	LabelAppName = "app.kubernetes.io/name"
	LabelApp     = "app"
	// labelTemplateHash is the suffix a Deployment's ReplicaSet adds to the deployment name.
	labelTemplateHash = "pod-template-hash"
)

// PodWorkload is the workload a pod's flows belong to. The exporter sidecar stamps the same value on
// the records it sends from inside the pod, so an event claim and the pod's own heartbeats name one
// owner and merge instead of conflicting: both sides must derive it here.
//
// Name is the first of: the app.kubernetes.io/name label, the app label, the controlling owner's name
// (for a Deployment's ReplicaSet without its pod-template-hash suffix, so the deployment's name), the
// pod's name.
func PodWorkload(pod *corev1.Pod, cluster string) flow.Workload {
	return flow.Workload{
		Name:      podWorkloadName(pod),
		Namespace: pod.Namespace,
		Pod:       pod.Name,
		PodUID:    string(pod.UID),
		Node:      pod.Spec.NodeName,
		Cluster:   cluster,
	}
}

func podWorkloadName(pod *corev1.Pod) string {
	for _, l := range []string{LabelAppName, LabelApp} {
		if v := pod.Labels[l]; v != "" {
			return v
		}
	}
	for _, ref := range pod.OwnerReferences {
		if ref.Controller == nil || !*ref.Controller || ref.Name == "" {
			continue
		}
		// Strip only the suffix the ReplicaSet controller is known to have added: a name that merely
		// looks hashed (a Job "backup-28123456") is kept whole.
		if h := pod.Labels[labelTemplateHash]; ref.Kind == "ReplicaSet" && h != "" {
			if base, ok := strings.CutSuffix(ref.Name, "-"+h); ok && base != "" {
				return base
			}
		}
		return ref.Name
	}
	return pod.Name
}
