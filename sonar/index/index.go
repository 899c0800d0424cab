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
	cidrs  atomic.Pointer[cidrTable]

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

// entry is one address's ranges. Most addresses only ever hold heartbeat ranges, so those live in the
// entry itself and the other three lists behind a pointer allocated on first need: an entry is 32
// bytes, stored in the shard's map by value (one cache miss less per lookup than a pointer).
type entry struct {
	hb   []span // heartbeat ranges: non-overlapping, sorted by start
	more *more
}

// more holds the rarer lists: the parts of heartbeat claims that overlapped a different owner
// (unsorted), and the same two lists for pod, service and node events.
type more struct {
	hbConflicts, ev, evConflicts []span
}

// list returns class c's ranges and conflicts (class 0: heartbeats, 1: events).
func (e *entry) list(c int) (ranges, conflicts []span) {
	switch {
	case c == 0 && e.more == nil:
		return e.hb, nil
	case c == 0:
		return e.hb, e.more.hbConflicts
	case e.more == nil:
		return nil, nil
	default:
		return e.more.ev, e.more.evConflicts
	}
}

// set stores class c's lists, allocating more only when it has something to hold.
func (e *entry) set(c int, ranges, conflicts []span) {
	if c == 0 {
		e.hb = ranges
		if e.more != nil {
			e.more.hbConflicts = conflicts
		} else if len(conflicts) > 0 {
			e.more = &more{hbConflicts: conflicts}
		}
	} else if e.more != nil {
		e.more.ev, e.more.evConflicts = ranges, conflicts
	} else if len(ranges)+len(conflicts) > 0 {
		e.more = &more{ev: ranges, evConflicts: conflicts}
	}
	if m := e.more; m != nil && len(m.hbConflicts)+len(m.ev)+len(m.evConflicts) == 0 {
		e.more = nil
	}
}

func (e *entry) len() int {
	n := len(e.hb)
	if m := e.more; m != nil {
		n += len(m.hbConflicts) + len(m.ev) + len(m.evConflicts)
	}
	return n
}

func class(ev Evidence) int {
	if ev == EvidenceHeartbeat {
		return 0
	}
	return 1
}

// shard holds the entries of the addresses that hash to it, keyed without netip.Addr's 24 bytes and
// pointer: IPv4 by a uint32 (the common case in clusters), IPv6 by its 16 bytes. Zones are dropped
// and v4-mapped addresses unmapped before keying, so each address has one entry.
type shard struct {
	mu sync.RWMutex
	v4 map[uint32]entry
	v6 map[[16]byte]entry
	_  [24]byte // one cache line per shard: readers on other cores write their shard's lock word
}

// key is an address as the shards key it.
type key struct {
	v6  bool
	v4  uint32
	a16 [16]byte
}

func keyOf(ip netip.Addr) key {
	ip = ip.Unmap()
	if ip.Is4() {
		b := ip.As4()
		return key{v4: uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])}
	}
	return key{v6: true, a16: ip.As16()}
}

func (k key) addr() netip.Addr {
	if k.v6 {
		return netip.AddrFrom16(k.a16)
	}
	return netip.AddrFrom4([4]byte{byte(k.v4 >> 24), byte(k.v4 >> 16), byte(k.v4 >> 8), byte(k.v4)})
}

func (s *shard) get(k key) (entry, bool) {
	if k.v6 {
		e, ok := s.v6[k.a16]
		return e, ok
	}
	e, ok := s.v4[k.v4]
	return e, ok
}

func (s *shard) put(k key, e entry) {
	if k.v6 {
		s.v6[k.a16] = e
	} else {
		s.v4[k.v4] = e
	}
}

func (s *shard) len() int { return len(s.v4) + len(s.v6) }

// New returns an empty index.
func New(cfg Config) *Index {
	x := &Index{cfg: cfg.withDefaults()}
	x.gap = int64(x.cfg.MergeGap)
	x.owners.ids = make(map[flow.Workload]uint32)
	x.owners.all.Store(&[]flow.Workload{})
	for i := range x.shards {
		x.shards[i].v4 = make(map[uint32]entry)
		x.shards[i].v6 = make(map[[16]byte]entry)
	}
	return x
}

