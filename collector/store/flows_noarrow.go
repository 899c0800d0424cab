//go:build !duckdb_arrow

package store

import (
	"context"
	"database/sql/driver"

	"github.com/flowlens/flowlens/internal/flow"
)

// flowsIn is what appendFlows keeps between writes; the appender needs nothing.
type flowsIn struct{}

// appendFlows appends the write's new flows rows: through the appender, as the build has no Arrow.
func (s *Store) appendFlows(ctx context.Context, conn driver.Conn, flows []flow.Enriched, p *plan) error {
	return s.appendFlowsAppender(ctx, conn, flows, p)
}
