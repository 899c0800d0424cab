package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/flowlens/flowlens/collector/fleet"
	"github.com/flowlens/flowlens/collector/fleet/ownership"
	"github.com/flowlens/flowlens/sonar/api"
	"github.com/flowlens/flowlens/sonar/cidrfile"
	"github.com/flowlens/flowlens/sonar/config"
	"github.com/flowlens/flowlens/sonar/index"
	"github.com/flowlens/flowlens/sonar/kube"
	"github.com/flowlens/flowlens/sonar/persist"
)

// listening is told the listeners' addresses once sonar serves (tests listen on port 0).
type listening func(grpcAddr, httpAddr net.Addr)

// run serves until ctx ends, then stops in order: sources, listeners (gracefully, within
// ShutdownTimeout), and last the claim log, which writes a final snapshot.
func run(ctx context.Context, cfg config.Config, log *zap.Logger, reg *prometheus.Registry, ready listening) error {
	idx := index.New(cfg.Index())
	registerIndexMetrics(reg, idx)
	opts := []api.Option{api.WithMetrics(api.NewMetrics(reg))}

	var plog *persist.Log
	if cfg.DataDir != "" {
		var err error
		if plog, err = persist.Open(cfg.DataDir, idx, log, reg, persist.Options{SnapshotInterval: cfg.SnapshotInterval}); err != nil {
			return err
		}
		defer func() {
			if err := plog.Close(); err != nil {
				log.Error("closing the claim log", zap.Error(err))
			}
		}()
		opts = append(opts, api.WithJournal(plog))
	}

	var wg sync.WaitGroup // the sources and loops below; all end with ctx
	defer wg.Wait()
	sctx, stopSources := context.WithCancel(ctx)
	defer stopSources()

	if cfg.CIDRFile != "" {
		f, err := cidrfile.Load(cfg.CIDRFile, idx, log, reg)
		if err != nil {
			return err
		}
		wg.Go(func() {
			if err := f.Run(sctx); err != nil {
				log.Error("cidr file watch stopped; the table in use stays", zap.Error(err))
			}
		})
	}
	if cfg.Kubeconfig != "" || cfg.InCluster {
		src, err := kubeSource(cfg, idx, plog, log, reg)
		if err != nil {
			return err
		}
		wg.Go(func() {
			if err := src.Run(sctx); err != nil {
				log.Error("kubernetes source stopped", zap.Error(err))
			}
		})
	}
	if cfg.NATSURL != "" {
		if err := followOwnership(sctx, &wg, cfg, idx, log, reg); err != nil {
			return err
		}
	}
	dropped := prometheus.NewCounter(prometheus.CounterOpts{Name: "flowlens_sonar_ranges_expired_total",
		Help: "Ranges dropped by retention (max_age, max_ranges)."})
	reg.MustRegister(dropped)
	wg.Go(func() {
		t := time.NewTicker(cfg.ExpireInterval)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case now := <-t.C:
				dropped.Add(float64(idx.Expire(now.UnixNano())))
			}
		}
	})

	var gopts []grpc.ServerOption
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return fmt.Errorf("tls: %w", err)
		}
		gopts = append(gopts, grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})))
	}
	gl, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc listener: %w", err)
	}
	gs := grpc.NewServer(gopts...)
	api.NewGRPC(idx, log, opts...).Register(gs)
	go func() {
		if err := gs.Serve(gl); err != nil {
			log.Error("grpc server", zap.Error(err))
		}
	}()
	log.Info("grpc listening", zap.Stringer("addr", gl.Addr()), zap.Bool("tls", cfg.CertFile != ""))

	var hs *http.Server
	var hAddr net.Addr
	if cfg.HTTPAddr != "" {
		hl, err := net.Listen("tcp", cfg.HTTPAddr)
		if err != nil {
			gs.Stop()
			return fmt.Errorf("http listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/api/", api.NewHTTP(idx, log, opts...))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
		if cfg.Metrics {
			mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		}
		hs = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := hs.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("http server", zap.Error(err))
			}
		}()
		hAddr = hl.Addr()
		log.Info("http listening", zap.Stringer("addr", hAddr))
	}
	if ready != nil {
		ready(gl.Addr(), hAddr)
	}

	<-ctx.Done()
	stopSources()
	sdctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	done := make(chan struct{})
	go func() { gs.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-sdctx.Done():
		gs.Stop()
	}
	if hs != nil {
		hs.Shutdown(sdctx)
	}
	return nil
}

