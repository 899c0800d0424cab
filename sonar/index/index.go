// Package index is sonar's ownership index: per IP address, the time ranges during which a workload
// owned it, each with the evidence it was learned from, and lookups by address and time.
//
// Every IP holds two lists of non-overlapping ranges sorted by start: one built from heartbeats (flows
// the owner itself reported from that address) and one from events (Kubernetes pods, services and
// nodes). Heartbeats outrank events: a lookup answers from the heartbeat list when a range there covers
// the time, and from the event list only otherwise. A static CIDR table answers last.
//
// A claim that overlaps a range of a different owner in the same list is a conflict. It is never
// resolved silently: the overlapping part is kept aside, counted, and a lookup whose time falls in it
// answers Conflict with both owners, so the flow stays unattributed rather than misattributed.
//
// Index is safe for concurrent use: addresses are spread over shards, each under its own RWMutex.
package index

import (
	"cmp"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowlens/flowlens/internal/flow"
)

// Evidence is what a range was learned from, strongest first. The values match flow.Attribution and
// the sonar protocol's Evidence enum.
type Evidence uint8

const (
	EvidenceNone      Evidence = iota
	EvidenceHeartbeat          // flows the owner itself reported from the address
	EvidencePodEvent           // a Kubernetes pod's status
	EvidenceService            // a Kubernetes service's cluster IP
	EvidenceNode               // a Kubernetes node's address
	EvidenceCIDR               // a static CIDR table
)

func (e Evidence) String() string { return flow.Attribution(e).String() }

// Range says that Owner held the address during [Start, End), Unix nanoseconds.
type Range struct {
	Start, End int64
	LastSeen   int64 // Unix nanoseconds of the latest evidence merged into the range
	Owner      flow.Workload
	Evidence   Evidence
}

// Claim is one piece of evidence: IP belonged to Owner during [Start, End). A heartbeat's End is the
// flow's end time; an event's End is the latest time the event source saw the owner still holding it.
type Claim struct {
	IP         netip.Addr
	Start, End int64
	Owner      flow.Workload
	Evidence   Evidence
	Seen       int64 // when the evidence was produced; 0 means End
}

// Status is a lookup's outcome.
type Status uint8

const (
	Unknown  Status = iota // nothing covers the time
	Owned                  // Range holds the owner
	Conflict               // ranges of different owners cover the time: see Conflicting
)

func (s Status) String() string { return [...]string{"UNKNOWN", "OWNER", "CONFLICT"}[s] }

// Answer is the result of one lookup.
type Answer struct {
	Status      Status
	Range       Range   // the owning range when Status is Owned
	Conflicting []Range // the ranges that disagree when Status is Conflict
}

// Config bounds the index. Zero values take the defaults.
type Config struct {
	// MergeGap is how far apart two claims of the same owner may be and still merge into one range.
	// Default 30s: longer than an exporter's flush interval, so a busy workload keeps one range.
	MergeGap time.Duration
	// MaxAge drops ranges that ended longer ago than this (see Expire). Default 24h.
	MaxAge time.Duration
	// MaxRanges caps the ranges held; past it Expire drops the oldest first. Default 4M (about 200 MiB).
	MaxRanges int
}

func (c Config) withDefaults() Config {
	if c.MergeGap == 0 {
		c.MergeGap = 30 * time.Second
	}
	if c.MaxAge == 0 {
		c.MaxAge = 24 * time.Hour
	}
	if c.MaxRanges == 0 {
		c.MaxRanges = 4 << 20
	}
	return c
}

const shards = 64

// Index is the ownership index. The zero value is not usable: call New.
type Index struct {
	cfg    Config
	gap    int64
	owners owners
	shards [shards]shard
	cidrs  atomic.Pointer[[]cidrRange]

	ranges    atomic.Int64 // held, conflicts included
	conflicts atomic.Int64 // claims (or parts of claims) that overlapped a different owner
	claims    atomic.Int64
}

// span is a range as stored: 32 bytes, the owner interned.
type span struct {
	start, end, seen int64
	owner            uint32
	ev               Evidence
}

// entry is one address's ranges: [0] from heartbeats, [1] from pod, service and node events.
type entry [2]list

// list is one class of evidence: ranges non-overlapping and sorted by start, and the parts of claims
// that overlapped a different owner, unsorted.
type list struct {
	ranges, conflicts []span
}

func class(ev Evidence) int {
	if ev == EvidenceHeartbeat {
		return 0
	}
	return 1
}

type shard struct {
	mu sync.RWMutex
	m  map[netip.Addr]*entry
}

// New returns an empty index.
func New(cfg Config) *Index {
	x := &Index{cfg: cfg.withDefaults()}
	x.gap = int64(x.cfg.MergeGap)
	x.owners.ids = make(map[flow.Workload]uint32)
	for i := range x.shards {
		x.shards[i].m = make(map[netip.Addr]*entry)
	}
	return x
}

