package store

import (
	"database/sql/driver"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/flowlens/flowlens/internal/flow"
)

// flowColumns are the columns of one flow.Enriched, in the order flowValues fills them. Both the
// flows and the pending tables carry them.
var flowColumns = []struct{ name, typ string }{
	{"exporter_id", "VARCHAR"},
	{"local_addr", "VARCHAR"}, // text: what users type and read; compared for equality only
	{"local_port", "USMALLINT"},
	{"remote_addr", "VARCHAR"},
	{"remote_port", "USMALLINT"},
	{"role", enumType(roleNames)},
	{"start_time", "BIGINT"}, // Unix ns; 0 for preexisting connections
	{"end_time", "BIGINT"},
	{"bytes_sent", "UBIGINT"},
	{"bytes_received", "UBIGINT"},
	{"segs_sent", "UINTEGER"},
	{"segs_received", "UINTEGER"},
	{"retransmits", "UINTEGER"},
	{"srtt_us", "UINTEGER"},
	{"rtt_var_us", "UINTEGER"},
	{"min_rtt_us", "UINTEGER"},
	{"close", enumType(closeNames)},
	{"error", "VARCHAR"},
	{"pid", "UINTEGER"},
	{"comm", "VARCHAR"},
	{"netns", "UINTEGER"},
	{"cgroup_id", "UBIGINT"},
	{"preexisting", "BOOLEAN"},
	{"attribution", enumType(attributionNames)},
	{"local_name", "VARCHAR"},
	{"local_namespace", "VARCHAR"},
	{"local_pod", "VARCHAR"},
	{"local_pod_uid", "VARCHAR"},
	{"local_node", "VARCHAR"},
	{"local_cluster", "VARCHAR"},
	{"remote_name", "VARCHAR"},
	{"remote_namespace", "VARCHAR"},
	{"remote_pod", "VARCHAR"},
	{"remote_pod_uid", "VARCHAR"},
	{"remote_node", "VARCHAR"},
	{"remote_cluster", "VARCHAR"},
}

// flowColumnList is the flow columns, comma separated, for SELECTs.
var flowColumnList = func() string {
	names := make([]string, len(flowColumns))
	for i, c := range flowColumns {
		names[i] = c.name
	}
	return strings.Join(names, ", ")
}()

// enumNames reads a flow enum's names from its String method, up to the first value it does not name.
func enumNames(name func(int) fmt.Stringer) []string {
	var vals []string
	for i := 0; i < 256; i++ {
		s := name(i).String()
		if strings.Contains(s, "(") {
			break
		}
		vals = append(vals, s)
	}
	return vals
}

// The flow enums' names, indexed by value.
var (
	roleNames        = enumNames(func(i int) fmt.Stringer { return flow.Role(i) })
	closeNames       = enumNames(func(i int) fmt.Stringer { return flow.Close(i) })
	attributionNames = enumNames(func(i int) fmt.Stringer { return flow.Attribution(i) })
)

// enumType spells a DuckDB ENUM of names.
func enumType(names []string) string {
	return "ENUM('" + strings.Join(names, "', '") + "')"
}

// recordColumns are the flow columns the flows table holds itself: all but the workloads.
var recordColumns = flowColumns[:24]

// workloadFields are the columns of a workload, prefixed local_ or remote_ in flowColumns.
var workloadFields = []string{"name", "namespace", "pod", "pod_uid", "node", "cluster"}

func columnDefs(cols []struct{ name, typ string }) string {
	var b strings.Builder
	for i, c := range cols {
		if i > 0 {
			b.WriteString(",\n  ")
		}
		b.WriteString(c.name + " " + c.typ + " NOT NULL")
	}
	return b.String()
}

// schema is the DDL, idempotent.
//
// flows holds one row per connection per exporter (interim records merged into it). Workloads are
// kept once each in the workloads table and referenced by id (local_wid, remote_wid hash all six
// fields), because appending twelve strings per flow cost more than everything else in a write.
// local_nid and remote_nid hash (name, namespace, cluster), the graph's node, so the graph queries
// group by two integers. id orders rows by insertion, so deleting a superseded row by id touches
// only the row groups its zone maps admit.
//
// key_hash hashes the connection key, so the look-up of a write's new interim records is one
// integer IN list (pruned by start_time) rather than a join on six columns.
//
// flow_records is the view with every field of flow.Enriched as a column, for queries and for users.
func schema() []string {
	return []string{
		`CREATE TABLE IF NOT EXISTS workloads (
  wid UBIGINT NOT NULL,
  node_id UBIGINT NOT NULL,
  name VARCHAR NOT NULL, namespace VARCHAR NOT NULL, pod VARCHAR NOT NULL, pod_uid VARCHAR NOT NULL,
  node VARCHAR NOT NULL, cluster VARCHAR NOT NULL)`,
		`CREATE TABLE IF NOT EXISTS flows (
  id BIGINT NOT NULL,
  key_hash UBIGINT NOT NULL,
  local_wid UBIGINT NOT NULL, remote_wid UBIGINT NOT NULL,
  local_nid UBIGINT NOT NULL, remote_nid UBIGINT NOT NULL,
  ` + columnDefs(recordColumns) + `)`,
		`CREATE TABLE IF NOT EXISTS pending (
  p_exporter VARCHAR NOT NULL,
  p_seq UBIGINT NOT NULL,
  p_n UINTEGER NOT NULL,
  deadline BIGINT NOT NULL,
  ` + columnDefs(flowColumns) + `)`,
		`CREATE TABLE IF NOT EXISTS batches (exporter_id VARCHAR NOT NULL, seq UBIGINT NOT NULL, stored_at BIGINT NOT NULL)`,
		// How far into each shared stream this store has stored (package natsflows' Consumer): advanced
		// in the transaction that stores the messages, so a restart resumes exactly after them.
		`CREATE TABLE IF NOT EXISTS stream_cursors (stream VARCHAR PRIMARY KEY, seq UBIGINT NOT NULL)`,
		`CREATE OR REPLACE VIEW flow_records AS ` + recordSelect(`SELECT * FROM flows`),
	}
}