func (x *Index) shard(k key) *shard {
	// The low bytes vary most between neighbours in a pod CIDR.
	var lo uint
	if k.v6 {
		lo = uint(k.a16[15]) | uint(k.a16[14])<<8 | uint(k.a16[13])<<16
	} else {
		lo = uint(k.v4)
	}
	return &x.shards[(lo&0xff^(lo>>8&0xff)<<3^(lo>>16&0xff)<<5)%shards]
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
	k := keyOf(c.IP)
	s := x.shard(k)
	cl := class(c.Evidence)
	sp := span{start: c.Start, end: c.End, seen: c.Seen, owner: owner, ev: c.Evidence}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, _ := s.get(k)
	ranges, conflicts := e.list(cl)
	if x.extend(ranges, sp) {
		return false // in place: the entry is unchanged
	}
	before := len(ranges) + len(conflicts)
	ranges, conflicts, conflict = x.insert(ranges, conflicts, sp)
	e.set(cl, ranges, conflicts)
	s.put(k, e)
	x.ranges.Add(int64(len(ranges) + len(conflicts) - before))
	return conflict
}

// extend is the fast path, the common case: the owner extends or repeats its latest range. No other
// owner's range can lie past the latest one, so nothing else needs checking.
func (x *Index) extend(l []span, s span) bool {
	n := len(l)
	if n == 0 {
		return false
	}
	last := &l[n-1]
	if last.owner != s.owner || s.start < last.start || s.start > x.plusGap(last.end) {
		return false
	}
	last.end = max(last.end, s.end)
	last.seen = max(last.seen, s.seen)
	last.ev = min(last.ev, s.ev)
	return true
}

// insert adds s to the sorted list: the parts of s that overlap another owner's ranges go to conflicts,
// the rest merges with the same owner's ranges within the merge gap (never across another owner's range).
func (x *Index) insert(l, conflicts []span, s span) (_, _ []span, conflict bool) {
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
			conflicts = addConflict(conflicts, c)
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
	return l, conflicts, conflict
}

// addConflict records c, folding it into a part of the same owner that it overlaps or touches, so a
// conflicting owner's repeated heartbeats (and claims replayed after a restart) do not pile up.
func addConflict(conflicts []span, c span) []span {
	for i := range conflicts {
		r := &conflicts[i]
		if r.owner == c.owner && c.start <= r.end && r.start <= c.end {
			r.start, r.end = min(r.start, c.start), max(r.end, c.end)
			r.seen, r.ev = max(r.seen, c.seen), min(r.ev, c.ev)
			return conflicts
		}
	}
	return append(conflicts, c)
}

// Restore puts back a range exactly as Each reported it, without merging: for loading a snapshot into
// an empty index. A range that overlaps one already held is added as a claim instead; invalid ones
// are refused as Add refuses them.
func (x *Index) Restore(ip netip.Addr, r Range, conflict bool) {
	if !ip.IsValid() || r.End <= r.Start || r.Evidence == EvidenceNone || r.Evidence >= EvidenceCIDR {
		return
	}
	k := keyOf(ip)
	s := x.shard(k)
	cl := class(r.Evidence)
	sp := span{start: r.Start, end: r.End, seen: r.LastSeen, owner: x.owners.id(r.Owner), ev: r.Evidence}
	s.mu.Lock()
	e, _ := s.get(k)
	ranges, conflicts := e.list(cl)
	if conflict {
		conflicts = append(conflicts, sp)
	} else {
		i := search(ranges, sp.start)
		if (i > 0 && ranges[i-1].end > sp.start) || (i < len(ranges) && ranges[i].start < sp.end) {
			s.mu.Unlock()
			x.Add(Claim{IP: ip, Start: r.Start, End: r.End, Seen: r.LastSeen, Owner: r.Owner, Evidence: r.Evidence})
			return
		}
		ranges = slices.Insert(grow(ranges), i, sp)
	}
	e.set(cl, ranges, conflicts)
	s.put(k, e)
	s.mu.Unlock()
	x.ranges.Add(1)
}

// grow makes room for one more span, by an eighth rather than append's doubling: lists are short
// and long-lived, and the slack would be most of the memory.
func grow(l []span) []span {
	if len(l) < cap(l) {
		return l
	}
	grown := make([]span, len(l), len(l)+1+len(l)/8)
	copy(grown, l)
	return grown
}

