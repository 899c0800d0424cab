// Package store is the collector's embedded flow store: one DuckDB file holding the enriched flows,
// the records parked while their remote address has no owner yet, and the keys of the batches already
// stored (so a restarted collector can still tell a resend from a new batch).
//
// Interim records (close ACTIVE, cumulative counters) and the final record of one connection are
// merged on write, so every connection is stored once and its counters are never counted twice. See
// Write for the rule and merge.go for how it stays cheap.
//
// A Store is safe for concurrent use: writes are serialized on one connection, queries run on others.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/duckdb/duckdb-go/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/internal/flow"
)

// Config says where the store lives and how long it keeps what.
type Config struct {
	Path      string        // DuckDB file, e.g. data/flows.duckdb; its directory is created if missing
	Retention time.Duration // flows whose end_time is older are dropped by Expire; default 7 days
	// BatchRetention is how long the keys of stored batches are kept for de-duplication after a
	// restart; default 1 hour (an exporter gives up resending well before that).
	BatchRetention time.Duration
	// RollupInterval is how often the store extends the graph queries' per-minute rollup; default 10 s,
	// negative: never (only Expire and Rollup do).
	RollupInterval time.Duration
	// Threads is DuckDB's worker thread count; default 1. The collector writes many small
	// transactions, and with more threads each one's work is handed between threads: BenchmarkWrite
	// stored 25 % more flows per CPU-second with one thread. Queries run on that one thread too
	// (BenchmarkQuery10M: 45 ms → 72 ms on 2 cores); set it higher where queries matter more.
	Threads int
}

// Default retentions.
const (
	DefaultRetention      = 7 * 24 * time.Hour
	DefaultBatchRetention = time.Hour
)

// BatchKey names one exporter batch.
type BatchKey struct {
	ExporterID string
	Seq        uint64
}

// PendingKey names one parked record: the batch it came in, and N, a number the pipeline gives it that
// is unique within that batch (the datagrams of one UDP batch share its sequence number, so a record's
// index in its datagram would not be).
type PendingKey struct {
	ExporterID string
	Seq        uint64
	N          uint32
}

// Pending is a record parked until its remote address has an owner or Deadline (Unix ns) passes.
type Pending struct {
	Key      PendingKey
	Flow     flow.Enriched
	Deadline int64
}

// Write is everything one collector step stores, in one transaction.
type Write struct {
	Flows    []flow.Enriched // attributed (or UNATTRIBUTED) records to store
	Pending  []Pending       // records parked while their remote IP has no owner yet
	Resolved []PendingKey    // pending records that this write stores in Flows: deleted from pending
	Batches  []BatchKey      // batches this write completes
	Cursor   *Cursor         // a stream position this write reaches, or nil
}

// Cursor is a position in a shared stream: the sequence number of the last message stored.
type Cursor struct {
	Stream string
	Seq    uint64
}

// Store is an open flow store.
type Store struct {
	cfg Config
	log *zap.Logger
	m   *metrics

	connector *duckdb.Connector
	db        *sql.DB // queries

	mu     sync.Mutex // serializes writes, Expire and the merge index
	wconn  *sql.Conn  // the one connection every write uses (the appender needs a raw connection)
	open   map[connKey]openEntry
	wids   map[uint64]struct{} // the workloads table's ids
	nextID int64
	npend  int64
	in     flowsIn // appendFlows' buffers, reused by every write

	watermark int64              // the rollup covers end times below this
	dirty     map[int64]struct{} // rolled-up minutes changed since
	stop      chan struct{}      // stops the rollup loop
	loopDone  chan struct{}
}

type metrics struct {
	writeSeconds prometheus.Histogram
	rows         *prometheus.CounterVec
	errors       *prometheus.CounterVec
	pending      prometheus.Gauge
	expired      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		writeSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "flowlens_store_write_seconds", Help: "Time to store one Write, commit included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms .. 4 s
		}),
		rows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_store_rows_total",
			Help: "Rows by outcome: flows stored, superseded (an earlier record of the same connection replaced), stale (a record older than the stored one, not stored), pending stored, pending resolved, batches.",
		}, []string{"outcome"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_store_errors_total", Help: "Store operations that failed, by operation.",
		}, []string{"op"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "flowlens_store_pending", Help: "Records parked in the store waiting for their remote owner.",
		}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "flowlens_store_expired_flows_total", Help: "Flows dropped by retention.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.writeSeconds, m.rows, m.errors, m.pending, m.expired)
	}
	return m
}

