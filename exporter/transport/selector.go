package transport

import (
	"context"
	"fmt"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// SelectorMetrics are the selector's metrics.
type SelectorMetrics struct {
	Active    *prometheus.GaugeVec   // 1 for the transport in use
	Switches  *prometheus.CounterVec // by from, to
	Failures  *prometheus.CounterVec // failed sends by transport
	Demotions *prometheus.CounterVec // by transport
	RTT       *prometheus.GaugeVec   // send-to-answer time by transport, exponentially weighted
}

// NewSelectorMetrics registers the selector's metrics on reg.
func NewSelectorMetrics(reg prometheus.Registerer) (*SelectorMetrics, error) {
	m := &SelectorMetrics{
		Active: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flowlens_exporter_transport_active", Help: "1 for the transport batches go through now.",
		}, []string{"transport"}),
		Switches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_exporter_transport_switches_total", Help: "Changes of transport; the reason is logged.",
		}, []string{"from", "to"}),
		Failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_exporter_transport_failures_total", Help: "Sends that got no answer, by transport.",
		}, []string{"transport"}),
		Demotions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flowlens_exporter_transport_demotions_total", Help: "Transports set aside after consecutive failures.",
		}, []string{"transport"}),
		RTT: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "flowlens_exporter_transport_rtt_seconds", Help: "Time from sending a batch to its answer, weighted average.",
		}, []string{"transport"}),
	}
	for _, c := range []prometheus.Collector{m.Active, m.Switches, m.Failures, m.Demotions, m.RTT} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register transport metrics: %w", err)
		}
	}
	return m, nil
}

// Selector is a Transport that sends each batch through the transport Choose picks. A transport that fails
// FailAfter times in a row is demoted: not chosen again until Probe has passed, when it is tried again.
// Send is called from one goroutine; Pin may be called from any.
type Selector struct {
	Transports map[string]Transport
	FailAfter  int
	Probe      time.Duration
	// Limits returns the cgroup's CPU (cores) and memory (bytes) limits; 0 means none.
	Limits  func() (float64, int64)
	Metrics *SelectorMetrics
	Log     *zap.Logger
	Now     func() time.Time

	pinned  atomic.Pointer[string]
	current string
	hint    string    // the collector's preferred transport, from the latest acked answer
	hintAt  time.Time // when it was heard; it lapses after Probe, so a hint to UDP (no acks) is not forever
	health  map[string]*health
	rate    float64 // records/s, exponentially weighted
	last    time.Time
	limits  struct {
		cpu  float64
		mem  int64
		read time.Time
	}
}

type health struct {
	fails        int
	demotedUntil time.Time
	rtt          time.Duration // send to answer, weighted 1/8 per sample as TCP's srtt is
}

// Pin fixes the transport ("grpc", "https", "udp"), or lets the policy choose ("auto" or "").
func (s *Selector) Pin(name string) { s.pinned.Store(&name) }

// Name is the transport in use, or "selector" before the first send.
func (s *Selector) Name() string {
	if s.current == "" {
		return "selector"
	}
	return s.current
}

// Send chooses a transport and sends b through it. When b has a status, Send writes the transport and
// the reason for choosing it into it.
func (s *Selector) Send(ctx context.Context, b *flowv1.FlowBatch) (flowv1.AckStatus, error) {
	now := s.Now()
	if s.health == nil {
		s.health = map[string]*health{}
		for name := range s.Transports {
			s.health[name] = &health{}
		}
	}
	s.observe(now, len(b.Records))
	name, reason := Choose(s.pin(), s.instance(now))
	t, ok := s.Transports[name]
	if !ok {
		return 0, fmt.Errorf("transport %q is not configured (configured: %v)", name, slices.Sorted(maps.Keys(s.Transports)))
	}
	if b.Status != nil {
		// The batch tells the collector which transport carries it and why, for its fleet view.
		b.Status.Transport, b.Status.TransportReason = name, reason
	}
	if name != s.current {
		s.Log.Info("transport chosen", zap.String("from", s.current), zap.String("to", name), zap.String("reason", reason))
		if s.current != "" {
			s.Metrics.Active.WithLabelValues(s.current).Set(0)
		}
		s.Metrics.Switches.WithLabelValues(s.current, name).Inc()
		s.Metrics.Active.WithLabelValues(name).Set(1)
		s.current = name
	}
	sent := s.Now()
	status, err := t.Send(ctx, b)
	if hinter, ok := t.(Hinter); ok && err == nil {
		s.hint, s.hintAt = hinter.Hint(), now
	}
	h := s.health[name]
	if err != nil && status == flowv1.AckStatus_ACK_STATUS_REJECTED {
		// A batch this transport can never carry (a record too large for a datagram): the batch's fault,
		// not the path's, so it does not count against the transport. Unless the transport is pinned,
		// another one that is usable carries this batch; with none, the refusal is passed on for the
		// sender to drop and count instead of resending it forever.
		return s.carryElsewhere(ctx, now, name, b, status, err)
	}
	if err == nil {
		h.fails = 0 // an answer, even RETRY (the collector is full), proves the transport works
		if rtt := s.Now().Sub(sent); h.rtt == 0 {
			h.rtt = rtt
		} else {
			h.rtt += (rtt - h.rtt) / 8
		}
		s.Metrics.RTT.WithLabelValues(name).Set(h.rtt.Seconds())
		return status, nil
	}
	s.Metrics.Failures.WithLabelValues(name).Inc()
	if h.fails++; h.fails >= s.FailAfter {
		h.fails = 0
		h.demotedUntil = now.Add(s.Probe)
		s.Metrics.Demotions.WithLabelValues(name).Inc()
		s.Log.Warn("transport demoted", zap.String("transport", name), zap.Duration("probe_after", s.Probe), zap.Error(err))
	}
	return 0, err
}

