//go:build duckdb_arrow

package store

import (
	"context"
	"database/sql/driver"
	"fmt"
	"net/netip"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/duckdb/duckdb-go/v2"

	"github.com/flowlens/flowlens/internal/flow"
)

// flowsSchema is the flows table's columns as Arrow types, in table order. The enums travel as
// strings and DuckDB casts them.
var flowsSchema = arrow.NewSchema([]arrow.Field{
	{Name: "id", Type: arrow.PrimitiveTypes.Int64},
	{Name: "key_hash", Type: arrow.PrimitiveTypes.Uint64},
	{Name: "local_wid", Type: arrow.PrimitiveTypes.Uint64},
	{Name: "remote_wid", Type: arrow.PrimitiveTypes.Uint64},
	{Name: "local_nid", Type: arrow.PrimitiveTypes.Uint64},
	{Name: "remote_nid", Type: arrow.PrimitiveTypes.Uint64},
	{Name: "exporter_id", Type: arrow.BinaryTypes.String},
	{Name: "local_addr", Type: arrow.BinaryTypes.String},
	{Name: "local_port", Type: arrow.PrimitiveTypes.Uint16},
	{Name: "remote_addr", Type: arrow.BinaryTypes.String},
	{Name: "remote_port", Type: arrow.PrimitiveTypes.Uint16},
	{Name: "role", Type: arrow.BinaryTypes.String},
	{Name: "start_time", Type: arrow.PrimitiveTypes.Int64},
	{Name: "end_time", Type: arrow.PrimitiveTypes.Int64},
	{Name: "bytes_sent", Type: arrow.PrimitiveTypes.Uint64},
	{Name: "bytes_received", Type: arrow.PrimitiveTypes.Uint64},
	{Name: "segs_sent", Type: arrow.PrimitiveTypes.Uint32},
	{Name: "segs_received", Type: arrow.PrimitiveTypes.Uint32},
	{Name: "retransmits", Type: arrow.PrimitiveTypes.Uint32},
	{Name: "srtt_us", Type: arrow.PrimitiveTypes.Uint32},
	{Name: "rtt_var_us", Type: arrow.PrimitiveTypes.Uint32},
	{Name: "min_rtt_us", Type: arrow.PrimitiveTypes.Uint32},
	{Name: "close", Type: arrow.BinaryTypes.String},
	{Name: "error", Type: arrow.BinaryTypes.String},
	{Name: "pid", Type: arrow.PrimitiveTypes.Uint32},
	{Name: "comm", Type: arrow.BinaryTypes.String},
	{Name: "netns", Type: arrow.PrimitiveTypes.Uint32},
	{Name: "cgroup_id", Type: arrow.PrimitiveTypes.Uint64},
	{Name: "preexisting", Type: arrow.FixedWidthTypes.Boolean},
	{Name: "attribution", Type: arrow.BinaryTypes.String},
}, nil)

// arrowMinRows: smaller writes go through the appender. Registering the Arrow view and planning the
// INSERT cost about 3 ms more per write than an appender, and Arrow saves about 2.3 µs per row
// (BenchmarkWrite: final_512 is faster with the appender, final with Arrow). A variable so that
// tests can send every write through Arrow.
var arrowMinRows = 1500

// flowsIn is the Arrow record builder appendFlows fills, reused by every write.
type flowsIn struct {
	b   *array.RecordBuilder
	buf []byte
}

