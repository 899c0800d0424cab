// Package kube is sonar's Kubernetes source: shared informers on pods, services and nodes whose
// observations become ownership claims (POD_EVENT, SERVICE, NODE evidence) for the index.
//
// The project's rule is that a flow may stay unattributed but is never misattributed, so a claim
// covers only times for which the source holds positive evidence that the owner held the address:
//
//   - A range starts when the address is first observed (for a pod, at its PodReadyToStartContainers
//     condition's transition when the kubelet reports one: its sandbox, and so its IP, existed then).
//   - Each event observing the owner still holding the address extends the range to the observation.
//     A periodic resync extends the ranges of everything in the informers' caches, but only to ResyncLag
//     before the tick and only while the informer's watch reported no error since then: a cache whose
//     watch has silently stalled is stale, and client-go notices a dead watch connection within that lag.
//     A resync never starts a range.
//   - A pod that completed (Succeeded, Failed) keeps its IP in the API although the IP is free: its
//     range ends at the last container's finishedAt, never later than the observation.
//   - A deleted object's range ends at the deletion request (a pod's deletionTimestamp less its grace
//     period: the pod may release its IP at any time during the grace period), else at the
//     observation of the delete; an object whose delete was missed (DeletedFinalStateUnknown) gets no
//     more claims at all.
//   - hostNetwork pods share their node's IP: they claim nothing, the node claims it.
//
// The index merges a workload's claims into one range and sets any overlap between two owners aside as
// a conflict that answers CONFLICT, never one of them.
package kube

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

// Sink takes claims; *index.Index is one. Add reports whether the claim conflicted with another owner.
type Sink interface {
	Add(index.Claim) bool
}

// Config configures the source. Zero values take the defaults.
type Config struct {
	// Cluster names the cluster in every workload claimed (flow.Workload.Cluster).
	Cluster string `mapstructure:"cluster"`
	// Kubeconfig is the kubeconfig file for NewClient; empty: the in-cluster service account.
	Kubeconfig string `mapstructure:"kubeconfig"`
	// Resync is how often everything cached is observed again to extend its ranges. Default 30s.
	Resync time.Duration `mapstructure:"resync"`
	// ResyncLag is how far behind the tick a resync extends ranges, and how long after a watch error
	// resyncs of that kind are held back. It must exceed how long a broken watch can go unreported:
	// client-go's HTTP/2 health check finds a dead connection in about 45 s and a failing reflector
	// retries (and reports) at least every 30 s. Default 60s.
	ResyncLag time.Duration `mapstructure:"resync_lag"`
	// EventLag is how far behind its arrival a pod's watch event extends its range: an update delivered late
	// describes the object as it was when it was sent, and the pod may have released its IP since
	// (make bench-attribution finds misattributions with 30 s watch delays and no lag). It also delays
	// when a new range becomes visible. Zero: events are trusted up to their arrival. sonar's config
	// defaults it to 15s.
	EventLag time.Duration `mapstructure:"event_lag"`
}

func (c Config) withDefaults() Config {
	if c.Resync == 0 {
		c.Resync = 30 * time.Second
	}
	if c.ResyncLag == 0 {
		c.ResyncLag = 60 * time.Second
	}
	return c
}

// Validate reports a configuration that cannot work.
func (c Config) Validate() error {
	if c.Resync < 0 {
		return fmt.Errorf("kube: resync %v is negative", c.Resync)
	}
	if c.ResyncLag < 0 || c.EventLag < 0 {
		return fmt.Errorf("kube: resync_lag %v and event_lag %v must not be negative", c.ResyncLag, c.EventLag)
	}
	return nil
}

// kind is what an informer watches.
type kind uint8

const (
	kindPod kind = iota
	kindService
	kindNode
	kinds
)

var kindNames = [kinds]string{"pod", "service", "node"}

func (k kind) String() string { return kindNames[k] }

// Source feeds a Sink from a cluster's pods, services and nodes. Create it with New and call Run once.
type Source struct {
	client kubernetes.Interface
	sink   Sink
	cfg    Config
	log    *zap.Logger
	m      *metrics
	now    func() time.Time

	mu        sync.Mutex
	objs      map[key]*object
	watchErr  [kinds]time.Time // latest watch error per kind
	synced    bool
	informers [kinds]cache.SharedIndexInformer
}

type key struct {
	kind kind
	uid  types.UID
}

