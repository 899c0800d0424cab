// Package podid names the local workload of a record by its Kubernetes pod, for a host-scope exporter
// running as a DaemonSet: one exporter per node speaks for every pod on it, so each record's pod must
// be found from the record itself. In order:
//
//  1. the socket's cgroup: the cgroup id (the inode of its cgroup v2 directory) maps to a path, and the
//     kubelet's cgroup names carry the pod UID (see PodUID). Exact: the process that made the socket
//     ran in that pod.
//  2. the socket's network namespace and address: a socket outside the host's namespace whose local
//     address is the pod IP of exactly one non-hostNetwork pod on this node, neither finished nor being
//     deleted, belongs to that pod.
//  3. otherwise the host's naming (exporter/hostid): host processes, and hostNetwork pods whose cgroup
//     is not a kubelet's.
//
// The pods come from an informer on this node's pods (field selector spec.nodeName). The name is
// sonar/kube.PodWorkload, the rule the injector gives a sidecar, so the DaemonSet and a sidecar name
// one pod identically. A pod the cache does not hold yet never blocks a record: it gets what is known
// (a workload with only the pod UID, or the host's naming) and is counted by reason.
package podid

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/kube"
)

// keepDeleted is how long a deleted pod's workload still names records found by its cgroup: the
// final records of its connections arrive after the API has forgotten it. A UID is never reused, so
// this cannot misname; addresses are, and are forgotten at once.
const keepDeleted = 5 * time.Minute

// HostNamer names what is not a pod's; *hostid.Namer is one.
type HostNamer interface {
	Workload(*flow.Record) flow.Workload
}

// Config says which node's pods to watch and how to name them.
type Config struct {
	Node    string // this node's name: only its pods are watched
	Cluster string // flow.Workload.Cluster of every workload
	// HostNetns is the inode of the host's network namespace: sockets in it are never matched by address.
	HostNetns uint32
	// CgroupFS is where cgroups are mounted; its cgroup v2 hierarchy is found below it. Default /sys/fs/cgroup.
	CgroupFS string
}

// Namer names records' local workloads by pod. Safe for concurrent use. Create it with New, then Start.
type Namer struct {
	cfg     Config
	host    HostNamer
	client  kubernetes.Interface
	log     *zap.Logger
	cgroups cgroups

	mu      sync.RWMutex
	byUID   map[types.UID]*pod
	byIP    map[netip.Addr][]*pod // running non-hostNetwork pods; more than one is ambiguous
	deleted []*pod                // in deletion order, for expiry
	synced  atomic.Bool

	informer cache.SharedIndexInformer
	factory  informers.SharedInformerFactory
	stop     context.CancelFunc

	byCgroup, byIPCount, byHost               prometheus.Counter
	notCached, ambiguous, notSynced, ipReused prometheus.Counter
}

type pod struct {
	w       flow.Workload
	ips     []netip.Addr // indexed in byIP
	created int64        // Unix ns, whole seconds (the API's creationTimestamp)
	deleted time.Time
}

// NewClient connects with the exporter's service account when kubeconfig is empty, else with the
// kubeconfig file's current context.
func NewClient(kubeconfig string) (kubernetes.Interface, error) {
	// With no kubeconfig BuildConfigFromFlags uses the in-cluster configuration.
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("podid: kubernetes client config (kubeconfig %q): %w", kubeconfig, err)
	}
	rc.UserAgent = "flowlens-exporter"
	return kubernetes.NewForConfig(rc)
}

// New returns a Namer that falls back to host; its metrics are registered on reg.
func New(client kubernetes.Interface, cfg Config, host HostNamer, reg prometheus.Registerer, log *zap.Logger) (*Namer, error) {
	if cfg.Node == "" {
		return nil, fmt.Errorf("podid: the node name is required")
	}
	if cfg.CgroupFS == "" {
		cfg.CgroupFS = "/sys/fs/cgroup"
	}
	n := &Namer{cfg: cfg, host: host, client: client, log: log,
		byUID: make(map[types.UID]*pod), byIP: make(map[netip.Addr][]*pod)}
	n.cgroups.root = CgroupRoot(cfg.CgroupFS)
	if n.cgroups.root == "" {
		log.Warn("no cgroup v2 hierarchy: pods are found by address only", zap.String("cgroup_fs", cfg.CgroupFS))
	}
	resolved := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowlens_exporter_local_workloads_total",
		Help: "Records whose local workload was named, by what named it: pod_cgroup, pod_ip or host.",
	}, []string{"by"})
	incomplete := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "flowlens_exporter_local_workload_incomplete_total",
		Help: "Records whose pod could not be named in full, by reason: pod_not_cached (its cgroup names a pod " +
			"UID the cache lacks: the record carries the UID only), pod_ip_ambiguous (two pods hold its address), " +
			"pods_not_synced (outside the host namespace before the pod list arrived: named as on a host), " +
			"pod_ip_reused (the connection started before the pod holding its address was created: an earlier " +
			"pod's, named as on a host).",
	}, []string{"reason"})
	for _, c := range []prometheus.Collector{resolved, incomplete} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("podid: register metrics: %w", err)
		}
	}
	n.byCgroup, n.byIPCount, n.byHost = resolved.WithLabelValues("pod_cgroup"), resolved.WithLabelValues("pod_ip"), resolved.WithLabelValues("host")
	n.notCached, n.ambiguous, n.notSynced = incomplete.WithLabelValues("pod_not_cached"),
		incomplete.WithLabelValues("pod_ip_ambiguous"), incomplete.WithLabelValues("pods_not_synced")
	n.ipReused = incomplete.WithLabelValues("pod_ip_reused")
	return n, nil
}

