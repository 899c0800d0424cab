package store

import (
	"context"
	"database/sql/driver"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/flowlens/flowlens/internal/flow"
)

// connKey identifies a connection as one exporter saw it. Preexisting connections (start_time 0) are
// keyed the same way.
type connKey struct {
	exporter      string
	local, remote netip.Addr
	lport, rport  uint16
	start         int64
}

func keyOf(f *flow.Enriched) connKey {
	return connKey{f.ExporterID, f.LocalAddr, f.RemoteAddr, f.LocalPort, f.RemotePort, f.StartTime}
}

// hash is the key's FNV-1a hash, stored as flows.key_hash. Only a filter: matches are compared in full.
func (k *connKey) hash() uint64 {
	h := uint64(14695981039346656037)
	mix := func(b byte) { h = (h ^ uint64(b)) * 1099511628211 }
	for i := 0; i < len(k.exporter); i++ {
		mix(k.exporter[i])
	}
	for _, a := range [2]netip.Addr{k.local, k.remote} {
		b := a.As16()
		for _, c := range b {
			mix(c)
		}
	}
	for _, v := range [3]uint64{uint64(k.lport), uint64(k.rport), uint64(k.start)} {
		for i := 0; i < 64; i += 8 {
			mix(byte(v >> i))
		}
	}
	return h
}

// openEntry is the stored row of a connection whose latest record is ACTIVE (still open).
type openEntry struct{ id, end int64 }

// stored is the current row of a connection while a write is planned.
type stored struct {
	id, end int64
	final   bool
	pos     int // index in plan.rows if this write appends it, -1 if it is in the table
}

// beats says whether a record (final, end) replaces the current row of its connection: a final record
// beats an interim one, otherwise the later end_time wins; a tie keeps what is there, so a resent
// record changes nothing.
func beats(final bool, end int64, cur stored) bool {
	if final != cur.final {
		return final
	}
	return end > cur.end
}

type planRow struct {
	flow int // index in Write.Flows
	id   int64
	skip bool // superseded by a later record of the same write
}

// plan is what one write will do to the flows table, and the merge index once it commits.
type plan struct {
	rows       []planRow
	deletes    []int64 // ids of stored rows superseded by this write
	deleteEnds []int64 // their end times
	dirty      []int64 // rolled-up minutes this write changes
	stale      int     // records older than the row already stored for their connection: dropped
	superseded int
	open       map[connKey]*openEntry // index updates: nil deletes the key
	nextID     int64
	workloads  map[uint64]*flow.Workload // workloads this write adds to the workloads table
}

// workload returns the ids of w, noting it in p if the workloads table does not hold it yet.
func (s *Store) workload(p *plan, w *flow.Workload) (wid, node uint64) {
	wid, node = workloadIDs(w)
	if _, ok := s.wids[wid]; !ok {
		if p.workloads == nil {
			p.workloads = make(map[uint64]*flow.Workload)
		}
		p.workloads[wid] = w
	}
	return wid, node
}

