package store

import (
	"context"
	"database/sql/driver"
	"fmt"

	"github.com/duckdb/duckdb-go/v2"

	"github.com/flowlens/flowlens/internal/flow"
)

// appendFlowsAppender appends the write's new flows rows through DuckDB's appender, one value at a
// time. Built with -tags duckdb_arrow, flows_arrow.go hands larger writes over as one Arrow record
// batch instead.
func (s *Store) appendFlowsAppender(ctx context.Context, conn driver.Conn, flows []flow.Enriched, p *plan) error {
	vals := make([]driver.Value, 0, 6+len(recordColumns))
	return appendRows(ctx, conn, "flows", func(a *duckdb.Appender) error {
		for _, r := range p.rows {
			if r.skip {
				continue
			}
			f := &flows[r.flow]
			lw, ln := s.workload(p, &f.LocalWorkload)
			rw, rn := s.workload(p, &f.RemoteWorkload)
			k := keyOf(f)
			vals = append(vals[:0], r.id, k.hash(), lw, rw, ln, rn)
			if err := a.AppendRow(recordValues(vals, f)...); err != nil {
				return fmt.Errorf("flow %d: %w", r.flow, err)
			}
		}
		return nil
	})
}
