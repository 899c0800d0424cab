// Package app assembles flow-collector: the store, the ownership index (sonar in process, or a remote
// sonar), the pipeline, the fleet outputs, the ingest listeners and the API listener, and stops them in
// order. The binary's main only loads the config and waits for a signal.
package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/config"
	"github.com/flowlens/flowlens/collector/console"
	"github.com/flowlens/flowlens/collector/exporters"
	"github.com/flowlens/flowlens/collector/pipeline"
	"github.com/flowlens/flowlens/collector/server"
	"github.com/flowlens/flowlens/collector/store"
	"github.com/flowlens/flowlens/sonar/client"
	"github.com/flowlens/flowlens/sonar/index"
)

// App is a running collector.
type App struct {
	cfg   config.Config
	log   *zap.Logger
	store *store.Store
	idx   *index.Index
	pipe  *pipeline.Pipeline
	srv   *server.Server
	api   *http.Server
	apiLn net.Listener
	ready atomic.Bool
	fleet *exporters.Registry // the fleet view: exporters and ingest rates

	stopPipe context.CancelFunc
	closers  []func() error // closed last, in reverse order
	bg       chan struct{}  // closed when the background loops have ended
}

// Start opens everything the config names and starts serving. On error, what was started is stopped.
func Start(cfg config.Config, log *zap.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer) (_ *App, err error) {
	a := &App{cfg: cfg, log: log, bg: make(chan struct{})}
	defer func() {
		if err != nil {
			// Everything started so far, the pipeline and the API listener too: closing only the closers
			// left the API serving (its port bound) from a closed store, and the pipeline running.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			a.Stop(ctx)
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	a.store, err = store.Open(store.Config{Path: filepath.Join(cfg.DataDir, "flows.duckdb"), Retention: cfg.Retention}, log, reg)
	if err != nil {
		return nil, err
	}
	a.closers = append(a.closers, a.store.Close)

	a.idx = index.New(index.Config{MergeGap: cfg.Attribution.MergeGap, MaxAge: cfg.Attribution.MaxAge, MaxRanges: cfg.Attribution.MaxRanges})
	ext, journal, err := a.startSonar(reg)
	if err != nil {
		return nil, err
	}
	fleet, err := a.startFleet(reg)
	if err != nil {
		return nil, err
	}
	share := sharers{journal}
	if fleet.sharer != nil {
		share = append(share, fleet.sharer)
	}
	var pidx pipeline.Index = a.idx
	if addr := cfg.Attribution.SonarAddr; addr != "" {
		c, err := client.Dial(addr)
		if err != nil {
			return nil, err
		}
		a.closers = append(a.closers, c.Close)
		rep := newReporter(c, log, reg)
		rctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); rep.run(rctx) }()
		a.closers = append(a.closers, func() error { cancel(); <-done; return nil })
		share = append(share, rep)
		pidx = remoteIndex{Index: a.idx, sonar: c.Lookuper(2 * time.Second)}
		log.Info("attribution through sonar", zap.String("addr", addr))
	}

	ctx := context.Background()
	pending, err := a.store.Pending(ctx)
	if err != nil {
		return nil, err
	}
	a.pipe = pipeline.New(pipeline.Config{Deadline: cfg.Attribution.Deadline, QueueRecords: cfg.QueueRecords, ParkedRecords: cfg.ParkedRecords},
		pidx, a.store, fleet.publishers, share, log, reg)
	a.pipe.Restore(pending)
	pctx, cancel := context.WithCancel(ctx)
	a.stopPipe = cancel
	go a.pipe.Run(pctx)
	go a.housekeeping(pctx)

	// Batches stored before a restart are still answered DUPLICATE when their exporter resends them.
	dedup := server.NewDedup()
	keys, err := a.store.RecentBatches(ctx, time.Now().Add(-store.DefaultBatchRetention))
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		dedup.Seed(k.ExporterID, k.Seq)
	}
	log.Info("store opened", zap.String("dir", cfg.DataDir), zap.Int("parked", len(pending)), zap.Int("batches_remembered", len(keys)))

	if a.fleet, err = a.fleetView(reg); err != nil {
		return nil, err
	}
	if err := a.serveAPI(ext); err != nil {
		return nil, err
	}
	if a.srv, err = server.Start(cfg, log, reg, gatherer, a.fleet.Sink(a.pipe), dedup); err != nil {
		return nil, err
	}
	a.ready.Store(true)
	return a, nil
}

// housekeeping expires old flows and ownership ranges once a minute.
func (a *App) housekeeping(ctx context.Context) {
	defer close(a.bg)
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if n, err := a.store.Expire(ctx, now); err != nil {
				a.log.Warn("expire flows", zap.Error(err))
			} else if n > 0 {
				a.log.Info("expired flows", zap.Int64("rows", n))
			}
			a.idx.Expire(now.UnixNano())
		}
	}
}

// serveAPI serves the query API, the lookups and the health endpoints.
func (a *App) serveAPI(ext http.Handler) error {
	if a.cfg.APIAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.APIAddr)
	if err != nil {
		return fmt.Errorf("api listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "starting or stopping", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	a.fleet.Mount(mux)
	if ext != nil {
		mux.Handle("/", ext)
	}
	console.Register(mux) // the web console at /console/, and "/" itself redirecting there
	a.apiLn = ln
	a.api = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := a.api.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("api server", zap.Error(err))
		}
	}()
	a.log.Info("api listening", zap.Stringer("addr", ln.Addr()))
	return nil
}

// APIAddr is the address the API listens on, or "".
func (a *App) APIAddr() string {
	if a.apiLn == nil {
		return ""
	}
	return a.apiLn.Addr().String()
}

// Index is the collector's ownership index.
func (a *App) Index() *index.Index { return a.idx }

// Store is the collector's flow store.
func (a *App) Store() *store.Store { return a.store }

// Pipeline is the collector's pipeline.
func (a *App) Pipeline() *pipeline.Pipeline { return a.pipe }

// Stop stops taking batches (ingest first, letting batches in progress finish until ctx ends), commits
// what the pipeline holds, then closes the API, the outputs and the store.
func (a *App) Stop(ctx context.Context) {
	a.ready.Store(false)
	if a.srv != nil {
		a.srv.Stop(ctx)
	}
	if a.stopPipe != nil {
		a.stopPipe()
		<-a.pipe.Done()
		<-a.bg
	}
	if a.api != nil {
		a.api.Shutdown(ctx)
	}
	a.closeAll()
}

func (a *App) closeAll() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i](); err != nil {
			a.log.Warn("close", zap.Error(err))
		}
	}
	a.closers = nil
}
