package store

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
)

// The graph queries (Edges) read a per-minute rollup of the flows table instead of the flows
// themselves: 10M flows aggregated raw took seconds on this machine; their rollup, a few thousand
// rows per hour of traffic, takes milliseconds. The rollup is derived data:
//
//   - edges_minute holds, per minute of end_time, oriented edge (client node, server node) and RTT
//     bucket, the sums the graph needs. It is built from the flows table for whole minutes once they
//     are older than rollupGrace (Store.rollup, run every RollupInterval by the store and by Expire).
//   - rollup_state.watermark is the end of the last minute built. Later minutes are read raw.
//   - A write that adds or deletes a row whose minute is already built (a late batch, a resolved
//     pending record, an interim record superseded after its minute was built) records the minute in
//     dirty_minutes, in the same transaction. Queries read dirty minutes raw; the next rollup
//     rebuilds them. So a query never misses or double counts a row, whatever the rollup's progress.
const (
	minuteNs    = int64(time.Minute)
	rollupGrace = 10 * time.Second // a minute is built this long after it ends
	rollupMax   = 10               // minutes built per pass: a pass holds writes, so a backlog is built in steps
)

// rttBucketSQL puts srtt_us in a histogram bucket: 0 for none, else 1 + floor(8 log2(srtt)).
const rttBucketSQL = `CASE WHEN srtt_us = 0 THEN 0 ELSE floor(log2(srtt_us) * 8)::USMALLINT + 1 END`

// ApproxRTT is the value the graph reports for an RTT of us microseconds: the geometric middle of its
// histogram bucket (within 4.5 % of us).
func ApproxRTT(us uint32) float64 {
	if us == 0 {
		return 0
	}
	return bucketRTT(uint16(math.Floor(math.Log2(float64(us))*8)) + 1)
}

func bucketRTT(b uint16) float64 {
	return math.Round(math.Exp2((float64(b)-0.5)/8)*10) / 10
}