// recordSelect selects id and every flow column from the flows rows of from (a table or a
// subquery), with their workloads joined.
func recordSelect(from string) string {
	var b strings.Builder
	b.WriteString("SELECT f.id")
	for _, c := range flowColumns {
		side, field, ok := strings.Cut(c.name, "_")
		if ok && (side == "local" || side == "remote") && slices.Contains(workloadFields, field) {
			fmt.Fprintf(&b, ", %sw.%s AS %s", side[:1], field, c.name)
		} else {
			b.WriteString(", f." + c.name)
		}
	}
	b.WriteString(" FROM (" + from + ") f JOIN workloads lw ON lw.wid = f.local_wid JOIN workloads rw ON rw.wid = f.remote_wid")
	return b.String()
}

// addrString spells an address for the store; the zero Addr (never sent by a valid exporter) is "".
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// recordValues appends f's values in recordColumns order.
func recordValues(dst []driver.Value, f *flow.Enriched) []driver.Value {
	return append(dst,
		f.ExporterID, addrString(f.LocalAddr), f.LocalPort, addrString(f.RemoteAddr), f.RemotePort,
		f.Role.String(), f.StartTime, f.EndTime, f.BytesSent, f.BytesReceived, f.SegsSent, f.SegsReceived,
		f.Retransmits, f.SrttUs, f.RttVarUs, f.MinRttUs, f.Close.String(), f.Error, f.Pid, f.Comm, f.Netns,
		f.CgroupID, f.Preexisting, f.Attribution.String())
}

// flowValues appends f's values in flowColumns order.
func flowValues(dst []driver.Value, f *flow.Enriched) []driver.Value {
	l, r := &f.LocalWorkload, &f.RemoteWorkload
	return append(recordValues(dst, f),
		l.Name, l.Namespace, l.Pod, l.PodUID, l.Node, l.Cluster,
		r.Name, r.Namespace, r.Pod, r.PodUID, r.Node, r.Cluster)
}

// flowScratch holds the columns that need parsing after a Scan.
type flowScratch struct {
	local, remote, role, close, attribution string
}

// flowScanDest returns Scan destinations for the flow columns; call sc.finish afterwards.
func flowScanDest(f *flow.Enriched, sc *flowScratch) []any {
	l, r := &f.LocalWorkload, &f.RemoteWorkload
	return []any{
		&f.ExporterID, &sc.local, &f.LocalPort, &sc.remote, &f.RemotePort,
		&sc.role, &f.StartTime, &f.EndTime, &f.BytesSent, &f.BytesReceived, &f.SegsSent, &f.SegsReceived,
		&f.Retransmits, &f.SrttUs, &f.RttVarUs, &f.MinRttUs, &sc.close, &f.Error, &f.Pid, &f.Comm, &f.Netns,
		&f.CgroupID, &f.Preexisting, &sc.attribution,
		&l.Name, &l.Namespace, &l.Pod, &l.PodUID, &l.Node, &l.Cluster,
		&r.Name, &r.Namespace, &r.Pod, &r.PodUID, &r.Node, &r.Cluster,
	}
}

func (sc *flowScratch) finish(f *flow.Enriched) error {
	var err error
	if sc.local != "" {
		if f.LocalAddr, err = netip.ParseAddr(sc.local); err != nil {
			return fmt.Errorf("local_addr: %w", err)
		}
	}
	if sc.remote != "" {
		if f.RemoteAddr, err = netip.ParseAddr(sc.remote); err != nil {
			return fmt.Errorf("remote_addr: %w", err)
		}
	}
	if err := f.Role.UnmarshalText([]byte(sc.role)); err != nil {
		return err
	}
	if err := f.Close.UnmarshalText([]byte(sc.close)); err != nil {
		return err
	}
	return f.Attribution.UnmarshalText([]byte(sc.attribution))
}

// workloadIDs hashes a workload (FNV-1a: stable across restarts, unlike maphash): wid over all its
// fields, node over the fields that make a graph node. At 64 bits a collision between two of a
// fleet's workloads is too unlikely to guard against.
func workloadIDs(w *flow.Workload) (wid, node uint64) {
	h := uint64(14695981039346656037)
	for i, s := range [6]string{w.Name, w.Namespace, w.Cluster, w.Pod, w.PodUID, w.Node} {
		if i == 3 {
			node = h
		}
		for j := 0; j < len(s); j++ {
			h = (h ^ uint64(s[j])) * 1099511628211
		}
		h *= 1099511628211 // a zero byte between fields, so ("a","b") and ("ab","") differ
	}
	return h, node
}
