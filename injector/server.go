package injector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
)

// Server is the running injector: the webhook over TLS and, when configured, /metrics.
type Server struct {
	// Addr is the webhook's bound address (useful with port 0).
	Addr    net.Addr
	log     *zap.Logger
	servers []*http.Server
	done    chan error
	failed  chan error
}

// Start binds cfg.ListenAddr (and cfg.MetricsAddr) and serves until Stop. gatherer serves /metrics.
func Start(cfg Config, log *zap.Logger, reg prometheus.Registerer, gatherer prometheus.Gatherer) (*Server, error) {
	certs, err := NewCertReloader(cfg.CertFile, cfg.KeyFile, log, reg)
	if err != nil {
		return nil, err
	}
	wh, err := NewWebhook(cfg, log, reg)
	if err != nil {
		return nil, err
	}
	// Not a ServeMux: it answers a "//mutate/pod" (envtest's URLs have one) with a redirect, which the
	// API server does not follow.
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.TrimLeft(r.URL.Path, "/") == "healthz" {
			fmt.Fprintln(w, "ok")
			return
		}
		wh.ServeHTTP(w, r)
	})
	s := &Server{log: log, done: make(chan error, 2), failed: make(chan error, 2)}
	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", cfg.ListenAddr, err)
	}
	s.Addr = ln.Addr()
	hs := &http.Server{
		// The API server's default webhook timeout is 10 s; an answer takes microseconds.
		Handler:           handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate},
	}
	s.serve(hs, func() error { return hs.ServeTLS(ln, "", "") })
	if cfg.MetricsAddr != "" {
		mln, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			s.Stop(context.Background())
			return nil, fmt.Errorf("listen metrics %s: %w", cfg.MetricsAddr, err)
		}
		mm := http.NewServeMux()
		mm.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
		ms := &http.Server{Handler: mm, ReadHeaderTimeout: 5 * time.Second}
		s.serve(ms, func() error { return ms.Serve(mln) })
	}
	log.Info("flowlens-injector serving", zap.Stringer("addr", s.Addr), zap.String("image", cfg.Sidecar.Image))
	return s, nil
}

func (s *Server) serve(hs *http.Server, run func() error) {
	s.servers = append(s.servers, hs)
	go func() {
		err := run()
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		if err != nil {
			s.failed <- err
		}
		s.done <- err
	}()
}

// Failed delivers the error of a server that stopped by itself: the process should exit.
func (s *Server) Failed() <-chan error { return s.failed }

// Stop shuts the servers down, waiting for answers in flight until ctx ends.
func (s *Server) Stop(ctx context.Context) {
	for _, hs := range s.servers {
		if err := hs.Shutdown(ctx); err != nil {
			s.log.Warn("shutdown", zap.Error(err))
		}
	}
	for range s.servers {
		<-s.done
	}
}
