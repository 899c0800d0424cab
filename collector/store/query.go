package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/flowlens/flowlens/internal/flow"
)

// ErrBadCursor is returned for a cursor that no page handed out.
var ErrBadCursor = errors.New("malformed cursor")

// FlowQuery selects flows. Times are Unix ns; a flow matches when it overlaps [From, To]
// (end_time >= From and start_time <= To). Empty fields match everything.
type FlowQuery struct {
	From, To    int64
	Workload    string     // either side's workload name
	Namespace   string     // either side's namespace
	IP          netip.Addr // either side's address
	Port        uint16     // either side's port
	Attribution *flow.Attribution
	Close       *flow.Close
	Limit       int    // rows per page, > 0
	Cursor      string // from the previous page's Next
}

// FlowPage is one page of flows, newest end_time first. Next is empty on the last page.
type FlowPage struct {
	Flows []flow.Enriched `json:"flows"`
	Next  string          `json:"next,omitempty"`
}

// Flows returns one page of the flows q selects.
func (s *Store) Flows(ctx context.Context, q FlowQuery) (FlowPage, error) {
	where := []string{"end_time >= ?", "start_time <= ?"}
	args := []any{q.From, q.To}
	if q.Workload != "" {
		where = append(where, "(local_name = ? OR remote_name = ?)")
		args = append(args, q.Workload, q.Workload)
	}
	if q.Namespace != "" {
		where = append(where, "(local_namespace = ? OR remote_namespace = ?)")
		args = append(args, q.Namespace, q.Namespace)
	}
	if q.IP.IsValid() {
		where = append(where, "(local_addr = ? OR remote_addr = ?)")
		args = append(args, q.IP.String(), q.IP.String())
	}
	if q.Port != 0 {
		where = append(where, "(local_port = ? OR remote_port = ?)")
		args = append(args, q.Port, q.Port)
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
	rows, err := s.db.QueryContext(ctx, `SELECT id, `+flowColumnList+` FROM flows WHERE `+strings.Join(where, " AND ")+
		` ORDER BY end_time DESC, id DESC LIMIT ?`, args...)
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

// Node is a workload in the graph. The empty node stands for remote addresses with no known owner.
type Node struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Cluster   string `json:"cluster"`
}

// Edge is the traffic from Client's workload to Server's over a time window, each connection
// counted once.
type Edge struct {
	Client          Node    `json:"client"`
	Server          Node    `json:"server"`
	Flows           int64   `json:"flows"`
	BytesToServer   uint64  `json:"bytes_to_server"`
	BytesToClient   uint64  `json:"bytes_to_client"`
	ConnectFailures int64   `json:"connect_failures"`
	Resets          int64   `json:"resets"`
	Timeouts        int64   `json:"timeouts"`
	Retransmits     uint64  `json:"retransmits"`
	RTTP50us        float64 `json:"rtt_p50_us"` // srtt of the connections that have one (not failed connects)
	RTTP90us        float64 `json:"rtt_p90_us"`
	RTTP99us        float64 `json:"rtt_p99_us"`
}

// Failures is what a failing pathway is sorted by.
func (e Edge) Failures() int64 { return e.ConnectFailures + e.Resets + e.Timeouts }

// EdgeQuery selects and orders edges.
type EdgeQuery struct {
	From, To  int64  // Unix ns, flows overlapping [From, To]
	Namespace string // edges with either end in this namespace
	// GroupBy is "" for workloads, or "namespace" / "cluster" for the traffic between two different
	// namespaces or clusters (both known) with the other Node fields empty.
	GroupBy string
	OrderBy string // "" (client, server), "bytes", "flows" or "failures" (failing edges only)
	Limit   int    // 0: all
}

// Orientation and counting (one definition for every graph query):
//   - A CLIENT record's local side is the caller; a SERVER record's remote side is. A record whose
//     role is UNKNOWN (preexisting connection) is taken as the client's when its local port is the
//     higher one (ephemeral ports are high).
//   - Both ends of a connection may export it. Client-side records always count; a server-side record
//     counts only when its remote address was not attributed from a heartbeat. A heartbeat means the
//     client's address belonged to a workload whose exporter reported flows from it, so that exporter
//     reported this connection too. Matching the two records exactly would need a join of the
//     window's server records with its client records, several times the cost of the whole query.
const orientedFlows = `SELECT
  cs,
  CASE WHEN cs THEN local_wid ELSE remote_wid END AS c_wid,
  CASE WHEN cs THEN remote_wid ELSE local_wid END AS s_wid,
  CASE WHEN cs THEN bytes_sent ELSE bytes_received END AS up,
  CASE WHEN cs THEN bytes_received ELSE bytes_sent END AS down,
  close, retransmits, srtt_us,
  local_name, local_namespace, local_cluster, remote_name, remote_namespace, remote_cluster
FROM (SELECT *, (role = 'CLIENT' OR (role = 'UNKNOWN' AND local_port > remote_port)) AS cs FROM flows
      WHERE end_time >= ? AND start_time <= ? %s)
WHERE cs OR attribution <> 'HEARTBEAT'`

const edgeAggregates = `count(*),
  coalesce(sum(up), 0)::UBIGINT, coalesce(sum(down), 0)::UBIGINT,
  count(*) FILTER (WHERE close = 'CONNECT_FAILED'),
  count(*) FILTER (WHERE close IN ('RESET_SENT', 'RESET_RECEIVED')),
  count(*) FILTER (WHERE close = 'TIMEOUT'),
  coalesce(sum(retransmits), 0)::UBIGINT,
  quantile_cont(srtt_us, [0.5, 0.9, 0.99]) FILTER (WHERE srtt_us > 0)`

// Edges aggregates the flows q selects into edges.
func (s *Store) Edges(ctx context.Context, q EdgeQuery) ([]Edge, error) {
	filter := ""
	args := []any{q.From, q.To}
	if q.Namespace != "" {
		filter = "AND (local_namespace = ? OR remote_namespace = ?)"
		args = append(args, q.Namespace, q.Namespace)
	}
	var sel, group, where, having string
	switch q.GroupBy {
	case "":
		sel = `any_value(CASE WHEN cs THEN local_name ELSE remote_name END), any_value(CASE WHEN cs THEN local_namespace ELSE remote_namespace END),
  any_value(CASE WHEN cs THEN local_cluster ELSE remote_cluster END), any_value(CASE WHEN cs THEN remote_name ELSE local_name END),
  any_value(CASE WHEN cs THEN remote_namespace ELSE local_namespace END), any_value(CASE WHEN cs THEN remote_cluster ELSE local_cluster END)`
		group = "c_wid, s_wid"
	case "namespace", "cluster":
		c := fmt.Sprintf("CASE WHEN cs THEN local_%[1]s ELSE remote_%[1]s END", q.GroupBy)
		sv := fmt.Sprintf("CASE WHEN cs THEN remote_%[1]s ELSE local_%[1]s END", q.GroupBy)
		sel = fmt.Sprintf("'', %s, '', '', %s, ''", c, sv)
		if q.GroupBy == "cluster" {
			sel = fmt.Sprintf("'', '', %s, '', '', %s", c, sv)
		}
		group = "1, 2, 3, 4, 5, 6"
		where = fmt.Sprintf("WHERE %[1]s <> '' AND %[2]s <> '' AND %[1]s <> %[2]s", c, sv)
	default:
		return nil, fmt.Errorf("unknown grouping %q", q.GroupBy)
	}
	order := "1, 2, 3, 4, 5, 6"
	switch q.OrderBy {
	case "":
	case "bytes":
		order = "8 + 9 DESC, " + order
	case "flows":
		order = "7 DESC, " + order
	case "failures":
		order = "10 + 11 + 12 DESC, " + order
		having = "HAVING count(*) FILTER (WHERE close IN ('CONNECT_FAILED', 'RESET_SENT', 'RESET_RECEIVED', 'TIMEOUT')) > 0"
	default:
		return nil, fmt.Errorf("unknown order %q", q.OrderBy)
	}
	query := fmt.Sprintf("SELECT %s,\n  %s\nFROM (%s) %s\nGROUP BY %s %s\nORDER BY %s",
		sel, edgeAggregates, fmt.Sprintf(orientedFlows, filter), where, group, having, order)
	if q.Limit > 0 {
		query += " LIMIT " + strconv.Itoa(q.Limit)
	}
	rows, err := s.db.QueryContext(ctx, query, args...)
	if err != nil {
		s.m.errors.WithLabelValues("query").Inc()
		return nil, fmt.Errorf("query edges: %w", err)
	}
	defer rows.Close()
	out := []Edge{}
	for rows.Next() {
		var e Edge
		var q any
		if err := rows.Scan(&e.Client.Name, &e.Client.Namespace, &e.Client.Cluster, &e.Server.Name, &e.Server.Namespace, &e.Server.Cluster,
			&e.Flows, &e.BytesToServer, &e.BytesToClient, &e.ConnectFailures, &e.Resets, &e.Timeouts, &e.Retransmits, &q); err != nil {
			return nil, fmt.Errorf("query edges: %w", err)
		}
		if l, ok := q.([]any); ok && len(l) == 3 {
			e.RTTP50us, _ = l[0].(float64)
			e.RTTP90us, _ = l[1].(float64)
			e.RTTP99us, _ = l[2].(float64)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("query edges: %w", err)
	}
	return out, nil
}
