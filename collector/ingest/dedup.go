package ingest

import "sync"

// window is how many sequence numbers below the highest seen are remembered per exporter. An exporter's
// buffer resends at most its unacknowledged batches, far fewer than this.
const window = 4096

// Dedup remembers which (exporter, seq) pairs were stored, so that a batch resent after a lost ack is
// stored once. A pair is claimed before the sink sees it and marked stored only after the sink made it
// durable; a failed store releases the claim, so the resend is stored. Safe for concurrent use.
type Dedup struct {
	mu        sync.Mutex
	exporters map[string]*seen
	limit     int // most exporters remembered; the least recently active is forgotten beyond it
	clock     uint64
}

type seen struct {
	high     uint64              // highest stored seq
	bits     [window / 64]uint64 // stored seqs in (high-window, high], indexed by seq % window
	inflight map[uint64]bool
	used     uint64 // clock of the last claim, for forgetting idle exporters
}

// NewDedup remembers up to limit exporters.
func NewDedup(limit int) *Dedup { return &Dedup{exporters: make(map[string]*seen), limit: limit} }

// Claim is what Claim found.
type Claim int

const (
	Claimed  Claim = iota // store it now, then call Done
	Stored                // stored before: a duplicate
	InFlight              // another request is storing it right now, and may yet fail: retry later
)

// Claim says whether (id, seq) should be stored now. A Claimed result must be followed by Done.
func (d *Dedup) Claim(id string, seq uint64) Claim {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.exporters[id]
	if s == nil {
		if len(d.exporters) >= d.limit {
			d.forgetOldest()
		}
		s = &seen{inflight: make(map[uint64]bool)}
		d.exporters[id] = s
	}
	d.clock++
	s.used = d.clock
	switch {
	case s.stored(seq):
		return Stored
	case s.inflight[seq]:
		return InFlight
	}
	s.inflight[seq] = true
	return Claimed
}

// IsStored reports, without claiming, whether (id, seq) was stored: for transports that do not claim.
func (d *Dedup) IsStored(id string, seq uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.exporters[id]
	return s != nil && s.stored(seq)
}

// Done ends a claim: stored says whether the sink made the batch durable.
func (d *Dedup) Done(id string, seq uint64, stored bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.exporters[id]
	if s == nil {
		return
	}
	delete(s.inflight, seq)
	if stored {
		s.mark(seq)
	}
}

func (s *seen) stored(seq uint64) bool {
	switch {
	case seq > s.high:
		return false
	case s.high-seq >= window:
		return true // older than the window: an exporter never resends that far back
	}
	return s.bits[(seq%window)/64]&(1<<(seq%64)) != 0
}

func (s *seen) mark(seq uint64) {
	if seq > s.high {
		// Clear the slots that fall out of the window as it slides up.
		for q := s.high + 1; q <= seq && q-s.high <= window; q++ {
			s.bits[(q%window)/64] &^= 1 << (q % 64)
		}
		s.high = seq
	} else if s.high-seq >= window {
		return
	}
	s.bits[(seq%window)/64] |= 1 << (seq % 64)
}

func (d *Dedup) forgetOldest() {
	var oldest string
	var at uint64 = ^uint64(0)
	for id, s := range d.exporters {
		if s.used < at && len(s.inflight) == 0 {
			oldest, at = id, s.used
		}
	}
	delete(d.exporters, oldest)
}

// Seed marks (id, seq) as stored: how a restarted collector learns, from its store, what it already holds.
func (d *Dedup) Seed(id string, seq uint64) {
	if d.Claim(id, seq) == Claimed {
		d.Done(id, seq, true)
	}
}