// plan decides, for each record of flows, whether it is appended and which stored row it replaces.
//
// Merge rule: per connection key, the stored row is the record with the largest (final, end_time).
// Keeping that cheap is the point: most connections are short and send one final record, which is
// appended without looking anything up. Only connections that have interim records are merged: those
// whose latest stored record is ACTIVE (the in-memory index s.open, rebuilt from the table at Open) and
// those with an ACTIVE record in this write. An ACTIVE record of a connection the index does not know
// may still be late (its batch was resent after the final one was stored), so those keys are looked up
// in the table in one query per write, pruned by start_time.
func (s *Store) plan(ctx context.Context, flows []flow.Enriched) (*plan, error) {
	p := &plan{nextID: s.nextID}
	var active map[connKey]struct{}
	for i := range flows {
		if flows[i].Close == flow.CloseActive {
			if active == nil {
				active = make(map[connKey]struct{})
			}
			active[keyOf(&flows[i])] = struct{}{}
		}
	}
	var unknown []connKey
	for k := range active {
		if _, ok := s.open[k]; !ok {
			unknown = append(unknown, k)
		}
	}
	found, err := s.lookupStored(ctx, unknown)
	if err != nil {
		return nil, err
	}
	cur := make(map[connKey]stored)
	for i := range flows {
		f := &flows[i]
		k := keyOf(f)
		_, inWrite := active[k]
		oe, isOpen := s.open[k]
		if !inWrite && !isOpen {
			p.rows = append(p.rows, planRow{flow: i, id: p.nextID})
			p.nextID++
			continue
		}
		c, ok := cur[k]
		if !ok {
			if isOpen {
				c, ok = stored{id: oe.id, end: oe.end, pos: -1}, true
			} else {
				c, ok = found[k]
			}
		}
		final := f.Close != flow.CloseActive
		if ok && !beats(final, f.EndTime, c) {
			p.stale++
			continue
		}
		if ok {
			p.superseded++
			if c.pos >= 0 {
				p.rows[c.pos].skip = true
			} else {
				p.deletes = append(p.deletes, c.id)
				p.deleteEnds = append(p.deleteEnds, c.end)
			}
		}
		cur[k] = stored{id: p.nextID, end: f.EndTime, final: final, pos: len(p.rows)}
		p.rows = append(p.rows, planRow{flow: i, id: p.nextID})
		p.nextID++
	}
	ends := p.deleteEnds
	for _, r := range p.rows {
		if !r.skip && flows[r.flow].EndTime < s.watermark {
			ends = append(ends, flows[r.flow].EndTime)
		}
	}
	p.dirty = s.dirtyMinutes(ends)
	if len(cur) > 0 {
		p.open = make(map[connKey]*openEntry, len(cur))
		for k, c := range cur {
			if c.final {
				p.open[k] = nil
			} else {
				p.open[k] = &openEntry{id: c.id, end: c.end}
			}
		}
	}
	return p, nil
}

