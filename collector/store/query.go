package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/flowlens/flowlens/collector/api/model"
	"github.com/flowlens/flowlens/internal/flow"
)

// ErrBadCursor is returned for a cursor that no page handed out.
var ErrBadCursor = errors.New("malformed cursor")

// FlowQuery selects flows. Times are Unix ns; a flow matches when it overlaps [From, To]
// (end_time >= From and start_time <= To). Empty fields match everything.
//
// Client and Server select one edge of the graph (or every edge from or to one node): only the records
// the graph counts match (each connection once: the client's record, or the server's when the client's
// address was not attributed from a heartbeat), oriented as the graph orients them, and the window then
// selects by end time (From <= end_time <= To) as the graph's does. So the flows of an edge are exactly
// the connections its figures sum.
type FlowQuery struct {
	From, To    int64
	Workload    string     // either side's workload name
	Namespace   string     // either side's namespace
	Peer        NodeFilter // either side's graph node (a workload of one namespace and cluster)
	Client      NodeFilter // the connection's client side's node
	Server      NodeFilter // the connection's server side's node
	IP          netip.Addr // either side's address
	Port        uint16     // either side's port
	Role        *flow.Role // the record's role (the exporter's side)
	Attribution *flow.Attribution
	Close       *flow.Close
	Limit       int    // rows per page, > 0
	Cursor      string // from the previous page's Next
}

// NodeFilter matches graph nodes field by field: a nil field matches any value, a pointer to "" only
// the empty one (the node of remote addresses with no known owner has all three empty).
type NodeFilter struct {
	Name, Namespace, Cluster *string
}

// IsZero reports whether f matches every node.
func (f NodeFilter) IsZero() bool { return f.Name == nil && f.Namespace == nil && f.Cluster == nil }

// clientSide and serverSide are the node ids of a record's client and server sides, as orientedSQL
// orients them.
const (
	clientSide = "(CASE WHEN " + clientLocalSQL + " THEN local_nid ELSE remote_nid END)"
	serverSide = "(CASE WHEN " + clientLocalSQL + " THEN remote_nid ELSE local_nid END)"
	// countedSQL keeps the records the graph counts; see orientedSQL.
	countedSQL = "(" + clientLocalSQL + " OR attribution <> 'HEARTBEAT')"
)

// FlowPage is one page of flows, newest end_time first. Next is empty on the last page.
type FlowPage = model.FlowPage

// Flows returns one page of the flows q selects.
func (s *Store) Flows(ctx context.Context, q FlowQuery) (FlowPage, error) {
	where := []string{"end_time >= ?", "start_time <= ?"}
	args := []any{q.From, q.To}
	if !q.Client.IsZero() || !q.Server.IsZero() {
		where = []string{"end_time >= ?", "end_time <= ?", countedSQL}
		for _, side := range []struct {
			f   NodeFilter
			col string
		}{{q.Client, clientSide}, {q.Server, serverSide}} {
			if side.f.IsZero() {
				continue
			}
			ids, err := s.nodeIDsWhere(ctx, side.f)
			if err != nil {
				return FlowPage{}, err
			}
			where = append(where, side.col+" IN ("+ids+")")
		}
	}
	if !q.Peer.IsZero() {
		ids, err := s.nodeIDsWhere(ctx, q.Peer)
		if err != nil {
			return FlowPage{}, err
		}
		where = append(where, "(local_nid IN ("+ids+") OR remote_nid IN ("+ids+"))")
	}
	if q.Workload != "" {
		// Workload fields live in the workloads table; filtering flows by id sets keeps the scan on
		// flows' own integer columns and joins only the page's rows.
		ids, err := s.workloadIDsWhere(ctx, "name", q.Workload)
		if err != nil {
			return FlowPage{}, err
		}
		where = append(where, "(local_wid IN ("+ids+") OR remote_wid IN ("+ids+"))")
	}
	if q.Namespace != "" {
		ids, err := s.workloadIDsWhere(ctx, "namespace", q.Namespace)
		if err != nil {
			return FlowPage{}, err
		}
		where = append(where, "(local_wid IN ("+ids+") OR remote_wid IN ("+ids+"))")
	}
	if q.IP.IsValid() {
		where = append(where, "(local_addr = ? OR remote_addr = ?)")
		args = append(args, q.IP.String(), q.IP.String())
	}
	if q.Port != 0 {
		where = append(where, "(local_port = ? OR remote_port = ?)")
		args = append(args, q.Port, q.Port)
	}
	if q.Role != nil {
		where = append(where, "role = ?")
		args = append(args, q.Role.String())
	}
	if q.Attribution != nil {
		where = append(where, "attribution = ?")
		args = append(args, q.Attribution.String())
	}
	if q.Close != nil {
		where = append(where, "close = ?")
		args = append(args, q.Close.String())
	}
	if q.Cursor != "" {
		end, id, err := parseCursor(q.Cursor)
		if err != nil {
			return FlowPage{}, err
		}
		where = append(where, "(end_time < ? OR (end_time = ? AND id < ?))")
		args = append(args, end, end, id)
	}
	limit := max(q.Limit, 1)
	args = append(args, limit+1)
	rows, err := s.db.QueryContext(ctx, recordSelect(`SELECT * FROM flows WHERE `+strings.Join(where, " AND ")+
		` ORDER BY end_time DESC, id DESC LIMIT ?`)+` ORDER BY f.end_time DESC, f.id DESC`, args...)
	if err != nil {
		s.m.errors.WithLabelValues("query").Inc()
		return FlowPage{}, fmt.Errorf("query flows: %w", err)
	}
	defer rows.Close()
	page := FlowPage{Flows: []flow.Enriched{}}
	var lastID int64
	for rows.Next() {
		if len(page.Flows) == limit {
			last := page.Flows[limit-1]
			page.Next = strconv.FormatInt(last.EndTime, 10) + "-" + strconv.FormatInt(lastID, 10)
			break
		}
		var f flow.Enriched
		var sc flowScratch
		if err := rows.Scan(append([]any{&lastID}, flowScanDest(&f, &sc)...)...); err != nil {
			return FlowPage{}, fmt.Errorf("query flows: %w", err)
		}
		if err := sc.finish(&f); err != nil {
			return FlowPage{}, fmt.Errorf("query flows: %w", err)
		}
		page.Flows = append(page.Flows, f)
	}
	if err := rows.Err(); err != nil {
		return FlowPage{}, fmt.Errorf("query flows: %w", err)
	}
	return page, nil
}

