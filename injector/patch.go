package injector

import (
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/flowlens/flowlens/sonar/kube"
)

// The opt-in and opt-out marks.
const (
	// NamespaceLabel with value NamespaceEnabled opts every pod of a namespace in.
	NamespaceLabel   = "flowlens.io/inject"
	NamespaceEnabled = "enabled"
	// PodAnnotation "true" opts a pod in wherever it runs; "false" opts it out of its namespace's choice.
	PodAnnotation = "flowlens.io/inject"
	// InjectedAnnotation records which image was injected, for people reading the pod.
	InjectedAnnotation = "flowlens.io/injected"
)

// Volume names the sidecar mounts; a pod that already has one of them is left alone.
const (
	VolumeBTF     = "flowlens-btf"
	VolumeTracefs = "flowlens-tracefs"
)

// Decision is why a pod is or is not injected; it is also the outcome label of the admissions metric.
type Decision string

const (
	Inject          Decision = "injected"
	OptedOut        Decision = "opted_out"
	NotSelected     Decision = "not_selected"
	AlreadyInjected Decision = "already_injected"
)

// Decide says whether pod gets the sidecar; nsEnabled says its namespace carries the opt-in label.
// A pod that has a container or init container named sidecarName already has it, whoever added it.
func Decide(pod *corev1.Pod, nsEnabled bool, sidecarName string) Decision {
	for _, cs := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for _, c := range cs {
			if c.Name == sidecarName {
				return AlreadyInjected
			}
		}
	}
	switch pod.Annotations[PodAnnotation] {
	case "false":
		return OptedOut
	case "true":
		return Inject
	}
	if nsEnabled {
		return Inject
	}
	return NotSelected
}

// PatchOp is one RFC 6902 JSON patch operation.
type PatchOp struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// Patch is the JSON patch that adds the sidecar, its volumes and the injected annotation to pod.
func Patch(pod *corev1.Pod, cfg Config) ([]PatchOp, error) {
	for _, v := range pod.Spec.Volumes {
		if v.Name == VolumeBTF || v.Name == VolumeTracefs {
			return nil, fmt.Errorf("pod already has a volume named %s", v.Name)
		}
	}
	c, err := Container(pod, cfg)
	if err != nil {
		return nil, err
	}
	var ops []PatchOp
	switch {
	case !cfg.Sidecar.Native:
		ops = append(ops, PatchOp{Op: "add", Path: "/spec/containers/-", Value: c})
	case len(pod.Spec.InitContainers) == 0:
		ops = append(ops, PatchOp{Op: "add", Path: "/spec/initContainers", Value: []corev1.Container{c}})
	default:
		// First, so it runs while the other init containers do.
		ops = append(ops, PatchOp{Op: "add", Path: "/spec/initContainers/0", Value: c})
	}
	if len(pod.Spec.Volumes) == 0 {
		// "-" appends to an existing array only.
		ops = append(ops, PatchOp{Op: "add", Path: "/spec/volumes", Value: Volumes()})
	} else {
		for _, v := range Volumes() {
			ops = append(ops, PatchOp{Op: "add", Path: "/spec/volumes/-", Value: v})
		}
	}
	if pod.Annotations == nil {
		ops = append(ops, PatchOp{Op: "add", Path: "/metadata/annotations", Value: map[string]string{InjectedAnnotation: cfg.Sidecar.Image}})
	} else {
		ops = append(ops, PatchOp{Op: "add", Path: "/metadata/annotations/" + escapePointer(InjectedAnnotation), Value: cfg.Sidecar.Image})
	}
	return ops, nil
}

// escapePointer escapes a JSON pointer token (RFC 6901).
func escapePointer(s string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(s)
}