// object is what the source has claimed for one pod, service or node.
type object struct {
	ips   map[netip.Addr]*held
	done  bool      // a completed pod: its ranges are closed for good
	until time.Time // the earliest deletion request seen: no claim goes past it
}

// held is one address's current range, as claimed so far: [start, end).
type held struct {
	start, end int64
	claimed    bool
	owner      flow.Workload
}

// New returns a source that will watch through client and add claims to sink.
func New(client kubernetes.Interface, sink Sink, cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if client == nil || sink == nil {
		return nil, errors.New("kube: client and sink are required")
	}
	s := &Source{
		client: client,
		sink:   sink,
		cfg:    cfg.withDefaults(),
		log:    log.With(zap.String("component", "sonar-kube")),
		now:    time.Now,
		objs:   make(map[key]*object),
	}
	s.m = newMetrics(reg, s)
	return s, nil
}

// Run starts the informers, waits for their first list, then resyncs every Resync until ctx is done.
// It returns nil when ctx is cancelled after the caches synced, and an error if they never did.
func (s *Source) Run(ctx context.Context) error {
	factory := informers.NewSharedInformerFactory(s.client, 0) // no informer resync: the ticker does it, lagged
	infs := [kinds]cache.SharedIndexInformer{
		kindPod:     factory.Core().V1().Pods().Informer(),
		kindService: factory.Core().V1().Services().Informer(),
		kindNode:    factory.Core().V1().Nodes().Informer(),
	}
	for k, inf := range infs {
		k := kind(k)
		if err := inf.SetWatchErrorHandlerWithContext(func(_ context.Context, _ *cache.Reflector, err error) {
			s.watchError(k, err)
		}); err != nil {
			return fmt.Errorf("kube: %s informer: %w", k, err)
		}
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { s.event(k, "add", obj) },
			UpdateFunc: func(_, obj any) { s.event(k, "update", obj) },
			DeleteFunc: func(obj any) { s.event(k, "delete", obj) },
		}); err != nil {
			return fmt.Errorf("kube: %s informer: %w", k, err)
		}
	}
	s.mu.Lock()
	s.informers = infs
	s.mu.Unlock()

	factory.Start(ctx.Done())
	defer factory.Shutdown() // waits for the informers' goroutines
	synced := make([]cache.InformerSynced, 0, kinds)
	for _, inf := range infs {
		synced = append(synced, inf.HasSynced)
	}
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return fmt.Errorf("kube: informer caches did not sync: %w", context.Cause(ctx))
	}
	s.mu.Lock()
	s.synced = true
	s.mu.Unlock()
	s.log.Info("watching pods, services and nodes", zap.Duration("resync", s.cfg.Resync),
		zap.Duration("resync_lag", s.cfg.ResyncLag))

	t := time.NewTicker(s.cfg.Resync)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			s.resync()
		}
	}
}

// Synced reports whether the informers' first lists have been observed.
func (s *Source) Synced() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced
}

func (s *Source) watchError(k kind, err error) {
	s.m.errors.WithLabelValues(k.String(), "watch").Inc()
	s.mu.Lock()
	s.watchErr[k] = s.now()
	s.mu.Unlock()
	s.log.Warn("watch failed: resyncs held back", zap.Stringer("kind", k), zap.Error(err))
}