// registerIndexMetrics exports the index's size and counters, read at scrape time.
func registerIndexMetrics(reg prometheus.Registerer, idx *index.Index) {
	stat := func(f func(index.Stats) float64) func() float64 { return func() float64 { return f(idx.Stats()) } }
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flowlens_sonar_ranges", Help: "Ranges held, conflicting parts included."},
			stat(func(s index.Stats) float64 { return float64(s.Ranges) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flowlens_sonar_ips", Help: "Addresses with at least one range."},
			stat(func(s index.Stats) float64 { return float64(s.IPs) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "flowlens_sonar_owners", Help: "Distinct workloads ever seen (interned)."},
			stat(func(s index.Stats) float64 { return float64(s.Owners) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flowlens_sonar_index_claims_total", Help: "Claims added to the index, from every source."},
			stat(func(s index.Stats) float64 { return float64(s.Claims) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "flowlens_sonar_index_conflicts_total", Help: "Claims or parts of claims that overlapped a different owner."},
			stat(func(s index.Stats) float64 { return float64(s.Conflicts) })),
	)
}

// journaled adds the Kubernetes source's claims to the index and the claim log, so ranges learned from
// events survive a restart too. They are not waited on: the informers will observe the objects again.
type journaled struct {
	idx *index.Index
	log *persist.Log
	zl  *zap.Logger
}

func (j journaled) Add(c index.Claim) bool {
	conflict := j.idx.Add(c)
	if err := j.log.Append([]index.Claim{c}); err != nil {
		j.zl.Debug("kubernetes claim not journaled", zap.Error(err)) // counted and logged by the log itself
	}
	return conflict
}

func kubeSource(cfg config.Config, idx *index.Index, plog *persist.Log, log *zap.Logger, reg prometheus.Registerer) (*kube.Source, error) {
	client, err := kube.NewClient(cfg.Kubeconfig) // empty: in cluster (Validate refuses both)
	if err != nil {
		return nil, err
	}
	var sink kube.Sink = idx
	if plog != nil {
		sink = journaled{idx: idx, log: plog, zl: log}
	}
	return kube.New(client, sink, kube.Config{Cluster: cfg.Cluster, Resync: cfg.KubeResync, ResyncLag: cfg.KubeResyncLag, EventLag: cfg.KubeEventLag},
		log.With(zap.String("source", "kubernetes")), reg)
}

// followOwnership applies the fleet's ownership stream to idx until ctx ends, and returns once the
// stream's history has been applied, so sonar's first answers already know what the collectors shared.
func followOwnership(ctx context.Context, wg *sync.WaitGroup, cfg config.Config, idx *index.Index, log *zap.Logger, reg prometheus.Registerer) error {
	host, _ := os.Hostname()
	nc, js, err := fleet.Connect(cfg.NATSURL, "sonar "+host, log)
	if err != nil {
		return err
	}
	sh, err := ownership.New(js, ownership.Config{Replica: "sonar-" + fleet.Token(host),
		StreamSettings: fleet.StreamSettings{Stream: cfg.OwnershipStream, MaxAge: cfg.MaxAge}}, idx, log, reg)
	if err != nil {
		nc.Close()
		return err
	}
	done := make(chan struct{})
	wg.Go(func() {
		defer close(done)
		defer nc.Close()
		if err := sh.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("ownership stream stopped", zap.Error(err))
		}
	})
	select {
	case <-sh.Synced():
		log.Info("ownership stream replayed", zap.String("nats", cfg.NATSURL))
		return nil
	case <-done:
		return errors.New("ownership stream ended before it was replayed")
	}
}