// lookupStored finds the stored rows of connections the index does not hold open.
func (s *Store) lookupStored(ctx context.Context, keys []connKey) (map[connKey]stored, error) {
	out := make(map[connKey]stored)
	if len(keys) == 0 {
		return out, nil
	}
	want := make(map[connKey]struct{}, len(keys))
	var b strings.Builder
	lo, hi := keys[0].start, keys[0].start
	for i := range keys {
		k := &keys[i]
		want[*k] = struct{}{}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(k.hash(), 10))
		lo, hi = min(lo, k.start), max(hi, k.start)
	}
	rows, err := s.wconn.QueryContext(ctx, `SELECT exporter_id, local_addr, local_port, remote_addr, remote_port, start_time, id, end_time, close <> 'ACTIVE'
FROM flows WHERE start_time BETWEEN ? AND ? AND key_hash IN (`+b.String()+`)`, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("look up stored connections: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k connKey
		var la, ra string
		var c stored
		if err := rows.Scan(&k.exporter, &la, &k.lport, &ra, &k.rport, &k.start, &c.id, &c.end, &c.final); err != nil {
			return nil, fmt.Errorf("look up stored connections: %w", err)
		}
		k.local, _ = netip.ParseAddr(la)
		k.remote, _ = netip.ParseAddr(ra)
		if _, ok := want[k]; !ok {
			continue // a hash collision
		}
		c.pos = -1
		if prev, ok := out[k]; !ok || beats(c.final, c.end, prev) {
			out[k] = c
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("look up stored connections: %w", err)
	}
	return out, nil
}

// loadOpen rebuilds the index of open connections from the table.
func (s *Store) loadOpen(ctx context.Context) error {
	rows, err := s.wconn.QueryContext(ctx, `SELECT exporter_id, local_addr, local_port, remote_addr, remote_port, start_time, id, end_time
FROM flows WHERE close = 'ACTIVE'`)
	if err != nil {
		return fmt.Errorf("load open connections: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var k connKey
		var la, ra string
		var e openEntry
		if err := rows.Scan(&k.exporter, &la, &k.lport, &ra, &k.rport, &k.start, &e.id, &e.end); err != nil {
			return fmt.Errorf("load open connections: %w", err)
		}
		k.local, _ = netip.ParseAddr(la)
		k.remote, _ = netip.ParseAddr(ra)
		if prev, ok := s.open[k]; !ok || e.end > prev.end {
			s.open[k] = e
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load open connections: %w", err)
	}
	return nil
}

// Write stores w in one transaction: the flows (merged with the stored records of the same
// connections, see plan), the pending records, the removal of the resolved ones and the batch keys.
// When it returns nil all of it is durable (DuckDB's write-ahead log is synced at commit); when it
// returns an error none of it is stored and the store is as before.
func (s *Store) Write(ctx context.Context, w Write) error {
	if err := ctx.Err(); err != nil {
		s.m.errors.WithLabelValues("write").Inc()
		return fmt.Errorf("store write: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wconn == nil {
		return fmt.Errorf("store write: store closed")
	}
	start := time.Now()
	p, err := s.plan(ctx, w.Flows)
	if err == nil {
		var resolved int64
		resolved, err = s.commit(ctx, w, p)
		if err == nil {
			s.apply(p, int64(len(w.Pending))-resolved)
			s.m.writeSeconds.Observe(time.Since(start).Seconds())
			s.m.rows.WithLabelValues("flow").Add(float64(len(p.rows) - p.superseded + len(p.deletes)))
			s.m.rows.WithLabelValues("superseded").Add(float64(p.superseded))
			s.m.rows.WithLabelValues("stale").Add(float64(p.stale))
			s.m.rows.WithLabelValues("pending").Add(float64(len(w.Pending)))
			s.m.rows.WithLabelValues("resolved").Add(float64(resolved))
			s.m.rows.WithLabelValues("batch").Add(float64(len(w.Batches)))
			return nil
		}
	}
	s.m.errors.WithLabelValues("write").Inc()
	return fmt.Errorf("store write: %w", err)
}

func (s *Store) apply(p *plan, pendingDelta int64) {
	s.nextID = p.nextID
	for id := range p.workloads {
		s.wids[id] = struct{}{}
	}
	for k, e := range p.open {
		if e == nil {
			delete(s.open, k)
		} else {
			s.open[k] = *e
		}
	}
	for _, m := range p.dirty {
		s.dirty[m] = struct{}{}
	}
	s.npend += pendingDelta
	s.m.pending.Set(float64(s.npend))
}

// commit runs the write's transaction and returns how many pending rows it resolved.
func (s *Store) commit(ctx context.Context, w Write, p *plan) (resolved int64, err error) {
	c := s.wconn
	if _, err := c.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		return 0, fmt.Errorf("begin: %w", err)
	}
	done := false
	defer func() {
		if !done {
			// Not ctx: a cancelled write must still roll back.
			if _, rerr := c.ExecContext(context.Background(), "ROLLBACK"); rerr != nil {
				err = fmt.Errorf("%w (rollback: %v)", err, rerr)
			}
		}
	}()
	if len(w.Resolved) > 0 {
		if resolved, err = s.deleteResolved(ctx, w.Resolved); err != nil {
			return 0, err
		}
	}
	if len(p.deletes) > 0 {
		if err := s.deleteIDs(ctx, p.deletes); err != nil {
			return 0, err
		}
	}
	if w.Cursor != nil {
		if _, err := c.ExecContext(ctx, `INSERT INTO stream_cursors VALUES (?, ?) ON CONFLICT (stream) DO UPDATE SET seq = excluded.seq`,
			w.Cursor.Stream, w.Cursor.Seq); err != nil {
			return 0, fmt.Errorf("stream cursor: %w", err)
		}
	}
	if len(p.dirty) > 0 {
		if _, err := c.ExecContext(ctx, `INSERT INTO dirty_minutes SELECT unnest([`+intList(p.dirty)+`])`); err != nil {
			return 0, fmt.Errorf("mark rolled-up minutes: %w", err)
		}
	}
	now := time.Now().UnixNano()
	err = c.Raw(func(dc any) error {
		conn, ok := dc.(driver.Conn)
		if !ok {
			return fmt.Errorf("not a driver connection: %T", dc)
		}
		if len(p.rows) > 0 {
			if err := s.appendFlows(ctx, conn, w.Flows, p); err != nil {
				return err
			}
		}
		vals := make([]driver.Value, 0, 5+len(flowColumns))
		if len(p.workloads) > 0 {
			err := appendRows(ctx, conn, "workloads", func(a *duckdb.Appender) error {
				for id, wl := range p.workloads {
					_, node := workloadIDs(wl)
					if err := a.AppendRow(id, node, wl.Name, wl.Namespace, wl.Pod, wl.PodUID, wl.Node, wl.Cluster); err != nil {
						return fmt.Errorf("workload: %w", err)
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		if len(w.Pending) > 0 {
			err := appendRows(ctx, conn, "pending", func(a *duckdb.Appender) error {
				for i := range w.Pending {
					pd := &w.Pending[i]
					vals = append(vals[:0], pd.Key.ExporterID, pd.Key.Seq, pd.Key.N, pd.Deadline)
					if err := a.AppendRow(flowValues(vals, &pd.Flow)...); err != nil {
						return fmt.Errorf("pending %d: %w", i, err)
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		if len(w.Batches) > 0 {
			return appendRows(ctx, conn, "batches", func(a *duckdb.Appender) error {
				for _, b := range w.Batches {
					if err := a.AppendRow(b.ExporterID, b.Seq, now); err != nil {
						return fmt.Errorf("batch: %w", err)
					}
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	// Past this point the write is not interrupted: a commit cut short could leave the caller unsure
	// whether it landed, and a resend would store the flows twice.
	if _, err := c.ExecContext(context.Background(), "COMMIT"); err != nil {
		return 0, fmt.Errorf("commit: %w", err)
	}
	done = true
	return resolved, nil
}

// appendRows opens an appender on table, lets fill append to it and closes it (which flushes).
func appendRows(ctx context.Context, conn driver.Conn, table string, fill func(*duckdb.Appender) error) error {
	a, err := duckdb.NewAppenderFromConn(conn, "", table)
	if err != nil {
		return fmt.Errorf("appender %s: %w", table, err)
	}
	if err := fill(a); err != nil {
		a.Clear()
		a.Close()
		return fmt.Errorf("append %s: %w", table, err)
	}
	if err := a.CloseWithCancel(ctx); err != nil {
		return fmt.Errorf("append %s: %w", table, err)
	}
	return nil
}

// deleteIDs deletes flows by id. The BETWEEN lets DuckDB skip row groups by their id zone maps: ids
// grow with insertion order, and superseded rows are recent ones.
func (s *Store) deleteIDs(ctx context.Context, ids []int64) error {
	lo, hi := ids[0], ids[0]
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(id, 10))
		lo, hi = min(lo, id), max(hi, id)
	}
	q := fmt.Sprintf(`DELETE FROM flows WHERE id BETWEEN %d AND %d AND id IN (%s)`, lo, hi, b.String())
	if _, err := s.wconn.ExecContext(ctx, q); err != nil {
		return fmt.Errorf("delete superseded flows: %w", err)
	}
	return nil
}

func (s *Store) deleteResolved(ctx context.Context, keys []PendingKey) (int64, error) {
	var total int64
	const chunk = 1000
	for len(keys) > 0 {
		n := min(len(keys), chunk)
		var b strings.Builder
		args := make([]any, 0, 3*n)
		for i, k := range keys[:n] {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?::VARCHAR, ?::UBIGINT, ?::UINTEGER)")
			args = append(args, k.ExporterID, k.Seq, k.N)
		}
		keys = keys[n:]
		res, err := s.wconn.ExecContext(ctx, `DELETE FROM pending USING (VALUES `+b.String()+`) AS k(e, s, n)
WHERE p_exporter = k.e AND p_seq = k.s AND p_n = k.n`, args...)
		if err != nil {
			return 0, fmt.Errorf("delete resolved pending: %w", err)
		}
		d, _ := res.RowsAffected()
		total += d
	}
	return total, nil
}