// merge inserts p, which overlaps no other owner's range, into l and folds in the same owner's ranges
// that it touches within the gap, stopping at any range of another owner.
func (x *Index) merge(l []span, p span) []span {
	i := search(l, p.start)
	lo, hi := i, i // l[lo:hi] will be replaced by the merged span
	for lo > 0 && l[lo-1].owner == p.owner && x.plusGap(l[lo-1].end) >= p.start {
		lo--
	}
	for hi < len(l) && l[hi].owner == p.owner && l[hi].start <= x.plusGap(p.end) {
		hi++
	}
	for _, r := range l[lo:hi] {
		p.start, p.end = min(p.start, r.start), max(p.end, r.end)
		p.seen, p.ev = max(p.seen, r.seen), min(p.ev, r.ev)
	}
	if lo < hi {
		l[lo] = p
		return slices.Delete(l, lo+1, hi)
	}
	return slices.Insert(grow(l), lo, p)
}

// plusGap is t+MergeGap, saturating: a claim may end near the largest time (a client's "forever"),
// and a wrapped sum would stop it merging, leaving overlapping ranges of one owner.
func (x *Index) plusGap(t int64) int64 {
	if t > maxTime-x.gap {
		return maxTime
	}
	return t + x.gap
}

// search returns the index of the first range starting after t.
func search(l []span, t int64) int {
	lo, hi := 0, len(l)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if l[m].start <= t {
			lo = m + 1
		} else {
			hi = m
		}
	}
	return lo
}

// Lookup answers who owned ip at t.
func (x *Index) Lookup(ip netip.Addr, t int64) (a Answer) {
	k := keyOf(ip)
	s := x.shard(k)
	s.mu.RLock()
	if e, ok := s.get(k); ok {
		for c := range 2 {
			ranges, conflicts := e.list(c)
			if x.answer(&a, find(ranges, t), conflicts, t) {
				s.mu.RUnlock()
				return a
			}
		}
	}
	s.mu.RUnlock()
	return x.lookupCIDR(ip.Unmap().WithZone(""))
}

// answer fills a and reports true if the list answers: Owned by r (nil when no range covers t),
// unless conflicting claims of a different owner cover t. It writes into a, which is large, rather
// than return one: copies were a third of a lookup's cost.
func (x *Index) answer(a *Answer, r *span, conflicts []span, t int64) bool {
	for i := range conflicts {
		c := &conflicts[i]
		if c.start <= t && t < c.end && (r == nil || c.owner != r.owner) {
			if a.Status != Conflict && r != nil {
				a.Conflicting = append(a.Conflicting, x.public(*r))
			}
			a.Status = Conflict
			a.Conflicting = append(a.Conflicting, x.public(*c))
		}
	}
	switch {
	case a.Status == Conflict && len(a.Conflicting) < 2: // only conflicts among themselves with one owner
		a.Status, a.Range, a.Conflicting = Owned, a.Conflicting[0], nil
	case a.Status == Conflict:
	case r == nil:
		return false
	default:
		a.Status = Owned
		x.fill(&a.Range, r)
	}
	return true
}

// find returns the range covering t, or nil. Short lists are scanned from the newest range back:
// most lookups are for flows that just ended, and a sequential scan stays within the cache lines the
// hardware prefetches, where a binary search's jumps each risk a miss.
func find(l []span, t int64) *span {
	if len(l) <= 16 {
		for i := len(l) - 1; i >= 0; i-- {
			if l[i].start <= t {
				if t < l[i].end {
					return &l[i]
				}
				return nil
			}
		}
		return nil
	}
	if i := search(l, t); i > 0 && t < l[i-1].end {
		return &l[i-1]
	}
	return nil
}

func (x *Index) public(s span) Range {
	var r Range
	x.fill(&r, &s)
	return r
}

func (x *Index) fill(r *Range, s *span) {
	r.Start, r.End, r.LastSeen, r.Evidence = s.start, s.end, s.seen, s.ev
	r.Owner = (*x.owners.all.Load())[s.owner]
}