func (x *Index) shard(ip netip.Addr) *shard {
	b := ip.As16()
	// The low bytes vary most between neighbours in a pod CIDR.
	return &x.shards[(uint(b[15])^uint(b[14])<<3^uint(b[13])<<5)%shards]
}

// Add records a claim and reports whether any part of it conflicted with a different owner. Claims of
// CIDR evidence are refused (use SetCIDRs); so are empty or inverted ranges and invalid addresses.
func (x *Index) Add(c Claim) (conflict bool) {
	if !c.IP.IsValid() || c.End < c.Start || c.Evidence == EvidenceNone || c.Evidence >= EvidenceCIDR {
		return false
	}
	if c.End == c.Start {
		c.End++ // a zero-length flow still shows the address in use at that instant
	}
	if c.Seen == 0 {
		c.Seen = c.End
	}
	x.claims.Add(1)
	owner := x.owners.id(c.Owner)
	s := x.shard(c.IP.Unmap())
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[c.IP.Unmap()]
	if e == nil {
		e = &entry{}
		s.m[c.IP.Unmap()] = e
	}
	l := &e[class(c.Evidence)]
	before := len(l.ranges) + len(l.conflicts)
	conflict = x.insert(&l.ranges, &l.conflicts, span{start: c.Start, end: c.End, seen: c.Seen, owner: owner, ev: c.Evidence})
	x.ranges.Add(int64(len(l.ranges) + len(l.conflicts) - before))
	return conflict
}

// insert adds s to the sorted list: the parts of s that overlap another owner's ranges go to conflicts,
// the rest merges with the same owner's ranges within the merge gap (never across another owner's range).
func (x *Index) insert(list, conflicts *[]span, s span) (conflict bool) {
	l := *list
	// Fast path, the common case: the same owner extends or repeats its latest range.
	if n := len(l); n > 0 {
		last := &l[n-1]
		if last.owner == s.owner && s.start >= last.start && s.start <= last.end+x.gap {
			last.end = max(last.end, s.end)
			last.seen = max(last.seen, s.seen)
			last.ev = min(last.ev, s.ev)
			return false
		}
	}
	// Cut s into the pieces no other owner covers; the covered parts are conflicts.
	pieces := []span{s}
	for _, r := range l {
		if r.owner == s.owner || r.end <= s.start || r.start >= s.end {
			continue
		}
		var next []span
		for _, p := range pieces {
			lo, hi := max(p.start, r.start), min(p.end, r.end)
			if lo >= hi {
				next = append(next, p)
				continue
			}
			c := p
			c.start, c.end = lo, hi
			*conflicts = append(*conflicts, c)
			x.conflicts.Add(1)
			conflict = true
			if p.start < lo {
				q := p
				q.end = lo
				next = append(next, q)
			}
			if hi < p.end {
				q := p
				q.start = hi
				next = append(next, q)
			}
		}
		pieces = next
	}
	for _, p := range pieces {
		l = x.merge(l, p)
	}
	*list = l
	return conflict
}

// merge inserts p, which overlaps no other owner's range, into l and folds in the same owner's ranges
// that it touches within the gap, stopping at any range of another owner.
func (x *Index) merge(l []span, p span) []span {
	i, _ := slices.BinarySearchFunc(l, p.start, func(r span, t int64) int { return cmp.Compare(r.start, t) })
	lo, hi := i, i // l[lo:hi] will be replaced by the merged span
	for lo > 0 && l[lo-1].owner == p.owner && l[lo-1].end+x.gap >= p.start {
		lo--
	}
	for hi < len(l) && l[hi].owner == p.owner && l[hi].start <= p.end+x.gap {
		hi++
	}
	for _, r := range l[lo:hi] {
		p.start, p.end = min(p.start, r.start), max(p.end, r.end)
		p.seen, p.ev = max(p.seen, r.seen), min(p.ev, r.ev)
	}
	return slices.Replace(l, lo, hi, p)
}

// Lookup answers who owned ip at t.
func (x *Index) Lookup(ip netip.Addr, t int64) Answer {
	ip = ip.Unmap()
	s := x.shard(ip)
	s.mu.RLock()
	if e := s.m[ip]; e != nil {
		for i := range e {
			r, _ := find(e[i].ranges, t) // r.ev is EvidenceNone if nothing covers t
			if a := x.answer(r, e[i].conflicts, t); a.Status != Unknown {
				s.mu.RUnlock()
				return a
			}
		}
	}
	s.mu.RUnlock()
	return x.lookupCIDR(ip)
}

// answer is Owned by r unless a conflicting claim of a different owner covers t.
func (x *Index) answer(r span, conflicts []span, t int64) Answer {
	var a Answer
	for _, c := range conflicts {
		if c.start <= t && t < c.end && c.owner != r.owner {
			if a.Status != Conflict && r.ev != EvidenceNone {
				a.Conflicting = append(a.Conflicting, x.public(r))
			}
			a.Status = Conflict
			a.Conflicting = append(a.Conflicting, x.public(c))
		}
	}
	if a.Status == Conflict {
		if len(a.Conflicting) < 2 { // only conflicts among themselves with one owner: not a conflict
			return Answer{Status: Owned, Range: a.Conflicting[0]}
		}
		return a
	}
	if r.ev == EvidenceNone {
		return Answer{}
	}
	return Answer{Status: Owned, Range: x.public(r)}
}

