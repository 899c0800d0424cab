package sim

import (
	"cmp"
	"net/netip"
	"slices"

	"github.com/flowlens/flowlens/collector/attribute"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

// The strategies, as the report names them.
const (
	Heartbeat   = "heartbeat"
	EventOnly   = "event-only"
	EventOpen   = "event-open"
	LatestOwner = "latest-owner"
)

// Strategies names the strategies in the order of the report.
var Strategies = []string{Heartbeat, EventOnly, EventOpen, LatestOwner}

// decision is what a strategy decided for one arrived record.
type decision struct {
	owner    int32 // in owners; 0 (nobody): UNATTRIBUTED
	evidence flow.Attribution
	at       int64
}

// owners numbers workloads so that a decision holds 4 bytes instead of six strings; 0 is nobody.
type owners struct {
	ids map[flow.Workload]int32
	all []flow.Workload
}

func newOwners() *owners {
	return &owners{ids: map[flow.Workload]int32{{}: 0}, all: []flow.Workload{{}}}
}

func (o *owners) id(w flow.Workload) int32 {
	id, ok := o.ids[w]
	if !ok {
		id = int32(len(o.all))
		o.ids[w] = id
		o.all = append(o.all, w)
	}
	return id
}

// strategy is one way of attributing remote addresses, driven by the replay in arrival order.
type strategy interface {
	// advance moves the clock to now: whatever was due before now is decided with what is known.
	advance(now int64)
	// claim learns an ownership claim derived from the event feed.
	claim(c index.Claim)
	// observe sees a raw feed item (event-open and latest-owner read the feed themselves).
	observe(it FeedItem)
	// arrive receives an arrived batch; ids number its records.
	arrive(now int64, recs []flow.Record, ids []int)
}

// replay runs the strategies over t in arrival order and returns each one's decision per arrived
// record, the records, their arrivals, and the records' ground truth, owners numbered by o.
func replay(t *Trace, cfg Config, o *owners) (recs []flow.Record, truth []int32, arrivals []int64, out [][]decision) {
	for _, b := range t.Batches {
		if !b.Lost {
			for _, r := range b.Recs {
				recs = append(recs, t.Record(r))
				truth = append(truth, o.id(t.Truth(r)))
				arrivals = append(arrivals, b.Arrival)
			}
		}
	}
	out = make([][]decision, len(Strategies))
	for i := range out {
		out[i] = make([]decision, len(recs))
	}
	static := func(x *index.Index) *index.Index {
		for _, s := range t.Services {
			x.Add(index.Claim{IP: s.IP, Start: t.Start, End: t.End + int64(cfg.Duration), Owner: s.Owner, Evidence: index.EvidenceService})
		}
		x.SetCIDRs(t.CIDRs)
		return x
	}
	icfg := index.Config{MergeGap: cfg.MergeGap}
	if cfg.MergeGap == 0 {
		icfg.MergeGap = 1 // the index reads 0 as its default; 1 ns is "no gap"
	}
	strategies := []strategy{
		newHeartbeatStrategy(static(index.New(icfg)), int64(cfg.deadline()), out[0], o),
		&eventOnly{idx: static(index.New(icfg)), out: out[1], owners: o},
		&eventOpen{idx: static(index.New(icfg)), pods: t.Pods, first: make([]int64, len(t.Pods)), done: make([]bool, len(t.Pods)), out: out[2], owners: o},
		&latestOwner{pods: t.Pods, owner: map[netip.Addr]int32{}, gone: map[int32]bool{}, static: static(index.New(icfg)), out: out[3], owners: o},
	}
	w := watcher{t: t, margin: int64(cfg.EventMargin), lag: int64(cfg.ResyncLag), state: make([]watchState, len(t.Pods))}
	next := 0 // the next record's id
	fi := 0
	for _, b := range t.Batches {
		if b.Lost {
			continue
		}
		// Events that arrived before (or with) the batch come first.
		for ; fi < len(t.Feed) && t.Feed[fi].At <= b.Arrival; fi++ {
			feed(strategies, &w, t.Feed[fi])
		}
		for _, s := range strategies {
			s.advance(b.Arrival)
		}
		ids := make([]int, len(b.Recs))
		for i := range ids {
			ids[i] = next
			next++
		}
		for _, s := range strategies {
			s.arrive(b.Arrival, recs[ids[0]:next], ids)
		}
	}
	for ; fi < len(t.Feed); fi++ {
		feed(strategies, &w, t.Feed[fi])
	}
	for _, s := range strategies {
		s.advance(1<<63 - 1)
	}
	return recs, truth, arrivals, out
}

func feed(strategies []strategy, w *watcher, it FeedItem) {
	for _, s := range strategies {
		s.advance(it.At)
	}
	claims := w.observe(it)
	for _, s := range strategies {
		for _, c := range claims {
			s.claim(c)
		}
		s.observe(it)
	}
}

// watcher turns the feed into POD_EVENT claims by sonar/kube's rules (sonar/kube/source.go; keep the
// two in step): a claim covers only times for which the watcher holds positive evidence.
//   - A pod's range starts at its network-ready transition (the kubelet's timestamp: true time on the
//     node's clock), or at the observation if that is earlier.
//   - Each event showing the pod with its IP extends the range to the event's receipt (less margin),
//     never past the pod's deletion request once one has been seen.
//   - A completed pod's range ends at its finish (node clock), never later than the observation; a pod
//     first seen completed claims nothing.
//   - A deleted pod's range ends at its deletion request, else at the observation; a pod found gone by
//     a relist (DeletedFinalStateUnknown) claims nothing more.
//   - A resync extends every cached, running pod to ResyncLag before the tick, unless the watch failed
//     within that lag; it never starts a range.
type watcher struct {
	t          *Trace
	margin     int64
	lag        int64
	state      []watchState
	cached     []int32 // pods seen and neither completed nor forgotten, in order of first sight
	lastFailed int64   // receipt of the latest watch error
}

type watchState struct {
	known, claimed, done bool
	start, end           int64
	until                int64 // the deletion request, once seen
}

// observe applies one feed item and returns the claims it makes.
func (w *watcher) observe(it FeedItem) []index.Claim {
	switch it.Kind {
	case FeedWatchError:
		w.lastFailed = it.At
		return nil
	case FeedResync:
		at := it.At - w.lag
		if w.lastFailed >= at {
			return nil // the cache may be stale: held back
		}
		var claims []index.Claim
		keep := w.cached[:0]
		for _, pod := range w.cached {
			if s := &w.state[pod]; s.known && !s.done {
				keep = append(keep, pod)
				claims = w.extend(claims, pod, s.capped(at), it.At)
			}
		}
		w.cached = keep
		return claims
	}
	s := &w.state[it.Pod]
	p := &w.t.Pods[it.Pod]
	off := w.t.Offsets[p.Node]
	switch it.Kind {
	case FeedUnknownDelete:
		s.known, s.done = false, true
		return nil
	case FeedDeleted:
		if p.Job && !p.Running && it.Of >= p.End {
			return w.complete(it) // a completed job's delete shows it completed
		}
	case FeedCompleted:
		return w.complete(it)
	}
	if s.done {
		return nil
	}
	if p.Terminating > 0 && it.Of >= p.Terminating && (s.until == 0 || p.Terminating < s.until) {
		s.until = p.Terminating // deletionTimestamp less the grace period, stamped by the API server
	}
	at := s.capped(it.At - w.margin)
	if !s.known {
		s.known = true
		s.start = min(p.Start+off, s.capped(it.At)) // the margin shortens the end only
		s.end = s.start
		w.cached = append(w.cached, it.Pod)
	}
	claims := w.extend(nil, it.Pod, at, it.At)
	if it.Kind == FeedDeleted {
		s.known, s.done = false, true
	}
	return claims
}

// complete closes a completed pod's range at its finish, never later than the observation.
func (w *watcher) complete(it FeedItem) []index.Claim {
	s := &w.state[it.Pod]
	p := &w.t.Pods[it.Pod]
	if !s.known || s.done {
		return nil
	}
	end := min(s.capped(it.At-w.margin), p.End+w.t.Offsets[p.Node])
	s.done = true
	return w.extend(nil, it.Pod, end, it.At)
}

func (s *watchState) capped(at int64) int64 {
	if s.until != 0 && s.until < at {
		return s.until
	}
	return at
}

// extend claims [start, end) when end moves the pod's range on (or it was never claimed).
func (w *watcher) extend(claims []index.Claim, pod int32, end, seen int64) []index.Claim {
	s := &w.state[pod]
	if end < s.start || s.claimed && end <= s.end {
		return claims
	}
	s.end, s.claimed = end, true
	p := &w.t.Pods[pod]
	return append(claims, index.Claim{IP: p.IP, Start: s.start, End: end, Owner: p.W, Evidence: index.EvidencePodEvent, Seen: seen})
}

// heartbeatStrategy is flowlens: every arrived record is a heartbeat; a record's remote side is
// resolved at arrival and again whenever a heartbeat for its address arrives, until its deadline.
type heartbeatStrategy struct {
	idx      *index.Index
	deadline int64
	out      []decision
	queue    []*parked // by deadline (arrival order)
	head     int
	byIP     map[netip.Addr][]*parked
	owners   *owners
}

type parked struct {
	id       int
	rec      flow.Enriched
	deadline int64
	done     bool
}

func newHeartbeatStrategy(idx *index.Index, deadline int64, out []decision, o *owners) *heartbeatStrategy {
	return &heartbeatStrategy{idx: idx, deadline: deadline, out: out, byIP: map[netip.Addr][]*parked{}, owners: o}
}

func (h *heartbeatStrategy) advance(now int64) {
	for ; h.head < len(h.queue) && h.queue[h.head].deadline <= now; h.head++ {
		p := h.queue[h.head]
		h.queue[h.head] = nil
		if !p.done {
			attribute.Resolve(h.idx, &p.rec, true)
			h.decide(p, p.deadline)
		}
	}
	if h.head > 1024 && h.head > len(h.queue)/2 {
		h.queue = append(h.queue[:0], h.queue[h.head:]...)
		h.head = 0
	}
}

func (h *heartbeatStrategy) decide(p *parked, at int64) {
	p.done = true
	h.out[p.id] = decision{owner: h.owners.id(p.rec.RemoteWorkload), evidence: p.rec.Attribution, at: at}
}

func (h *heartbeatStrategy) claim(c index.Claim) { h.idx.Add(c) }
func (h *heartbeatStrategy) observe(FeedItem)    {}

func (h *heartbeatStrategy) arrive(now int64, recs []flow.Record, ids []int) {
	var touched []netip.Addr
	for i := range recs {
		if c, ok := attribute.Heartbeat(&recs[i]); ok {
			h.idx.Add(c)
			touched = append(touched, c.IP)
		}
	}
	for i := range recs {
		p := &parked{id: ids[i], rec: flow.Enriched{Record: recs[i]}, deadline: now + h.deadline}
		if attribute.Resolve(h.idx, &p.rec, false) {
			h.decide(p, now)
			continue
		}
		h.queue = append(h.queue, p)
		ip, _ := attribute.RemoteKey(&p.rec.Record)
		h.byIP[ip] = append(h.byIP[ip], p)
	}
	// Only a heartbeat for a parked record's address can change its answer before the deadline.
	for _, ip := range touched {
		list, ok := h.byIP[ip]
		if !ok {
			continue
		}
		keep := list[:0]
		for _, p := range list {
			if p.done {
				continue
			}
			if attribute.Resolve(h.idx, &p.rec, false) {
				h.decide(p, now)
				continue
			}
			keep = append(keep, p)
		}
		if len(keep) == 0 {
			delete(h.byIP, ip)
		} else {
			h.byIP[ip] = keep
		}
	}
}

// eventOnly is a system without heartbeats: the index knows only the event feed, services and CIDRs,
// and whatever it answers when a record arrives is final.
type eventOnly struct {
	idx    *index.Index
	out    []decision
	owners *owners
}

func (e *eventOnly) advance(int64)       {}
func (e *eventOnly) claim(c index.Claim) { e.idx.Add(c) }
func (e *eventOnly) observe(FeedItem)    {}
func (e *eventOnly) arrive(now int64, recs []flow.Record, ids []int) {
	decideNow(e.idx, e.out, e.owners, now, recs, ids)
}

// decideNow takes whatever the index answers for each record as final.
func decideNow(idx *index.Index, out []decision, o *owners, now int64, recs []flow.Record, ids []int) {
	for i := range recs {
		r := flow.Enriched{Record: recs[i]}
		attribute.Resolve(idx, &r, true)
		out[ids[i]] = decision{owner: o.id(r.RemoteWorkload), evidence: r.Attribution, at: now}
	}
}

// eventOpen is a system without heartbeats that reads the feed the usual way: a pod holds its IP from
// its observed assignment until its completion or removal is observed, so while neither has been seen
// its claim reaches the present. The same index; answers final when a record arrives.
type eventOpen struct {
	idx      *index.Index
	pods     []Pod
	first    []int64 // first observation of each pod running; 0: none yet
	done     []bool
	believed []int32 // pods observed running, not yet seen completed or removed
	out      []decision
	owners   *owners
}

func (e *eventOpen) advance(int64)     {}
func (e *eventOpen) claim(index.Claim) {}
func (e *eventOpen) observe(it FeedItem) {
	if it.Pod < 0 || e.done[it.Pod] {
		return
	}
	e.done[it.Pod] = it.Kind != FeedUpdate
	if e.first[it.Pod] == 0 {
		if e.done[it.Pod] {
			return // first seen completed or gone: never believed to hold the IP
		}
		e.first[it.Pod] = it.At
		e.believed = append(e.believed, it.Pod)
	}
	e.extend(it.Pod, it.At)
}

func (e *eventOpen) extend(pod int32, to int64) {
	p := &e.pods[pod]
	e.idx.Add(index.Claim{IP: p.IP, Start: e.first[pod], End: to, Owner: p.W, Evidence: index.EvidencePodEvent})
}

func (e *eventOpen) arrive(now int64, recs []flow.Record, ids []int) {
	keep := e.believed[:0]
	for _, pod := range e.believed {
		if !e.done[pod] {
			e.extend(pod, now)
			keep = append(keep, pod)
		}
	}
	e.believed = keep
	decideNow(e.idx, e.out, e.owners, now, recs, ids)
}

// latestOwner keeps an IP → pod map that every event showing a pod with its IP overwrites (a completed
// pod still shows its IP, and a resync replays every cached pod, in no particular order) and a pod's
// deletion clears, and attributes a record to whoever the map names when it arrives, with no notion of
// time. Addresses not in the map go to services and CIDRs.
type latestOwner struct {
	pods   []Pod
	owner  map[netip.Addr]int32
	gone   map[int32]bool // deletions seen: a late event of a deleted pod is not believed
	cached []int32
	static *index.Index
	out    []decision
	owners *owners
}

func (l *latestOwner) advance(int64)     {}
func (l *latestOwner) claim(index.Claim) {}
func (l *latestOwner) observe(it FeedItem) {
	switch {
	case it.Kind == FeedResync:
		keep := l.cached[:0]
		for _, pod := range l.cached {
			if !l.gone[pod] {
				keep = append(keep, pod)
			}
		}
		l.cached = keep
		// A cache's order is a map's: scramble it, deterministically.
		order := slices.Clone(keep)
		h := func(pod int32) uint64 { return (uint64(pod) ^ uint64(it.At)) * 0x9e3779b97f4a7c15 }
		slices.SortFunc(order, func(a, b int32) int { return cmp.Compare(h(a), h(b)) })
		for _, pod := range order {
			l.owner[l.pods[pod].IP] = pod
		}
		return
	case it.Pod < 0 || l.gone[it.Pod]:
		return
	}
	ip := l.pods[it.Pod].IP
	if !slices.Contains(l.cached, it.Pod) {
		l.cached = append(l.cached, it.Pod)
	}
	if it.Kind == FeedDeleted || it.Kind == FeedUnknownDelete {
		l.gone[it.Pod] = true
		if o, ok := l.owner[ip]; ok && o == it.Pod {
			delete(l.owner, ip)
		}
		return
	}
	l.owner[ip] = it.Pod
}

func (l *latestOwner) arrive(now int64, recs []flow.Record, ids []int) {
	for i := range recs {
		ip, at := attribute.RemoteKey(&recs[i])
		d := decision{evidence: flow.AttributionUnattributed, at: now}
		if pod, ok := l.owner[ip]; ok {
			d.owner, d.evidence = l.owners.id(l.pods[pod].W), flow.AttributionPodEvent
		} else if a := l.static.Lookup(ip, at); a.Status == index.Owned {
			d.owner, d.evidence = l.owners.id(a.Range.Owner), flow.Attribution(a.Range.Evidence)
		}
		l.out[ids[i]] = d
	}
}
