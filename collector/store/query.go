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
	rows, err := s.db.QueryContext(ctx, `SELECT id, `+flowColumnList+` FROM flow_records WHERE `+strings.Join(where, " AND ")+
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
  CASE WHEN cs THEN local_nid ELSE remote_nid END AS c_node,
  CASE WHEN cs THEN remote_nid ELSE local_nid END AS s_node,
  CASE WHEN cs THEN bytes_sent ELSE bytes_received END AS up,
  CASE WHEN cs THEN bytes_received ELSE bytes_sent END AS down,
  close, retransmits, srtt_us
FROM (SELECT *, (role = 'CLIENT' OR (role = 'UNKNOWN' AND local_port > remote_port)) AS cs FROM flows
      WHERE end_time >= ? AND start_time <= ? %s)
WHERE cs OR attribution <> 'HEARTBEAT'`

const edgeAggregates = `count(*) AS flows,
  coalesce(sum(up), 0)::UBIGINT AS up, coalesce(sum(down), 0)::UBIGINT AS down,
  count(*) FILTER (WHERE close = 'CONNECT_FAILED') AS cf,
  count(*) FILTER (WHERE close IN ('RESET_SENT', 'RESET_RECEIVED')) AS resets,
  count(*) FILTER (WHERE close = 'TIMEOUT') AS timeouts,
  coalesce(sum(retransmits), 0)::UBIGINT AS retrans,
  quantile_cont(srtt_us, [0.5, 0.9, 0.99]) FILTER (WHERE srtt_us > 0) AS rtt`

// nodes names the graph nodes of the workloads table.
const nodes = `nodes AS (SELECT node_id, any_value(name) AS name, any_value(namespace) AS namespace, any_value(cluster) AS cluster
  FROM workloads GROUP BY node_id)`

// Edges aggregates the flows q selects into edges.
func (s *Store) Edges(ctx context.Context, q EdgeQuery) ([]Edge, error) {
	filter := ""
	args := []any{q.From, q.To}
	if q.Namespace != "" {
		filter = `AND (local_nid IN (SELECT node_id FROM workloads WHERE namespace = ?)
        OR remote_nid IN (SELECT node_id FROM workloads WHERE namespace = ?))`
		args = append(args, q.Namespace, q.Namespace)
	}
	having := ""
	order := "c_name, c_ns, c_cluster, s_name, s_ns, s_cluster"
	switch q.OrderBy {
	case "":
	case "bytes":
		order = "up + down DESC, " + order
	case "flows":
		order = "flows DESC, " + order
	case "failures":
		order = "cf + resets + timeouts DESC, " + order
		having = "HAVING cf + resets + timeouts > 0"
	default:
		return nil, fmt.Errorf("unknown order %q", q.OrderBy)
	}
	oriented := fmt.Sprintf(orientedFlows, filter)
	var query string
	switch q.GroupBy {
	case "":
		query = fmt.Sprintf(`WITH %s, e AS (SELECT c_node, s_node, %s FROM (%s) GROUP BY c_node, s_node %s)
SELECT cn.name AS c_name, cn.namespace AS c_ns, cn.cluster AS c_cluster, sn.name AS s_name, sn.namespace AS s_ns, sn.cluster AS s_cluster,
  flows, up, down, cf, resets, timeouts, retrans, rtt
FROM e JOIN nodes cn ON cn.node_id = e.c_node JOIN nodes sn ON sn.node_id = e.s_node
ORDER BY %s`, nodes, edgeAggregates, oriented, having, order)
	case "namespace", "cluster":
		c, sv := "cn."+q.GroupBy, "sn."+q.GroupBy
		cols := fmt.Sprintf("'' AS c_name, %s AS c_ns, '' AS c_cluster, '' AS s_name, %s AS s_ns, '' AS s_cluster", c, sv)
		if q.GroupBy == "cluster" {
			cols = fmt.Sprintf("'' AS c_name, '' AS c_ns, %s AS c_cluster, '' AS s_name, '' AS s_ns, %s AS s_cluster", c, sv)
		}
		query = fmt.Sprintf(`WITH %s, e AS (SELECT %s, %s
FROM (%s) o JOIN nodes cn ON cn.node_id = o.c_node JOIN nodes sn ON sn.node_id = o.s_node
WHERE %[5]s <> '' AND %[6]s <> '' AND %[5]s <> %[6]s
GROUP BY ALL %[7]s)
SELECT * FROM e ORDER BY %[8]s`, nodes, cols, edgeAggregates, oriented, c, sv, having, order)
	default:
		return nil, fmt.Errorf("unknown grouping %q", q.GroupBy)
	}
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