func find(l []span, t int64) (span, bool) {
	i, found := slices.BinarySearchFunc(l, t, func(r span, t int64) int { return cmp.Compare(r.start, t) })
	if found {
		return l[i], true
	}
	if i > 0 && t < l[i-1].end {
		return l[i-1], true
	}
	return span{}, false
}

func (x *Index) public(s span) Range {
	return Range{Start: s.start, End: s.end, LastSeen: s.seen, Owner: x.owners.get(s.owner), Evidence: s.ev}
}

// Ranges lists what the index holds for ip: heartbeat and event ranges sorted by start, and separately
// the parts of claims that conflicted.
func (x *Index) Ranges(ip netip.Addr) (ranges, conflicts []Range) {
	ip = ip.Unmap()
	s := x.shard(ip)
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := s.m[ip]
	if e == nil {
		return nil, nil
	}
	for i := range e {
		for _, r := range e[i].ranges {
			ranges = append(ranges, x.public(r))
		}
		for _, r := range e[i].conflicts {
			conflicts = append(conflicts, x.public(r))
		}
	}
	sortRanges(ranges)
	sortRanges(conflicts)
	return ranges, conflicts
}

func sortRanges(rs []Range) {
	slices.SortFunc(rs, func(a, b Range) int {
		return cmp.Or(cmp.Compare(a.Start, b.Start), cmp.Compare(a.Evidence, b.Evidence))
	})
}

// Each calls f for every range held, conflicts flagged, until f returns false. It holds one shard's
// read lock at a time: claims added meanwhile may or may not be seen.
func (x *Index) Each(f func(ip netip.Addr, r Range, conflict bool) bool) {
	for i := range x.shards {
		s := &x.shards[i]
		s.mu.RLock()
		for ip, e := range s.m {
			for i := range e {
				for j, l := range [2][]span{e[i].ranges, e[i].conflicts} {
					for _, r := range l {
						if !f(ip, x.public(r), j == 1) {
							s.mu.RUnlock()
							return
						}
					}
				}
			}
		}
		s.mu.RUnlock()
	}
}

// Expire drops ranges that ended before now-MaxAge and, while more than MaxRanges are held, the ranges
// that ended earliest. It returns how many it dropped. Call it periodically.
func (x *Index) Expire(now int64) int {
	horizon := now - int64(x.cfg.MaxAge)
	dropped := x.dropBefore(horizon)
	// Over the memory bound: move the horizon forward in steps of a tenth of the age until under it.
	for step := int64(x.cfg.MaxAge) / 10; x.ranges.Load() > int64(x.cfg.MaxRanges) && horizon < now; {
		horizon += step
		dropped += x.dropBefore(horizon)
	}
	return dropped
}

func (x *Index) dropBefore(horizon int64) int {
	dropped := 0
	keep := func(l []span) []span {
		n := len(l)
		l = slices.DeleteFunc(l, func(r span) bool { return r.end < horizon })
		dropped += n - len(l)
		return l
	}
	for i := range x.shards {
		s := &x.shards[i]
		s.mu.Lock()
		for ip, e := range s.m {
			n := 0
			for i := range e {
				e[i].ranges, e[i].conflicts = keep(e[i].ranges), keep(e[i].conflicts)
				n += len(e[i].ranges) + len(e[i].conflicts)
			}
			if n == 0 {
				delete(s.m, ip)
			}
		}
		s.mu.Unlock()
	}
	x.ranges.Add(-int64(dropped))
	return dropped
}

// Stats are the index's counters.
type Stats struct {
	IPs, Ranges, Owners int
	Claims, Conflicts   int64
}

// Stats returns the index's size and counters.
func (x *Index) Stats() Stats {
	st := Stats{Ranges: int(x.ranges.Load()), Claims: x.claims.Load(), Conflicts: x.conflicts.Load(), Owners: x.owners.len()}
	for i := range x.shards {
		x.shards[i].mu.RLock()
		st.IPs += len(x.shards[i].m)
		x.shards[i].mu.RUnlock()
	}
	return st
}

// owners interns workloads so a range holds a 4-byte id instead of six strings.
type owners struct {
	mu  sync.RWMutex
	ids map[flow.Workload]uint32
	all []flow.Workload
}

func (o *owners) id(w flow.Workload) uint32 {
	o.mu.RLock()
	id, ok := o.ids[w]
	o.mu.RUnlock()
	if ok {
		return id
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if id, ok := o.ids[w]; ok {
		return id
	}
	id = uint32(len(o.all))
	o.all = append(o.all, w)
	o.ids[w] = id
	return id
}

func (o *owners) get(id uint32) flow.Workload {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return o.all[id]
}

func (o *owners) len() int {
	o.mu.RLock()
	defer o.mu.RUnlock()
	return len(o.all)
}