// Volumes are the host directories the exporter reads: the kernel's BTF (CO-RE relocation) and tracefs
// (tracepoint ids for the two syscall tracepoints). Both read-only.
func Volumes() []corev1.Volume {
	dir := corev1.HostPathDirectory
	return []corev1.Volume{
		{Name: VolumeBTF, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/sys/kernel/btf", Type: &dir}}},
		{Name: VolumeTracefs, VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/sys/kernel/tracing", Type: &dir}}},
	}
}

// Container is the flow-exporter sidecar for pod.
//
// Its workload name is computed here with the rules sonar applies to the pod's API object
// (kube.PodWorkload), so the sidecar's records and sonar's claims name the same owner. A pod created
// from generateName has no name yet at admission; the rules only reach the pod name when the pod has no
// app labels and no controlling owner, and then the name is left to the kubelet: "$(FLOWLENS_WORKLOAD_POD)"
// expands to the downward-API pod name, which is what sonar computes once the pod exists.
func Container(pod *corev1.Pod, cfg Config) (corev1.Container, error) {
	res, err := resources(cfg.Sidecar)
	if err != nil {
		return corev1.Container{}, err
	}
	name := kube.PodWorkload(pod, cfg.Cluster).Name
	if name == "" {
		name = "$(FLOWLENS_WORKLOAD_POD)"
	}
	field := func(env, path string) corev1.EnvVar {
		return corev1.EnvVar{Name: env, ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{APIVersion: "v1", FieldPath: path}}}
	}
	env := []corev1.EnvVar{
		// FLOWLENS_WORKLOAD_POD comes first: FLOWLENS_WORKLOAD_NAME may refer to it.
		field("FLOWLENS_WORKLOAD_POD", "metadata.name"),
		field("FLOWLENS_WORKLOAD_NAMESPACE", "metadata.namespace"),
		field("FLOWLENS_WORKLOAD_POD_UID", "metadata.uid"),
		field("FLOWLENS_WORKLOAD_NODE", "spec.nodeName"),
		field("FLOWLENS_POD_IP", "status.podIP"),
		{Name: "FLOWLENS_WORKLOAD_NAME", Value: name},
		{Name: "FLOWLENS_WORKLOAD_CLUSTER", Value: cfg.Cluster},
		// A sidecar shares its pod's network namespace and reports only it.
		{Name: "FLOWLENS_SCOPE", Value: "netns"},
		{Name: "FLOWLENS_OUTPUT", Value: "collector"},
		{Name: "FLOWLENS_COLLECTOR_TRANSPORT", Value: cfg.Collector.Transport},
	}
	if cfg.Collector.GRPCAddr != "" {
		env = append(env, corev1.EnvVar{Name: "FLOWLENS_COLLECTOR_GRPC_ADDR", Value: cfg.Collector.GRPCAddr})
	}
	if cfg.Collector.HTTPSURL != "" {
		env = append(env, corev1.EnvVar{Name: "FLOWLENS_COLLECTOR_HTTPS_URL", Value: cfg.Collector.HTTPSURL})
	}
	if cfg.Collector.Insecure {
		env = append(env, corev1.EnvVar{Name: "FLOWLENS_COLLECTOR_INSECURE", Value: "true"})
	}
	if cfg.Collector.CAPEM != "" {
		env = append(env, corev1.EnvVar{Name: "FLOWLENS_COLLECTOR_CA_PEM", Value: cfg.Collector.CAPEM})
	}
	no, yes, root := false, true, int64(0)
	var restart *corev1.ContainerRestartPolicy
	if cfg.Sidecar.Native {
		always := corev1.ContainerRestartPolicyAlways
		restart = &always
	}
	return corev1.Container{
		Name:            cfg.Sidecar.Name,
		Image:           cfg.Sidecar.Image,
		ImagePullPolicy: corev1.PullPolicy(cfg.Sidecar.PullPolicy),
		RestartPolicy:   restart,
		Env:             env,
		Resources:       res,
		VolumeMounts: []corev1.VolumeMount{
			{Name: VolumeBTF, MountPath: "/sys/kernel/btf", ReadOnly: true},
			{Name: VolumeTracefs, MountPath: "/sys/kernel/tracing", ReadOnly: true},
		},
		SecurityContext: &corev1.SecurityContext{
			// uid 0 owns tracefs's files; every capability but the two the loader needs is dropped
			// (README "Sidecar privileges").
			RunAsUser:                &root,
			RunAsNonRoot:             &no,
			Privileged:               &no,
			AllowPrivilegeEscalation: &no,
			ReadOnlyRootFilesystem:   &yes,
			Capabilities: &corev1.Capabilities{
				Drop: []corev1.Capability{"ALL"},
				Add:  []corev1.Capability{"BPF", "PERFMON"},
			},
		},
	}, nil
}

func resources(s Sidecar) (corev1.ResourceRequirements, error) {
	var errs []error
	q := func(what, v string) resource.Quantity {
		r, err := resource.ParseQuantity(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("sidecar %s %q: %w", what, v, err))
		}
		return r
	}
	r := corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: q("cpu_request", s.CPURequest), corev1.ResourceMemory: q("memory_request", s.MemoryRequest)},
		Limits:   corev1.ResourceList{corev1.ResourceCPU: q("cpu_limit", s.CPULimit), corev1.ResourceMemory: q("memory_limit", s.MemoryLimit)},
	}
	return r, errors.Join(errs...)
}