// event handles one informer notification. Handlers of one informer run one at a time; the three
// informers and the resync share s.mu.
func (s *Source) event(k kind, typ string, obj any) {
	s.m.events.WithLabelValues(k.String(), typ).Inc()
	now := s.now()
	if typ == "delete" {
		if _, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			// The delete happened while the watch was down, at a time nobody knows: the range ends
			// where the last observation left it.
			s.forget(k, obj)
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	at := now
	if k == kindPod {
		at = now.Add(-s.cfg.EventLag) // pods churn and hand their IPs on within seconds; services and nodes do not
	}
	s.observe(k, obj, at, now, false)
	if typ == "delete" {
		s.forgetLocked(k, obj)
	}
}

// resync extends every cached object's ranges to ResyncLag before now, kind by kind, skipping a kind
// whose watch reported an error since then or whose cache has not synced.
func (s *Source) resync() {
	now := s.now()
	at := now.Add(-s.cfg.ResyncLag)
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, inf := range s.informers {
		k := kind(k)
		if inf == nil || !inf.HasSynced() || !s.watchErr[k].Before(at) {
			s.m.skipped.WithLabelValues(k.String(), "resync_held_back").Inc()
			continue
		}
		s.m.events.WithLabelValues(k.String(), "resync").Inc()
		for _, obj := range inf.GetStore().List() {
			s.observe(k, obj, at, now, true)
		}
	}
}

// observe turns one observation of obj, made at now and trusted up to at, into claims. extendOnly
// (resync) never starts a range: the object's presence in a cache is no evidence for a time before
// the source first saw it.
func (s *Source) observe(k kind, obj any, at, now time.Time, extendOnly bool) {
	switch o := obj.(type) {
	case *corev1.Pod:
		s.pod(o, at, now, extendOnly)
	case *corev1.Service:
		s.service(o, at, now, extendOnly)
	case *corev1.Node:
		s.node(o, at, now, extendOnly)
	default:
		s.m.errors.WithLabelValues(k.String(), "unexpected_type").Inc()
	}
}

func (s *Source) pod(p *corev1.Pod, at, now time.Time, extendOnly bool) {
	if p.Spec.HostNetwork {
		s.m.skipped.WithLabelValues("pod", "host_network").Inc()
		return
	}
	k := key{kindPod, p.UID}
	switch p.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		// Closed by the event only: a resync may see the completed pod in the cache before its
		// handler runs, and its lagged time would close the range earlier than finishedAt.
		if !extendOnly {
			s.complete(k, p, at, now)
		}
		return
	case corev1.PodPending, corev1.PodRunning:
	default: // Unknown: the node stopped reporting; nothing positive to claim
		s.m.skipped.WithLabelValues("pod", "phase_unknown").Inc()
		return
	}
	var raw []string
	for _, ip := range p.Status.PodIPs {
		raw = append(raw, ip.IP)
	}
	if len(raw) == 0 && p.Status.PodIP != "" {
		raw = append(raw, p.Status.PodIP)
	}
	ips := s.parseIPs(kindPod, raw)
	if len(ips) == 0 {
		s.m.skipped.WithLabelValues("pod", "no_ip").Inc()
		return
	}
	s.claim(k, PodWorkload(p, s.cfg.Cluster), index.EvidencePodEvent, ips, networkReady(p), deletionRequest(p), at, now, extendOnly)
}

// networkReady is when the kubelet reported the pod's sandbox, and with it the pod's IP, ready: the
// PodReadyToStartContainers condition's transition to True. Zero when there is none.
func networkReady(p *corev1.Pod) time.Time {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReadyToStartContainers && c.Status == corev1.ConditionTrue {
			return c.LastTransitionTime.Time
		}
	}
	return time.Time{}
}

// complete closes a completed pod's ranges at its last container's finish, never later than at. A pod
// first seen already completed gets no claim: the source never saw it hold its IP.
func (s *Source) complete(k key, p *corev1.Pod, at, now time.Time) {
	o := s.objs[k]
	if o == nil || o.done {
		s.m.skipped.WithLabelValues("pod", "completed").Inc()
		return
	}
	end := o.capAt(at, deletionRequest(p))
	if f := finishedAt(p); !f.IsZero() && f.Before(end) {
		end = f
	}
	for ip, h := range o.ips {
		s.extend(kindPod, ip, h, index.EvidencePodEvent, end, now)
	}
	o.done, o.ips = true, nil
}

// finishedAt is the latest finish of the pod's containers; zero if none reports one.
func finishedAt(p *corev1.Pod) time.Time {
	var last time.Time
	for _, l := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses, p.Status.EphemeralContainerStatuses} {
		for _, cs := range l {
			if t := cs.State.Terminated; t != nil && t.FinishedAt.After(last) {
				last = t.FinishedAt.Time
			}
		}
	}
	return last
}

func (s *Source) service(svc *corev1.Service, at, now time.Time, extendOnly bool) {
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		s.m.skipped.WithLabelValues("service", "external_name").Inc()
		return
	}
	raw := svc.Spec.ClusterIPs
	if len(raw) == 0 && svc.Spec.ClusterIP != "" {
		raw = []string{svc.Spec.ClusterIP}
	}
	if len(raw) == 0 || raw[0] == corev1.ClusterIPNone {
		s.m.skipped.WithLabelValues("service", "headless").Inc()
		return
	}
	owner := flow.Workload{Name: svc.Name, Namespace: svc.Namespace, Cluster: s.cfg.Cluster}
	s.claim(key{kindService, svc.UID}, owner, index.EvidenceService, s.parseIPs(kindService, raw), time.Time{}, deletionRequest(svc), at, now, extendOnly)
}

