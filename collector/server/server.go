// Package server runs flow-collector's listeners over one ingest handler and sink, with the metrics
// endpoint, and stops them in order.
package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/flowlens/flowlens/collector/config"
	"github.com/flowlens/flowlens/collector/ingest"
	"github.com/flowlens/flowlens/internal/grpczstd"
	"github.com/flowlens/flowlens/internal/udpwire"
)

// Server is a running collector.
type Server struct {
	log     *zap.Logger
	grpc    *grpc.Server
	udp     *ingest.UDPServer
	https   *ingest.HTTPSServer
	metrics *http.Server
}

// Start opens the listeners the config names and serves until Stop. dedup remembers the batches already
// stored (seeded from the store after a restart); nil starts empty.
func Start(cfg config.Config, log *zap.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer, sink ingest.Sink, dedup *ingest.Dedup) (*Server, error) {
	if dedup == nil {
		dedup = NewDedup()
	}
	h := &ingest.Handler{Sink: sink, Dedup: dedup, Metrics: ingest.NewMetrics(reg), Log: log, Prefer: cfg.Prefer}
	s := &Server{log: log}
	var tlsConf *tls.Config
	if cfg.CertFile != "" {
		tc, err := serverTLS(cfg)
		if err != nil {
			return nil, err
		}
		tlsConf = tc
	}
	if cfg.GRPCAddr != "" {
		grpczstd.Register() // exporters compress their batches with it
		ln, err := net.Listen("tcp", cfg.GRPCAddr)
		if err != nil {
			return nil, fmt.Errorf("grpc listener: %w", err)
		}
		var opts []grpc.ServerOption
		if !cfg.Insecure {
			opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConf)))
		}
		s.grpc = ingest.NewGRPCServer(h, opts...)
		go func() {
			if err := s.grpc.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				log.Error("grpc ingest", zap.Error(err))
			}
		}()
		log.Info("grpc ingest listening", zap.Stringer("addr", ln.Addr()), zap.Bool("tls", !cfg.Insecure))
	}
	if cfg.HTTPSAddr != "" {
		var err error
		if s.https, err = ingest.ServeHTTPS(cfg.HTTPSAddr, tlsConf, h, ingest.HTTPSOptions{Registerer: reg}); err != nil {
			s.Stop(context.Background())
			return nil, err
		}
		log.Info("https ingest listening (HTTP/2 on TCP, HTTP/3 on UDP)", zap.String("addr", s.https.Addr))
	}
	if cfg.UDPAddr != "" {
		key, err := udpwire.ReadKey(cfg.UDPKeyFile)
		if err != nil {
			s.Stop(context.Background())
			return nil, err
		}
		if s.udp, err = ingest.ListenUDP(cfg.UDPAddr, cfg.UDPSockets, key, h, reg, log); err != nil {
			s.Stop(context.Background())
			return nil, err
		}
		log.Info("udp ingest listening", zap.Stringer("addr", s.udp.Addr()), zap.Int("sockets", cfg.UDPSockets))
	}
	if cfg.MetricsAddr != "" {
		ln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			s.Stop(context.Background())
			return nil, fmt.Errorf("metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) })
		s.metrics = &http.Server{Handler: mux}
		go func() {
			if err := s.metrics.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", zap.Error(err))
			}
		}()
	}
	return s, nil
}

// NewDedup remembers the batches of up to 100,000 exporters.
func NewDedup() *ingest.Dedup { return ingest.NewDedup(100_000) }

// UDP is the UDP ingest, or nil.
func (s *Server) UDP() *ingest.UDPServer { return s.udp }

// Stop stops taking batches, lets the ones in progress finish until ctx ends, then stops the rest.
func (s *Server) Stop(ctx context.Context) {
	if s.grpc != nil {
		done := make(chan struct{})
		go func() { s.grpc.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			s.grpc.Stop()
		}
	}
	if s.https != nil {
		s.https.Close()
	}
	if s.udp != nil {
		s.udp.Close()
	}
	if s.metrics != nil {
		s.metrics.Shutdown(ctx)
	}
}

// serverTLS is the collector's TLS 1.3 configuration; with a client CA, client certificates are required.
func serverTLS(cfg config.Config) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("collector certificate: %w", err)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
	if cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("client CA: %w", err)
		}
		tc.ClientCAs = x509.NewCertPool()
		if !tc.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("client CA %s: no certificate in it", cfg.ClientCAFile)
		}
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// Discard takes every batch and keeps nothing.
type Discard struct{}

// Put drops b.
func (Discard) Put(context.Context, *ingest.Batch) error { return nil }