// workloadIDsWhere lists the ids of the workloads whose column equals v, as SQL literals: a literal
// list is a plain filter on the flows scan, where an IN subquery became a join on every row.
func (s *Store) workloadIDsWhere(ctx context.Context, column, v string) (string, error) {
	return s.idList(ctx, `SELECT wid FROM workloads WHERE `+column+` = ?`, v)
}

// nodeIDsWhere lists the ids of the graph nodes f matches, as SQL literals (see workloadIDsWhere).
func (s *Store) nodeIDsWhere(ctx context.Context, f NodeFilter) (string, error) {
	where, args := []string{"true"}, []any{}
	for _, c := range []struct {
		col string
		v   *string
	}{{"name", f.Name}, {"namespace", f.Namespace}, {"cluster", f.Cluster}} {
		if c.v != nil {
			where = append(where, c.col+" = ?")
			args = append(args, *c.v)
		}
	}
	return s.idList(ctx, `SELECT DISTINCT node_id FROM workloads WHERE `+strings.Join(where, " AND "), args...)
}

// idList runs query, which selects one UBIGINT column, and joins the ids with commas; "NULL" (which
// matches nothing) when there are none.
func (s *Store) idList(ctx context.Context, query string, args ...any) (string, error) {
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		return "", fmt.Errorf("query workloads: %w", err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var id uint64
		if err := rows.Scan(&id); err != nil {
			return "", fmt.Errorf("query workloads: %w", err)
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatUint(id, 10))
	}
	if b.Len() == 0 {
		return "NULL", rows.Err() // matches nothing
	}
	return b.String(), rows.Err()
}

func parseCursor(c string) (end, id int64, err error) {
	a, b, ok := strings.Cut(c, "-")
	if ok {
		end, err = strconv.ParseInt(a, 10, 64)
		if err == nil {
			id, err = strconv.ParseInt(b, 10, 64)
		}
	}
	if !ok || err != nil {
		return 0, 0, fmt.Errorf("%w %q", ErrBadCursor, c)
	}
	return end, id, nil
}

// Node is a workload in the graph; the empty node stands for remote addresses with no known owner.
type Node = model.Node

// Edge is the traffic from Client's workload to Server's, each connection counted once.
type Edge = model.Edge

// EdgeQuery selects and orders edges.
type EdgeQuery struct {
	From, To  int64  // Unix ns: connections whose (latest) record ends in [From, To]
	Namespace string // edges with either end in this namespace
	// GroupBy is "" for workloads, or "namespace" / "cluster" for the traffic between two different
	// namespaces or clusters (both known) with the other Node fields empty.
	GroupBy string
	OrderBy string // "" (client, server), "bytes", "flows" or "failures" (failing edges only)
	Limit   int    // 0: all
}