// Open opens (or creates) the store at cfg.Path and loads what the merge needs: the connections whose
// latest stored record is ACTIVE, the next row id and the pending count.
func Open(cfg Config, log *zap.Logger, reg prometheus.Registerer) (*Store, error) {
	if cfg.Path == "" {
		return nil, errors.New("store: path is empty")
	}
	if cfg.Retention == 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.BatchRetention == 0 {
		cfg.BatchRetention = DefaultBatchRetention
	}
	if cfg.Threads == 0 {
		cfg.Threads = 1
	}
	if cfg.Retention < 0 || cfg.BatchRetention < 0 {
		return nil, errors.New("store: retention must be positive")
	}
	if cfg.Threads < 0 {
		return nil, errors.New("store: threads must be positive")
	}
	if dir := filepath.Dir(cfg.Path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("store directory: %w", err)
		}
	}
	connector, err := duckdb.NewConnector(cfg.Path, nil)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", cfg.Path, err)
	}
	s := &Store{cfg: cfg, log: log, m: newMetrics(reg), connector: connector, db: sql.OpenDB(connector),
		open: make(map[connKey]openEntry), wids: make(map[uint64]struct{}), dirty: make(map[int64]struct{})}
	if err := s.init(); err != nil {
		s.Close()
		return nil, err
	}
	if cfg.RollupInterval == 0 {
		cfg.RollupInterval = 10 * time.Second
	}
	if cfg.RollupInterval > 0 {
		s.stop, s.loopDone = make(chan struct{}), make(chan struct{})
		go s.rollupLoop(cfg.RollupInterval, s.stop, s.loopDone)
	}
	log.Info("store open", zap.String("path", cfg.Path), zap.Int("open_connections", len(s.open)),
		zap.Int64("pending", s.npend), zap.Duration("retention", cfg.Retention))
	return s, nil
}

func (s *Store) init() error {
	ctx := context.Background()
	var err error
	if s.wconn, err = s.db.Conn(ctx); err != nil {
		return fmt.Errorf("store connection: %w", err)
	}
	if _, err := s.wconn.ExecContext(ctx, fmt.Sprintf("SET threads = %d", s.cfg.Threads)); err != nil {
		return fmt.Errorf("store threads: %w", err)
	}
	for _, q := range append(schema(), rollupSchema()...) {
		if _, err := s.wconn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("store schema: %w", err)
		}
	}
	if err := s.wconn.QueryRowContext(ctx, `SELECT coalesce(max(id), 0) + 1 FROM flows`).Scan(&s.nextID); err != nil {
		return fmt.Errorf("store next id: %w", err)
	}
	if err := s.wconn.QueryRowContext(ctx, `SELECT count(*) FROM pending`).Scan(&s.npend); err != nil {
		return fmt.Errorf("store pending count: %w", err)
	}
	s.m.pending.Set(float64(s.npend))
	rows, err := s.wconn.QueryContext(ctx, `SELECT wid FROM workloads`)
	if err != nil {
		return fmt.Errorf("store workloads: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id uint64
		if err := rows.Scan(&id); err != nil {
			return fmt.Errorf("store workloads: %w", err)
		}
		s.wids[id] = struct{}{}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("store workloads: %w", err)
	}
	if err := s.loadRollupState(ctx); err != nil {
		return err
	}
	return s.loadOpen(ctx)
}