func rollupSchema() []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS edges_minute (
  minute BIGINT NOT NULL, c_node UBIGINT NOT NULL, s_node UBIGINT NOT NULL, bucket USMALLINT NOT NULL,
  flows BIGINT NOT NULL, up UBIGINT NOT NULL, down UBIGINT NOT NULL, cf BIGINT NOT NULL,
  resets BIGINT NOT NULL, timeouts BIGINT NOT NULL, retrans UBIGINT NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS rollup_state (watermark BIGINT NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS dirty_minutes (minute BIGINT NOT NULL)`,
	}
}

// clientLocalSQL is true for a record whose local side is the connection's client (see orientedSQL).
const clientLocalSQL = `(role = 'CLIENT' OR (role = 'UNKNOWN' AND local_port > remote_port))`

// Orientation and counting (one definition for the rollup and the raw reads):
//   - A CLIENT record's local side is the caller; a SERVER record's remote side is. A record whose
//     role is UNKNOWN (preexisting connection) is taken as the client's when its local port is the
//     higher one (ephemeral ports are high).
//   - Both ends of a connection may export it. Client-side records always count; a server-side record
//     counts only when its remote address was not attributed from a heartbeat. A heartbeat means the
//     client's address belonged to a workload whose exporter reported flows from it, so that exporter
//     reported this connection too. Matching the two records exactly would need a join of server
//     records with client records on the reversed addresses and ports, more than the query itself.
//
// %s is the end_time filter.
const orientedSQL = `SELECT
  end_time,
  CASE WHEN cs THEN local_nid ELSE remote_nid END AS c_node,
  CASE WHEN cs THEN remote_nid ELSE local_nid END AS s_node,
  CASE WHEN cs THEN bytes_sent ELSE bytes_received END AS up,
  CASE WHEN cs THEN bytes_received ELSE bytes_sent END AS down,
  close, retransmits, ` + rttBucketSQL + ` AS bucket
FROM (SELECT end_time, local_nid, remote_nid, bytes_sent, bytes_received, close, retransmits, srtt_us, attribution,
        ` + clientLocalSQL + ` AS cs
      FROM flows WHERE %s)
WHERE cs OR attribution <> 'HEARTBEAT'`

const sumsSQL = `count(*) AS flows, sum(up)::UBIGINT AS up, sum(down)::UBIGINT AS down,
  count(*) FILTER (WHERE close = 'CONNECT_FAILED') AS cf,
  count(*) FILTER (WHERE close IN ('RESET_SENT', 'RESET_RECEIVED')) AS resets,
  count(*) FILTER (WHERE close = 'TIMEOUT') AS timeouts,
  sum(retransmits)::UBIGINT AS retrans`

func (s *Store) loadRollupState(ctx context.Context) error {
	err := s.wconn.QueryRowContext(ctx, `SELECT coalesce(max(watermark), 0) FROM rollup_state`).Scan(&s.watermark)
	if err != nil {
		return fmt.Errorf("rollup state: %w", err)
	}
	rows, err := s.wconn.QueryContext(ctx, `SELECT DISTINCT minute FROM dirty_minutes`)
	if err != nil {
		return fmt.Errorf("rollup state: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var m int64
		if err := rows.Scan(&m); err != nil {
			return fmt.Errorf("rollup state: %w", err)
		}
		s.dirty[m] = struct{}{}
	}
	return rows.Err()
}

// dirtyMinutes returns the built minutes among the end times of rows a write adds or deletes.
func (s *Store) dirtyMinutes(ends []int64) []int64 {
	var out []int64
	for _, e := range ends {
		if e >= s.watermark {
			continue
		}
		m := e - e%minuteNs
		if _, ok := s.dirty[m]; !ok && !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out
}

// Rollup builds the rollup up to the last whole minute that ended rollupGrace before now, and
// rebuilds dirty minutes, in passes of at most rollupMax minutes that each hold writes back only for
// their own duration. The store calls it periodically; it is exported for tests and benchmarks.
func (s *Store) Rollup(ctx context.Context, now time.Time) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.mu.Lock()
		if s.wconn == nil {
			s.mu.Unlock()
			return fmt.Errorf("rollup: store closed")
		}
		err := s.rollup(ctx, now)
		more := err == nil && s.watermark < rollupTarget(now)
		s.mu.Unlock()
		if err != nil {
			s.m.errors.WithLabelValues("rollup").Inc()
			return fmt.Errorf("rollup: %w", err)
		}
		if !more {
			return nil
		}
	}
}

// rollupTarget is the end of the last minute that ended rollupGrace before now.
func rollupTarget(now time.Time) int64 {
	t := now.Add(-rollupGrace).UnixNano()
	return t - t%minuteNs
}

// rollup runs one pass.
func (s *Store) rollup(ctx context.Context, now time.Time) (err error) {
	target := rollupTarget(now)
	from := s.watermark
	if from == 0 {
		// First build: start at the oldest flow.
		var oldest *int64
		if err := s.wconn.QueryRowContext(ctx, `SELECT min(end_time) FROM flows`).Scan(&oldest); err != nil {
			return err
		}
		from = target
		if oldest != nil {
			from = min(target, *oldest-*oldest%minuteNs)
		}
	}
	to := min(target, from+rollupMax*minuteNs)
	// An empty store is built up to the target at once: rows that arrive later for earlier minutes
	// mark them dirty like any late row.
	advance := to > from || s.watermark == 0 && to > 0
	dirty := make([]int64, 0, len(s.dirty))
	for m := range s.dirty {
		dirty = append(dirty, m)
	}
	if !advance && len(dirty) == 0 {
		return nil
	}
	if _, err := s.wconn.ExecContext(ctx, "BEGIN TRANSACTION"); err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			s.wconn.ExecContext(context.Background(), "ROLLBACK")
		}
	}()
	build := func(cond string, args ...any) error {
		q := `INSERT INTO edges_minute SELECT end_time // 60000000000 * 60000000000 AS minute, c_node, s_node, bucket, ` + sumsSQL +
			` FROM (` + fmt.Sprintf(orientedSQL, cond) + `) GROUP BY ALL`
		_, err := s.wconn.ExecContext(ctx, q, args...)
		return err
	}
	if len(dirty) > 0 {
		list := intList(dirty)
		if _, err := s.wconn.ExecContext(ctx, `DELETE FROM edges_minute WHERE minute IN (`+list+`)`); err != nil {
			return err
		}
		if err := build(`end_time // 60000000000 * 60000000000 IN (`+list+`) AND end_time >= ? AND end_time < ?`,
			slices.Min(dirty), slices.Max(dirty)+minuteNs); err != nil {
			return err
		}
		if _, err := s.wconn.ExecContext(ctx, `DELETE FROM dirty_minutes`); err != nil {
			return err
		}
	}
	if advance {
		if to > from {
			if err := build(`end_time >= ? AND end_time < ?`, from, to); err != nil {
				return err
			}
		}
		if _, err := s.wconn.ExecContext(ctx, `DELETE FROM rollup_state`); err != nil {
			return err
		}
		if _, err := s.wconn.ExecContext(ctx, `INSERT INTO rollup_state VALUES (?)`, to); err != nil {
			return err
		}
	}
	if _, err := s.wconn.ExecContext(ctx, "COMMIT"); err != nil {
		return err
	}
	done = true
	if advance {
		s.watermark = to
	}
	clear(s.dirty)
	return nil
}

