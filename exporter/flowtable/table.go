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
	"github.com/flowlens/flowlens/exporter/flow"
)

// Table holds final records through their grace period.
type Table struct {
	grace   time.Duration
	emit    func(*flow.Record)
	pending map[uint64]*held // by kernel socket address
	order   []*held          // arrival order, which is deadline order: the grace is the same for all
	stats   Stats
}

// Stats counts what the table did, for metrics.
type Stats struct {
	Amended   uint64 // final records whose close reason a late RST changed to RESET_SENT
	Unmatched uint64 // late RSTs that found no held record (held past grace, or never reported)
}

type held struct {
	sock     uint64
	deadline time.Time
	rec      flow.Record
	done     bool // emitted early, because the socket address was reused within the grace period
}

// New makes a table that calls emit for every record, in order. emit must not keep the pointer.
func New(grace time.Duration, emit func(*flow.Record)) *Table {
	return &Table{grace: grace, emit: emit, pending: make(map[uint64]*held)}
}

// Add takes one event that arrived at now.
func (t *Table) Add(ev *capture.Event, now time.Time) {
	switch ev.Kind {
	case capture.KindActive:
		t.emit(&ev.Record)
	case capture.KindClose:
		if old, ok := t.pending[ev.Sock]; ok {
			// The socket's memory was reused and its new connection closed within the grace: the old
			// record can no longer be amended, so it goes now.
			t.emit(&old.rec)
			old.done = true
		}
		h := &held{sock: ev.Sock, deadline: now.Add(t.grace), rec: ev.Record}
		t.pending[ev.Sock] = h
		t.order = append(t.order, h)
	case capture.KindResetSent:
		if h, ok := t.pending[ev.Sock]; ok {
			if h.rec.Close == flow.CloseNormal {
				h.rec.Close = flow.CloseResetSent
			}
			t.stats.Amended++
		} else {
			t.stats.Unmatched++
		}
	}
}

// Expire emits the records whose grace ended by now.
func (t *Table) Expire(now time.Time) {
	n := 0
	for _, h := range t.order {
		if h.deadline.After(now) {
			break
		}
		t.release(h)
		n++
	}
	t.compact(n)
}

// Flush emits every held record, for shutdown.
func (t *Table) Flush() {
	for _, h := range t.order {
		t.release(h)
	}
	t.compact(len(t.order))
}

// Held is the number of records in their grace period.
func (t *Table) Held() int { return len(t.pending) }

// Stats returns the table's counters.
func (t *Table) Stats() Stats { return t.stats }

func (t *Table) release(h *held) {
	if h.done {
		return
	}
	if t.pending[h.sock] == h {
		delete(t.pending, h.sock)
	}
	t.emit(&h.rec)
}

// compact drops the first n entries of order, reusing its backing array.
func (t *Table) compact(n int) {
	if n == 0 {
		return
	}
	rest := copy(t.order, t.order[n:])
	clear(t.order[rest:])
	t.order = t.order[:rest]
}