// Close closes the store. Writes in progress finish first.
func (s *Store) Close() error {
	if s.stop != nil {
		close(s.stop)
		<-s.loopDone
		s.stop = nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	if s.wconn != nil {
		errs = append(errs, s.wconn.Close())
		s.wconn = nil
	}
	if s.db != nil {
		errs = append(errs, s.db.Close())
		s.db = nil
	}
	if s.connector != nil {
		errs = append(errs, s.connector.Close())
		s.connector = nil
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// Pending returns every parked record, oldest deadline first.
func (s *Store) Pending(ctx context.Context) ([]Pending, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT p_exporter, p_seq, p_n, deadline, `+flowColumnList+` FROM pending ORDER BY deadline, p_exporter, p_seq, p_n`)
	if err != nil {
		s.m.errors.WithLabelValues("pending").Inc()
		return nil, fmt.Errorf("read pending: %w", err)
	}
	defer rows.Close()
	var out []Pending
	for rows.Next() {
		var p Pending
		var sc flowScratch
		dst := append([]any{&p.Key.ExporterID, &p.Key.Seq, &p.Key.N, &p.Deadline}, flowScanDest(&p.Flow, &sc)...)
		if err := rows.Scan(dst...); err != nil {
			return nil, fmt.Errorf("read pending: %w", err)
		}
		if err := sc.finish(&p.Flow); err != nil {
			return nil, fmt.Errorf("read pending: %w", err)
		}
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read pending: %w", err)
	}
	return out, nil
}

// StreamCursor is the sequence number of the last message of stream that a write stored; 0 if none.
func (s *Store) StreamCursor(ctx context.Context, stream string) (uint64, error) {
	var seq uint64
	err := s.db.QueryRowContext(ctx, `SELECT seq FROM stream_cursors WHERE stream = ?`, stream).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		s.m.errors.WithLabelValues("cursor").Inc()
		return 0, fmt.Errorf("read stream cursor %s: %w", stream, err)
	}
	return seq, nil
}

// RecentBatches returns the keys of the batches stored at or after since.
func (s *Store) RecentBatches(ctx context.Context, since time.Time) ([]BatchKey, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT exporter_id, seq FROM batches WHERE stored_at >= ? ORDER BY exporter_id, seq`, since.UnixNano())
	if err != nil {
		s.m.errors.WithLabelValues("batches").Inc()
		return nil, fmt.Errorf("read batches: %w", err)
	}
	defer rows.Close()
	var out []BatchKey
	for rows.Next() {
		var k BatchKey
		if err := rows.Scan(&k.ExporterID, &k.Seq); err != nil {
			return nil, fmt.Errorf("read batches: %w", err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read batches: %w", err)
	}
	return out, nil
}

// Expire drops the flows whose end_time is older than the retention and the batch keys older than
// the batch retention, and returns how many flows it dropped. It also extends the rollup. Pending records are not expired here:
// the pipeline stores them as UNATTRIBUTED when their deadline passes.
func (s *Store) Expire(ctx context.Context, now time.Time) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.wconn == nil {
		return 0, errors.New("expire: store closed")
	}
	cutoff := now.Add(-s.cfg.Retention).UnixNano()
	res, err := s.wconn.ExecContext(ctx, `DELETE FROM flows WHERE end_time < ?`, cutoff)
	if err != nil {
		s.m.errors.WithLabelValues("expire").Inc()
		return 0, fmt.Errorf("expire flows: %w", err)
	}
	n, _ := res.RowsAffected()
	if _, err := s.wconn.ExecContext(ctx, `DELETE FROM batches WHERE stored_at < ?`, now.Add(-s.cfg.BatchRetention).UnixNano()); err != nil {
		s.m.errors.WithLabelValues("expire").Inc()
		return n, fmt.Errorf("expire batches: %w", err)
	}
	for k, e := range s.open {
		if e.end < cutoff {
			delete(s.open, k)
		}
	}
	s.m.expired.Add(float64(n))
	if _, err := s.wconn.ExecContext(ctx, `DELETE FROM edges_minute WHERE minute < ?`, cutoff-cutoff%minuteNs); err != nil {
		s.m.errors.WithLabelValues("expire").Inc()
		return n, fmt.Errorf("expire rollup: %w", err)
	}
	// The flows of the oldest kept minute that were just dropped are in its rolled-up sums still.
	if cutoff%minuteNs != 0 && cutoff-cutoff%minuteNs < s.watermark {
		s.dirty[cutoff-cutoff%minuteNs] = struct{}{}
		if _, err := s.wconn.ExecContext(ctx, `INSERT INTO dirty_minutes VALUES (?)`, cutoff-cutoff%minuteNs); err != nil {
			return n, fmt.Errorf("expire rollup: %w", err)
		}
	}
	if err := s.rollup(ctx, now); err != nil {
		s.m.errors.WithLabelValues("rollup").Inc()
		return n, fmt.Errorf("rollup: %w", err)
	}
	return n, nil
}