// carryElsewhere sends b, which the transport refused to carry, through the transport the policy picks
// without refused; or answers the refusal when the choice is pinned or nothing else is usable.
func (s *Selector) carryElsewhere(ctx context.Context, now time.Time, refused string, b *flowv1.FlowBatch,
	status flowv1.AckStatus, err error) (flowv1.AckStatus, error) {
	in := s.instance(now)
	in.Usable[refused] = false
	alt, _ := Choose(s.pin(), in)
	t, ok := s.Transports[alt]
	if !ok || alt == refused || !in.Usable[alt] {
		return status, err
	}
	if b.Status != nil {
		b.Status.Transport, b.Status.TransportReason = alt, "this batch does not fit "+refused
	}
	s.Log.Debug("batch carried by another transport", zap.String("refused_by", refused), zap.String("carried_by", alt), zap.Error(err))
	return t.Send(ctx, b)
}

func (s *Selector) pin() string {
	if p := s.pinned.Load(); p != nil {
		return *p
	}
	return ""
}

// observe keeps the flow rate as an exponentially weighted average over about ten seconds.
func (s *Selector) observe(now time.Time, records int) {
	if !s.last.IsZero() {
		dt := now.Sub(s.last).Seconds()
		if dt > 0 {
			w := min(dt/10, 1)
			s.rate = (1-w)*s.rate + w*float64(records)/dt
		}
	}
	s.last = now
}

func (s *Selector) instance(now time.Time) Instance {
	if s.Limits != nil && now.Sub(s.limits.read) > time.Minute {
		s.limits.cpu, s.limits.mem = s.Limits()
		s.limits.read = now
	}
	if now.Sub(s.hintAt) > s.Probe {
		s.hint = "" // unheard for a probe interval: back to the policy, which reaches an acked transport again
	}
	in := Instance{CPULimit: s.limits.cpu, MemoryLimit: s.limits.mem, FlowRate: s.rate, Hint: s.hint,
		Proxy: os.Getenv("HTTPS_PROXY") != "" || os.Getenv("https_proxy") != "", Usable: map[string]bool{}}
	for name, h := range s.health {
		in.Usable[name] = !now.Before(h.demotedUntil)
	}
	return in
}

// Close closes every transport.
func (s *Selector) Close() error {
	for _, t := range s.Transports {
		t.Close()
	}
	return nil
}

// CgroupLimits reads this process's cgroup v2 CPU and memory limits under root (/sys/fs/cgroup): cores
// from cpu.max, bytes from memory.max; 0 where there is no limit or it cannot be read.
func CgroupLimits(root string) (cpu float64, mem int64) {
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, 0
	}
	dir := root
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			dir = root + rest
		}
	}
	if f := strings.Fields(readFile(dir + "/cpu.max")); len(f) == 2 && f[0] != "max" {
		quota, _ := strconv.ParseFloat(f[0], 64)
		period, _ := strconv.ParseFloat(f[1], 64)
		if period > 0 {
			cpu = quota / period
		}
	}
	if m := strings.TrimSpace(readFile(dir + "/memory.max")); m != "max" {
		mem, _ = strconv.ParseInt(m, 10, 64)
	}
	return cpu, mem
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}