// rollupLoop runs the rollup every interval until stop is closed, which also interrupts a pass.
func (s *Store) rollupLoop(interval time.Duration, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-stop; cancel() }() // ends with the loop: both end when stop is closed
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			err := s.Rollup(ctx, now)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("store rollup", zap.Error(err))
			}
		}
	}
}

func intList(v []int64) string {
	var b strings.Builder
	for i, x := range v {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(x, 10))
	}
	return b.String()
}

// edgeSums accumulates one edge.
type edgeSums struct {
	e    Edge
	hist map[uint16]int64
}

// Edges aggregates the connections q selects into edges: from the rollup for the whole, built, clean
// minutes of the window, from the flows for the rest.
func (s *Store) Edges(ctx context.Context, q EdgeQuery) ([]Edge, error) {
	switch q.GroupBy {
	case "", "namespace", "cluster":
	default:
		return nil, fmt.Errorf("unknown grouping %q", q.GroupBy)
	}
	switch q.OrderBy {
	case "", "bytes", "flows", "failures":
	default:
		return nil, fmt.Errorf("unknown order %q", q.OrderBy)
	}
	q.To = min(q.To, math.MaxInt64-minuteNs) // the spans below end at To+1 rounded up
	s.mu.Lock()
	wm := s.watermark
	dirty := make([]int64, 0, len(s.dirty))
	for m := range s.dirty {
		dirty = append(dirty, m)
	}
	s.mu.Unlock()

	// The rollup serves the whole minutes of the window below the watermark, [lo, hi), less the dirty
	// ones; the flows table the rest. Each raw part is a plain end_time range, so DuckDB skips the
	// row groups outside it by their zone maps.
	lo := q.From + (minuteNs-q.From%minuteNs)%minuteNs
	hi := min(wm, (q.To+1)-(q.To+1)%minuteNs)
	type span struct{ a, b int64 } // [a, b)
	var raw []span
	var union []string
	var args []any
	if hi > lo {
		raw = append(raw, span{q.From, lo}, span{hi, q.To + 1})
		rolled := `minute >= ? AND minute < ?`
		var in []int64
		for _, m := range dirty {
			if m >= lo && m < hi {
				in = append(in, m)
				raw = append(raw, span{m, m + minuteNs})
			}
		}
		if len(in) > 0 {
			rolled += ` AND minute NOT IN (` + intList(in) + `)`
		}
		union = append(union, `SELECT c_node, s_node, bucket, flows, up, down, cf, resets, timeouts, retrans FROM edges_minute WHERE `+rolled)
		args = append(args, lo, hi)
	} else {
		raw = append(raw, span{q.From, q.To + 1})
	}
	for _, r := range raw {
		if r.b > r.a {
			union = append(union, `SELECT c_node, s_node, bucket, `+sumsSQL+` FROM (`+fmt.Sprintf(orientedSQL, `end_time >= ? AND end_time < ?`)+`) GROUP BY ALL`)
			args = append(args, r.a, r.b)
		}
	}
	if len(union) == 0 {
		return []Edge{}, nil
	}
	query := `SELECT c_node, s_node, bucket, sum(flows)::BIGINT, sum(up)::UBIGINT, sum(down)::UBIGINT, sum(cf)::BIGINT, sum(resets)::BIGINT,
  sum(timeouts)::BIGINT, sum(retrans)::UBIGINT FROM (
` + strings.Join(union, "\nUNION ALL\n") + `
) GROUP BY ALL`
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		s.m.errors.WithLabelValues("query").Inc()
		return nil, fmt.Errorf("query edges: %w", err)
	}
	type pair struct{ c, s uint64 }
	type part struct {
		pair
		bucket uint16
		e      Edge
	}
	var parts []part
	for rows.Next() {
		var p part
		if err := rows.Scan(&p.c, &p.s, &p.bucket, &p.e.Flows, &p.e.BytesToServer, &p.e.BytesToClient, &p.e.ConnectFailures,
			&p.e.Resets, &p.e.Timeouts, &p.e.Retransmits); err != nil {
			rows.Close()
			return nil, fmt.Errorf("query edges: %w", err)
		}
		parts = append(parts, p)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return nil, fmt.Errorf("query edges: %w", err)
	}
	nodes, err := s.nodes(ctx)
	if err != nil {
		return nil, err
	}
	sums := map[[2]Node]*edgeSums{}
	for _, p := range parts {
		c, sv := nodes[p.c], nodes[p.s]
		if q.Namespace != "" && c.Namespace != q.Namespace && sv.Namespace != q.Namespace {
			continue
		}
		switch q.GroupBy {
		case "namespace":
			c, sv = Node{Namespace: c.Namespace}, Node{Namespace: sv.Namespace}
		case "cluster":
			c, sv = Node{Cluster: c.Cluster}, Node{Cluster: sv.Cluster}
		}
		if q.GroupBy != "" && (c == Node{} || sv == Node{} || c == sv) {
			continue // crossing only between two known, different namespaces or clusters
		}
		a := sums[[2]Node{c, sv}]
		if a == nil {
			a = &edgeSums{e: Edge{Client: c, Server: sv}, hist: map[uint16]int64{}}
			sums[[2]Node{c, sv}] = a
		}
		a.e.Flows += p.e.Flows
		a.e.BytesToServer += p.e.BytesToServer
		a.e.BytesToClient += p.e.BytesToClient
		a.e.ConnectFailures += p.e.ConnectFailures
		a.e.Resets += p.e.Resets
		a.e.Timeouts += p.e.Timeouts
		a.e.Retransmits += p.e.Retransmits
		if p.bucket > 0 {
			a.hist[p.bucket] += p.e.Flows
		}
	}
	out := make([]Edge, 0, len(sums))
	for _, a := range sums {
		if q.OrderBy == "failures" && a.e.Failures() == 0 {
			continue
		}
		a.e.RTTP50us, a.e.RTTP90us, a.e.RTTP99us = percentiles(a.hist)
		out = append(out, a.e)
	}
	slices.SortFunc(out, func(a, b Edge) int {
		var c int
		switch q.OrderBy {
		case "bytes":
			c = cmp.Compare(b.BytesToServer+b.BytesToClient, a.BytesToServer+a.BytesToClient)
		case "flows":
			c = cmp.Compare(b.Flows, a.Flows)
		case "failures":
			c = cmp.Compare(b.Failures(), a.Failures())
		}
		if c != 0 {
			return c
		}
		return cmp.Or(compareNodes(a.Client, b.Client), compareNodes(a.Server, b.Server))
	})
	if q.Limit > 0 && len(out) > q.Limit {
		out = out[:q.Limit]
	}
	return out, nil
}

