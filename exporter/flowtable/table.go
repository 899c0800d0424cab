// Package flowtable turns the kernel's events into the records the exporter emits.
//
// The kernel makes a connection's final record when the socket moves to CLOSE. An abort by close() with
// unread data, or by SO_LINGER 0, sends its RST only after that move, so the RST arrives as a separate
// event just behind the record. The table therefore holds each final record for a short grace period in
// which a late RST can still amend its close reason, then emits it. Interim records pass straight through.
//
// A Table is owned by one goroutine: it has no locks.
package flowtable

import (
	"time"

	"github.com/flowlens/flowlens/exporter/capture"
	"github.com/flowlens/flowlens/internal/flow"
)

// Table holds final records through their grace period.
type Table struct {
	grace   time.Duration
	emit    func(*flow.Record)
	pending map[uint64]uint64 // kernel socket address -> sequence number of its held record
	// held is a FIFO of records by value (no allocation per record): held[i] has sequence number base+i,
	// and held[:head] are already released. Arrival order is deadline order: the grace is the same for all.
	held  []held
	head  int
	base  uint64
	stats Stats
}

// Stats counts what the table did with late RSTs.
type Stats struct {
	Matched   uint64 // late RSTs that found their held record
	Amended   uint64 // of those, the records whose close reason they changed to RESET_SENT
	Unmatched uint64 // late RSTs that found no held record (held past the grace, or never reported)
}

type held struct {
	sock     uint64
	deadline time.Time
	rec      flow.Record
	done     bool // emitted early, because the socket address was reused within the grace period
}

// New makes a table that calls emit for every record, in order. emit must not keep the pointer.
func New(grace time.Duration, emit func(*flow.Record)) *Table {
	return &Table{grace: grace, emit: emit, pending: make(map[uint64]uint64)}
}

// Add takes one event that arrived at now.
func (t *Table) Add(ev *capture.Event, now time.Time) {
	switch ev.Kind {
	case capture.KindActive:
		t.emit(&ev.Record)
	case capture.KindClose:
		if seq, ok := t.pending[ev.Sock]; ok {
			// The socket's memory was reused and its new connection closed within the grace: the old
			// record can no longer be amended, so it goes now.
			old := &t.held[seq-t.base]
			t.emit(&old.rec)
			old.done = true
		}
		t.pending[ev.Sock] = t.base + uint64(len(t.held))
		t.held = append(t.held, held{sock: ev.Sock, deadline: now.Add(t.grace), rec: ev.Record})
	case capture.KindResetSent:
		if seq, ok := t.pending[ev.Sock]; ok {
			h := &t.held[seq-t.base]
			t.stats.Matched++
			if h.rec.Close == flow.CloseNormal {
				h.rec.Close = flow.CloseResetSent
				t.stats.Amended++
			}
		} else {
			t.stats.Unmatched++
		}
	}
}

// Expire emits the records whose grace ended by now.
func (t *Table) Expire(now time.Time) {
	for t.head < len(t.held) && !t.held[t.head].deadline.After(now) {
		t.release(t.head)
		t.head++
	}
	t.compact()
}

// Flush emits every held record, for shutdown.
func (t *Table) Flush() {
	for ; t.head < len(t.held); t.head++ {
		t.release(t.head)
	}
	t.compact()
}

// Held is the number of records in their grace period.
func (t *Table) Held() int { return len(t.pending) }

// Stats returns the table's counters.
func (t *Table) Stats() Stats { return t.stats }

func (t *Table) release(i int) {
	h := &t.held[i]
	if h.done {
		return
	}
	if seq, ok := t.pending[h.sock]; ok && seq == t.base+uint64(i) {
		delete(t.pending, h.sock)
	}
	t.emit(&h.rec)
}

// compact moves the unreleased records to the front once the released ones are at least half the slice,
// so each record is moved O(1) times on average.
func (t *Table) compact() {
	if t.head == 0 || t.head < len(t.held)-t.head {
		return
	}
	rest := copy(t.held, t.held[t.head:])
	clear(t.held[rest:])
	t.held = t.held[:rest]
	t.base += uint64(t.head)
	t.head = 0
}
