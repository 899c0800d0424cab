// Package shipper is flow-exporter's "collector" output: it cuts records into sequenced batches, holds
// them in a bounded buffer, and delivers them through the transport the selector picks.
package shipper

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/flowlens/flowlens/exporter/config"
	"github.com/flowlens/flowlens/exporter/transport"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/udpwire"
	"github.com/flowlens/flowlens/internal/wire"
)

// Shipper implements output.Sink. Write and Flush are called from one goroutine; Close ends delivery.
type Shipper struct {
	cfg      config.Collector
	workload flow.Workload
	id       string
	seq      uint64
	pending  []flow.Record
	buf      *transport.Buffer
	sel      *transport.Selector
	sender   *transport.Sender
	drops    *prometheus.CounterVec
	status   *status
	stop     context.CancelFunc
	done     chan struct{}
	log      *zap.Logger
}

// New builds the transports the config names and starts delivering. drops is the exporter's drops family:
// the shipper counts under stage "transport".
func New(cfg config.Collector, workload flow.Workload, drops *prometheus.CounterVec, reg prometheus.Registerer, log *zap.Logger) (*Shipper, error) {
	transports, err := dial(cfg, drops, log)
	if err != nil {
		return nil, err
	}
	sm, err := transport.NewSelectorMetrics(reg)
	if err != nil {
		for _, t := range transports {
			t.Close()
		}
		return nil, err
	}
	sel := &transport.Selector{Transports: transports, FailAfter: cfg.FailAfter, Probe: cfg.ProbeInterval,
		Limits:  func() (float64, int64) { return transport.CgroupLimits("/sys/fs/cgroup") },
		Metrics: sm, Log: log, Now: time.Now}
	sel.Pin(cfg.Transport)

	nonce := make([]byte, 4)
	rand.Read(nonce)
	s := &Shipper{
		cfg: cfg, workload: workload, sel: sel, drops: drops, log: log, done: make(chan struct{}),
		// The run's nonce keeps (exporter id, seq) unique across restarts, whose seqs start again at 1.
		id: cfg.ExporterID + "-" + hex.EncodeToString(nonce),
	}
	bufferFull := drops.WithLabelValues("transport", "buffer_full")
	s.buf = transport.NewBuffer(cfg.BufferBatches, cfg.BufferBytes, func(n int) { bufferFull.Add(float64(n)) })
	s.status = &status{started: time.Now().UnixNano(), drops: drops, buf: s.buf}
	rejected := drops.WithLabelValues("transport", "rejected")
	s.sender = &transport.Sender{Buf: s.buf, T: sel, Timeout: cfg.SendTimeout,
		Rejected: func(n int) { rejected.Add(float64(n)) }, Stamp: s.status.stamp, Log: log}
	ctx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go func() { defer close(s.done); s.sender.Run(ctx) }()
	log.Info("shipping to the collector", zap.String("exporter_id", s.id), zap.String("transport", cfg.Transport))
	return s, nil
}

// Pin switches the transport at run time ("auto" hands the choice back to the policy).
func (s *Shipper) Pin(name string) { s.sel.Pin(name) }

// SetKernelDrops gives the shipper the kernel's drop counters (by reason, cumulative), which it reports
// in each batch's status beside the drops of the exporter's drops family; it reads them at most once a
// second. It may be called at any time, from any goroutine; until then kernel drops are not reported.
func (s *Shipper) SetKernelDrops(read func() (map[string]uint64, error)) {
	s.status.kernelRead.Store(&read)
}

// Write adds r to the batch being cut; a full batch goes to the buffer.
func (s *Shipper) Write(r *flow.Record) error {
	s.pending = append(s.pending, *r)
	if len(s.pending) >= s.cfg.BatchRecords {
		s.cut()
	}
	return nil
}

// Flush sends what is pending as a batch of its own.
func (s *Shipper) Flush() error {
	s.cut()
	return nil
}

func (s *Shipper) cut() {
	if len(s.pending) == 0 {
		return
	}
	s.seq++
	s.buf.Push(wire.NewBatch(s.id, s.seq, time.Now().UnixNano(), s.workload, s.pending))
	s.pending = s.pending[:0]
}

// Close stops delivery, then spends up to wait delivering what the buffer holds; what is left is counted
// as dropped.
func (s *Shipper) Close(wait time.Duration) error {
	s.cut()
	s.stop()
	<-s.done
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if left := s.sender.Drain(ctx); left > 0 {
		s.drops.WithLabelValues("transport", "shutdown").Add(float64(left))
		s.log.Warn("records undelivered at shutdown", zap.Int("records", left))
	}
	return s.sel.Close()
}

// dial builds a transport for every endpoint the config names.
// On error it closes what it had opened.
func dial(cfg config.Collector, drops *prometheus.CounterVec, log *zap.Logger) (_ map[string]transport.Transport, err error) {
	out := map[string]transport.Transport{}
	defer func() {
		if err != nil {
			for _, t := range out {
				t.Close()
			}
		}
	}()
	if cfg.GRPCAddr != "" {
		creds := insecure.NewCredentials()
		if !cfg.Insecure {
			tc, err := clientTLS(cfg)
			if err != nil {
				return nil, err
			}
			creds = credentials.NewTLS(tc)
		}
		g, err := transport.NewGRPC(cfg.GRPCAddr, creds)
		if err != nil {
			return nil, err
		}
		out["grpc"] = g
	}
	if cfg.HTTPSURL != "" {
		tc, err := clientTLS(cfg)
		if err != nil {
			return nil, err
		}
		h, err := transport.NewHTTPS(cfg.HTTPSURL, tc, transport.HTTPSOptions{Log: log})
		if err != nil {
			return nil, err
		}
		out["https"] = h
	}
	if cfg.UDPAddr != "" {
		key, err := udpwire.ReadKey(cfg.UDPKeyFile)
		if err != nil {
			return nil, err
		}
		u, err := transport.NewUDP(cfg.UDPAddr, key, 0)
		if err != nil {
			return nil, err
		}
		abandoned := drops.WithLabelValues("transport", "udp_abandoned")
		u.Abandoned = func(n int) { abandoned.Add(float64(n)) }
		out["udp"] = u
	}
	if len(out) == 0 {
		return nil, errors.New("no collector transport could be set up")
	}
	return out, nil
}

// clientTLS is the exporter's TLS: the collector verified against CAFile or CAPEM (or the system roots), and the
// exporter's own certificate when CertFile is set (mTLS).
func clientTLS(cfg config.Collector) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS13}
	pem, from := []byte(cfg.CAPEM), "collector.ca_pem"
	if cfg.CAFile != "" {
		var err error
		if pem, err = os.ReadFile(cfg.CAFile); err != nil {
			return nil, fmt.Errorf("collector CA: %w", err)
		}
		from = cfg.CAFile
	}
	if len(pem) > 0 {
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("collector CA %s: no certificate in it", from)
		}
	}
	if cfg.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("exporter client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