func compareNodes(a, b Node) int {
	return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Cluster, b.Cluster))
}

// percentiles reads p50, p90 and p99 off a histogram by nearest rank.
func percentiles(hist map[uint16]int64) (p50, p90, p99 float64) {
	var total int64
	buckets := make([]uint16, 0, len(hist))
	for b, n := range hist {
		buckets = append(buckets, b)
		total += n
	}
	if total == 0 {
		return 0, 0, 0
	}
	slices.Sort(buckets)
	at := func(q float64) float64 {
		rank := int64(math.Ceil(q * float64(total)))
		var cum int64
		for _, b := range buckets {
			if cum += hist[b]; cum >= rank {
				return bucketRTT(b)
			}
		}
		return bucketRTT(buckets[len(buckets)-1])
	}
	return at(0.5), at(0.9), at(0.99)
}

// nodes maps the graph's node ids to names.
func (s *Store) nodes(ctx context.Context) (map[uint64]Node, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT node_id, any_value(name), any_value(namespace), any_value(cluster) FROM workloads GROUP BY node_id`)
	if err != nil {
		return nil, fmt.Errorf("query nodes: %w", err)
	}
	defer rows.Close()
	out := map[uint64]Node{}
	for rows.Next() {
		var id uint64
		var n Node
		if err := rows.Scan(&id, &n.Name, &n.Namespace, &n.Cluster); err != nil {
			return nil, fmt.Errorf("query nodes: %w", err)
		}
		out[id] = n
	}
	return out, rows.Err()
}