// appendFlows hands the write's new flows rows to DuckDB as one Arrow record batch and inserts them
// with one INSERT ... SELECT: the columns are filled in Go slices and DuckDB reads them whole, where
// the appender took one cgo call or interface conversion per value.
func (s *Store) appendFlows(ctx context.Context, conn driver.Conn, flows []flow.Enriched, p *plan) error {
	if len(p.rows) < arrowMinRows {
		return s.appendFlowsAppender(ctx, conn, flows, p)
	}
	in := &s.in
	if in.b == nil {
		in.b = array.NewRecordBuilder(memory.DefaultAllocator, flowsSchema)
	}
	b := in.b
	b.Reserve(len(p.rows))
	// The builders in flowsSchema order.
	i64 := func(i int) *array.Int64Builder { return b.Field(i).(*array.Int64Builder) }
	u64 := func(i int) *array.Uint64Builder { return b.Field(i).(*array.Uint64Builder) }
	u32 := func(i int) *array.Uint32Builder { return b.Field(i).(*array.Uint32Builder) }
	u16 := func(i int) *array.Uint16Builder { return b.Field(i).(*array.Uint16Builder) }
	str := func(i int) *array.StringBuilder { return b.Field(i).(*array.StringBuilder) }
	id, hash, lw, rw, ln, rn := i64(0), u64(1), u64(2), u64(3), u64(4), u64(5)
	exporter, laddr, lport, raddr, rport, role := str(6), str(7), u16(8), str(9), u16(10), str(11)
	start, end, bsent, brecv := i64(12), i64(13), u64(14), u64(15)
	ssent, srecv, retr, srtt, rttvar, minrtt := u32(16), u32(17), u32(18), u32(19), u32(20), u32(21)
	closeB, errB, pid, comm, netns, cgroup := str(22), str(23), u32(24), str(25), u32(26), u64(27)
	pre, attr := b.Field(28).(*array.BooleanBuilder), str(29)
	addr := func(sb *array.StringBuilder, a netip.Addr) {
		if !a.IsValid() {
			sb.Append("")
			return
		}
		in.buf = a.AppendTo(in.buf[:0])
		sb.BinaryBuilder.Append(in.buf)
	}
	n := 0
	for _, r := range p.rows {
		if r.skip {
			continue
		}
		n++
		f := &flows[r.flow]
		// DuckDB would reject an unknown enum value too, but without saying which record had it.
		if int(f.Role) >= len(roleNames) || int(f.Close) >= len(closeNames) || int(f.Attribution) >= len(attributionNames) {
			b.NewRecordBatch().Release() // empties the builders for the next write
			return fmt.Errorf("append flows: flow %d: role %d, close %d or attribution %d is not a known value", r.flow, f.Role, f.Close, f.Attribution)
		}
		lwid, lnid := s.workload(p, &f.LocalWorkload)
		rwid, rnid := s.workload(p, &f.RemoteWorkload)
		k := keyOf(f)
		id.Append(r.id)
		hash.Append(k.hash())
		lw.Append(lwid)
		rw.Append(rwid)
		ln.Append(lnid)
		rn.Append(rnid)
		exporter.Append(f.ExporterID)
		addr(laddr, f.LocalAddr)
		lport.Append(f.LocalPort)
		addr(raddr, f.RemoteAddr)
		rport.Append(f.RemotePort)
		role.Append(roleNames[f.Role])
		start.Append(f.StartTime)
		end.Append(f.EndTime)
		bsent.Append(f.BytesSent)
		brecv.Append(f.BytesReceived)
		ssent.Append(f.SegsSent)
		srecv.Append(f.SegsReceived)
		retr.Append(f.Retransmits)
		srtt.Append(f.SrttUs)
		rttvar.Append(f.RttVarUs)
		minrtt.Append(f.MinRttUs)
		closeB.Append(closeNames[f.Close])
		errB.Append(f.Error)
		pid.Append(f.Pid)
		comm.Append(f.Comm)
		netns.Append(f.Netns)
		cgroup.Append(f.CgroupID)
		pre.Append(f.Preexisting)
		attr.Append(attributionNames[f.Attribution])
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	if n == 0 {
		return nil
	}
	reader, err := array.NewRecordReader(flowsSchema, []arrow.RecordBatch{rec})
	if err != nil {
		return fmt.Errorf("append flows: %w", err)
	}
	defer reader.Release()
	ar, err := duckdb.NewArrowFromConn(conn)
	if err != nil {
		return fmt.Errorf("append flows: %w", err)
	}
	// A temporary view of this connection, replaced by the next write; the name is unlikely to meet
	// a table of the user's (registering over a table fails).
	release, err := ar.RegisterView(reader, "flowlens_write_in")
	if err != nil {
		return fmt.Errorf("append flows: %w", err)
	}
	defer release()
	ex, ok := conn.(driver.ExecerContext)
	if !ok {
		return fmt.Errorf("append flows: %T cannot exec", conn)
	}
	if _, err := ex.ExecContext(ctx, `INSERT INTO flows BY NAME SELECT * FROM flowlens_write_in`, nil); err != nil {
		return fmt.Errorf("append flows: %w", err)
	}
	return nil
}