// Ranges lists what the index holds for ip: heartbeat and event ranges sorted by start, and separately
// the parts of claims that conflicted.
func (x *Index) Ranges(ip netip.Addr) (ranges, conflicts []Range) {
	k := keyOf(ip)
	s := x.shard(k)
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.get(k)
	if !ok {
		return nil, nil
	}
	for c := range 2 {
		rs, cs := e.list(c)
		for _, r := range rs {
			ranges = append(ranges, x.public(r))
		}
		for _, r := range cs {
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
// read lock at a time: claims added meanwhile may or may not be seen. f must not call into the index.
func (x *Index) Each(f func(ip netip.Addr, r Range, conflict bool) bool) {
	for i := range x.shards {
		s := &x.shards[i]
		s.mu.RLock()
		ok := s.each(func(k key, e *entry) bool {
			ip := k.addr()
			for c := range 2 {
				rs, cs := e.list(c)
				for j, l := range [2][]span{rs, cs} {
					for _, r := range l {
						if !f(ip, x.public(r), j == 1) {
							return false
						}
					}
				}
			}
			return true
		})
		s.mu.RUnlock()
		if !ok {
			return
		}
	}
}

// each calls f for every entry until f returns false, and reports whether it got to the end.
func (s *shard) each(f func(k key, e *entry) bool) bool {
	for k, e := range s.v4 {
		if !f(key{v4: k}, &e) {
			return false
		}
	}
	for k, e := range s.v6 {
		if !f(key{v6: true, a16: k}, &e) {
			return false
		}
	}
	return true
}

// Expire drops ranges that ended before now-MaxAge and, while more than MaxRanges are held, the ranges
// that ended earliest. It returns how many it dropped. Call it periodically.
func (x *Index) Expire(now int64) int {
	dropped := x.dropBefore(now - int64(x.cfg.MaxAge))
	if excess := x.ranges.Load() - int64(x.cfg.MaxRanges); excess > 0 {
		dropped += x.dropBefore(x.horizonFor(excess))
	}
	return dropped
}

// horizonFor returns the end time before which about excess ranges ended (never fewer), from a
// histogram of end times: two read passes instead of sorting millions of ranges. It overshoots by at
// most one bucket, 1/4096 of the time the ranges span.
func (x *Index) horizonFor(excess int64) int64 {
	const buckets = 4096
	lo, hi := int64(maxTime), int64(minTime)
	x.eachSpan(func(r *span) { lo, hi = min(lo, r.end), max(hi, r.end) })
	if lo > hi {
		return minTime
	}
	width := (hi-lo)/buckets + 1
	var hist [buckets]int64
	x.eachSpan(func(r *span) { hist[(r.end-lo)/width]++ })
	var sum int64
	for b, n := range hist {
		if sum += n; sum >= excess {
			return lo + int64(b+1)*width
		}
	}
	return hi + 1
}

// eachSpan calls f for every stored span, under each shard's read lock in turn.
func (x *Index) eachSpan(f func(r *span)) {
	for i := range x.shards {
		s := &x.shards[i]
		s.mu.RLock()
		s.each(func(_ key, e *entry) bool {
			for c := range 2 {
				rs, cs := e.list(c)
				for j := range rs {
					f(&rs[j])
				}
				for j := range cs {
					f(&cs[j])
				}
			}
			return true
		})
		s.mu.RUnlock()
	}
}

// dropBefore drops the ranges that ended before horizon and the addresses left with none.
func (x *Index) dropBefore(horizon int64) int {
	dropped := 0
	keep := func(l []span) []span {
		n := len(l)
		l = slices.DeleteFunc(l, func(r span) bool { return r.end < horizon })
		dropped += n - len(l)
		if len(l) == 0 {
			return nil
		}
		if len(l) < cap(l)/2 {
			l = slices.Clip(slices.Clone(l)) // give the memory back
		}
		return l
	}
	for i := range x.shards {
		s := &x.shards[i]
		s.mu.Lock()
		expireMap(s.v4, keep)
		expireMap(s.v6, keep)
		s.mu.Unlock()
	}
	x.ranges.Add(-int64(dropped))
	return dropped
}

// expireMap applies keep to every list in m and deletes the entries left empty.
func expireMap[K comparable](m map[K]entry, keep func([]span) []span) {
	for k, e := range m {
		n := e.len()
		for c := range 2 {
			rs, cs := e.list(c)
			e.set(c, keep(rs), keep(cs))
		}
		switch {
		case e.len() == 0:
			delete(m, k)
		case e.len() != n:
			m[k] = e
		}
	}
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
		st.IPs += x.shards[i].len()
		x.shards[i].mu.RUnlock()
	}
	return st
}

// owners interns workloads so a range holds a 4-byte id instead of six strings. Reads are lock-free:
// all only ever grows, and a reader's snapshot holds every id handed out before it.
type owners struct {
	mu  sync.RWMutex
	ids map[flow.Workload]uint32
	all atomic.Pointer[[]flow.Workload]
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
	all := *o.all.Load()
	id = uint32(len(all))
	all = append(all, w) // appends past every published length: readers' snapshots stay valid
	o.all.Store(&all)
	o.ids[w] = id
	return id
}

func (o *owners) get(id uint32) flow.Workload { return (*o.all.Load())[id] }

func (o *owners) len() int { return len(*o.all.Load()) }