// Start runs the informer on this node's pods until ctx ends or Stop. It returns at once; WaitSynced
// waits for the first list.
func (n *Namer) Start(ctx context.Context) {
	ctx, n.stop = context.WithCancel(ctx)
	n.factory = informers.NewSharedInformerFactoryWithOptions(n.client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", n.cfg.Node).String()
		}))
	n.informer = n.factory.Core().V1().Pods().Informer()
	// The cache keeps only what naming needs: a node's pods with their managed fields and specs would
	// cost tens of kilobytes each.
	_ = n.informer.SetTransform(slim)
	_, _ = n.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { n.upsert(o) },
		UpdateFunc: func(_, o any) { n.upsert(o) },
		DeleteFunc: n.remove,
	})
	_ = n.informer.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
		n.log.Warn("pod watch", zap.Error(err))
	})
	n.factory.Start(ctx.Done())
	go func() {
		if cache.WaitForCacheSync(ctx.Done(), n.informer.HasSynced) {
			n.synced.Store(true)
		}
	}()
}

// WaitSynced waits until the pod list has been read, or ctx ends; it reports which.
func (n *Namer) WaitSynced(ctx context.Context) bool {
	return cache.WaitForCacheSync(ctx.Done(), n.informer.HasSynced)
}

// Stop ends the informer and waits for its goroutines.
func (n *Namer) Stop() {
	if n.stop != nil {
		n.stop()
		n.factory.Shutdown()
	}
}

// slim drops what naming does not read from a pod.
func slim(o any) (any, error) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return o, nil // a tombstone
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, Labels: p.Labels,
			OwnerReferences: p.OwnerReferences, ResourceVersion: p.ResourceVersion, DeletionTimestamp: p.DeletionTimestamp,
			CreationTimestamp: p.CreationTimestamp},
		Spec:   corev1.PodSpec{NodeName: p.Spec.NodeName, HostNetwork: p.Spec.HostNetwork},
		Status: corev1.PodStatus{Phase: p.Status.Phase, PodIP: p.Status.PodIP, PodIPs: p.Status.PodIPs},
	}, nil
}

func (n *Namer) upsert(o any) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	np := &pod{w: kube.PodWorkload(p, n.cfg.Cluster), created: p.CreationTimestamp.UnixNano()}
	// A finished pod's address is free for the next pod; a hostNetwork pod's is the node's. A pod being
	// deleted may release its address at any moment of its grace period, and the next pod to get it may
	// not be known yet: its address no longer names it (its cgroup still does).
	if !p.Spec.HostNetwork && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed && p.DeletionTimestamp == nil {
		np.ips = podIPs(p)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if old := n.byUID[p.UID]; old != nil {
		n.unindex(old)
	}
	n.byUID[p.UID] = np
	for _, ip := range np.ips {
		n.byIP[ip] = append(n.byIP[ip], np)
	}
}

func podIPs(p *corev1.Pod) []netip.Addr {
	var ips []netip.Addr
	add := func(s string) {
		if ip, err := netip.ParseAddr(s); err == nil {
			ip = ip.Unmap()
			for _, have := range ips {
				if have == ip {
					return
				}
			}
			ips = append(ips, ip)
		}
	}
	add(p.Status.PodIP)
	for _, i := range p.Status.PodIPs {
		add(i.IP)
	}
	return ips
}

func (n *Namer) remove(o any) {
	if t, ok := o.(cache.DeletedFinalStateUnknown); ok {
		o = t.Obj
	}
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	old := n.byUID[p.UID]
	if old == nil {
		return
	}
	n.unindex(old)
	old.ips, old.deleted = nil, now
	n.deleted = append(n.deleted, old)
	// Forget the pods deleted long enough ago; deletions come in order.
	i := 0
	for ; i < len(n.deleted) && now.Sub(n.deleted[i].deleted) > keepDeleted; i++ {
		if uid := types.UID(n.deleted[i].w.PodUID); n.byUID[uid] == n.deleted[i] {
			delete(n.byUID, uid)
		}
	}
	n.deleted = n.deleted[i:]
}

// unindex takes p's addresses out of byIP. n.mu is held.
func (n *Namer) unindex(p *pod) {
	for _, ip := range p.ips {
		held := n.byIP[ip][:0]
		for _, q := range n.byIP[ip] {
			if q != p {
				held = append(held, q)
			}
		}
		if len(held) == 0 {
			delete(n.byIP, ip)
		} else {
			n.byIP[ip] = held
		}
	}
}

// Workload names r's local side. It never waits for the API server.
func (n *Namer) Workload(r *flow.Record) flow.Workload {
	if uid := n.cgroups.podUID(r.CgroupID); uid != "" {
		n.mu.RLock()
		p := n.byUID[types.UID(uid)]
		n.mu.RUnlock()
		if p != nil {
			n.byCgroup.Inc()
			return p.w
		}
		n.notCached.Inc()
		return flow.Workload{PodUID: uid, Node: n.cfg.Node, Cluster: n.cfg.Cluster}
	}
	if r.Netns != 0 && r.Netns != n.cfg.HostNetns {
		n.mu.RLock()
		held := n.byIP[r.LocalAddr]
		var w flow.Workload
		var created int64
		if len(held) == 1 {
			w, created = held[0].w, held[0].created
		}
		n.mu.RUnlock()
		switch {
		case len(held) == 1 && r.StartTime != 0 && r.StartTime < created:
			// The address was another pod's when this connection began: a late record of a container
			// whose cgroup is gone, in a pod that has since released the address to this one.
			n.ipReused.Inc()
		case len(held) == 1:
			n.byIPCount.Inc()
			return w
		case len(held) > 1:
			n.ambiguous.Inc()
		case !n.synced.Load():
			n.notSynced.Inc()
		}
	}
	n.byHost.Inc()
	return n.host.Workload(r)
}