func (s *Source) node(n *corev1.Node, at, now time.Time, extendOnly bool) {
	var raw []string
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP || a.Type == corev1.NodeExternalIP {
			raw = append(raw, a.Address)
		}
	}
	owner := flow.Workload{Name: n.Name, Node: n.Name, Cluster: s.cfg.Cluster}
	s.claim(key{kindNode, n.UID}, owner, index.EvidenceNode, s.parseIPs(kindNode, raw), time.Time{}, deletionRequest(n), at, now, extendOnly)
}

// deletionRequest is when obj's deletion was requested, zero if it was not: deletionTimestamp is when
// the grace period ends, so the request was that grace period earlier.
func deletionRequest(m metav1.Object) time.Time {
	ts := m.GetDeletionTimestamp()
	if ts == nil {
		return time.Time{}
	}
	req := ts.Time
	if g := m.GetDeletionGracePeriodSeconds(); g != nil {
		req = req.Add(-time.Duration(*g) * time.Second)
	}
	return req
}

// capAt keeps at no later than the earliest deletion request seen for the object: a later, shorter
// delete (a force delete after a graceful one) moves deletionTimestamp, not the moment the object
// stopped being positively there.
func (o *object) capAt(at, deleteReq time.Time) time.Time {
	if !deleteReq.IsZero() && (o.until.IsZero() || deleteReq.Before(o.until)) {
		o.until = deleteReq
	}
	if !o.until.IsZero() && o.until.Before(at) {
		return o.until
	}
	return at
}

func (s *Source) parseIPs(k kind, raw []string) []netip.Addr {
	ips := make([]netip.Addr, 0, len(raw))
	for _, r := range raw {
		ip, err := netip.ParseAddr(r)
		if err != nil {
			s.m.errors.WithLabelValues(k.String(), "bad_ip").Inc()
			continue
		}
		if !slices.Contains(ips, ip.Unmap()) {
			ips = append(ips, ip.Unmap())
		}
	}
	return ips
}

// claim records that owner holds ips as of at (capped at a deletion request). A new address's range
// starts at startHint when that is set and not after at, else at; addresses the object no longer lists
// stop being extended.
func (s *Source) claim(k key, owner flow.Workload, ev index.Evidence, ips []netip.Addr, startHint, deleteReq, at, now time.Time, extendOnly bool) {
	o := s.objs[k]
	if o == nil {
		if extendOnly {
			return
		}
		o = &object{ips: make(map[netip.Addr]*held)}
		s.objs[k] = o
	}
	if o.done {
		return
	}
	at = o.capAt(at, deleteReq)
	for ip := range o.ips {
		if !slices.Contains(ips, ip) {
			delete(o.ips, ip)
		}
	}
	for _, ip := range ips {
		h := o.ips[ip]
		if h == nil {
			if extendOnly {
				continue
			}
			// From the observation (now), never from a lagged time before it: the lag only holds the
			// end back. A range whose end has not caught up with its start is claimed later.
			start := now
			if !startHint.IsZero() && !startHint.After(now) {
				start = startHint
			}
			h = &held{start: start.UnixNano(), end: start.UnixNano(), owner: owner}
			o.ips[ip] = h
		} else if h.owner != owner {
			// Relabelled (or moved): the new name from the end of the old range on, so the two never overlap.
			h.start, h.owner, h.claimed = h.end, owner, false
		}
		s.extend(k.kind, ip, h, ev, at, now)
	}
}

// extend claims [h.start, end) when end moves the range on (or it was never claimed).
func (s *Source) extend(k kind, ip netip.Addr, h *held, ev index.Evidence, end, now time.Time) {
	e := end.UnixNano()
	if e < h.start || (h.claimed && e <= h.end) {
		return
	}
	h.end, h.claimed = e, true
	s.m.claims.WithLabelValues(k.String()).Inc()
	if s.sink.Add(index.Claim{IP: ip, Start: h.start, End: e, Owner: h.owner, Evidence: ev, Seen: now.UnixNano()}) {
		s.m.conflicts.WithLabelValues(k.String()).Inc()
	}
}

func (s *Source) forget(k kind, obj any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.forgetLocked(k, obj)
}

func (s *Source) forgetLocked(k kind, obj any) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if m, ok := obj.(interface{ GetUID() types.UID }); ok {
		delete(s.objs, key{k, m.GetUID()})
	}
}

// tracked is how many objects hold ranges the source may still extend.
func (s *Source) tracked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.objs)
}
