package transport

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// scripted is a transport whose answers the test decides.
type scripted struct {
	name string
	down bool
	sent int
	hint string
}

func (s *scripted) Hint() string { return s.hint }

func (s *scripted) Name() string { return s.name }
func (s *scripted) Close() error { return nil }
func (s *scripted) Send(context.Context, *flowv1.FlowBatch) (flowv1.AckStatus, error) {
	if s.down {
		return 0, errors.New("connection refused")
	}
	s.sent++
	return flowv1.AckStatus_ACK_STATUS_STORED, nil
}

// TestSelectorDemotesAndProbes: a failing gRPC is demoted after three failures, HTTPS takes over, and gRPC
// is chosen again once its probe interval has passed and it answers.
func TestSelectorDemotesAndProbes(t *testing.T) {
	g, h := &scripted{name: "grpc"}, &scripted{name: "https"}
	now := time.Unix(1000, 0)
	reg := prometheus.NewRegistry()
	m, err := NewSelectorMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	s := &Selector{Transports: map[string]Transport{"grpc": g, "https": h}, FailAfter: 3, Probe: 30 * time.Second,
		Metrics: m, Log: zap.NewNop(), Now: func() time.Time { return now }}
	send := func() error {
		_, err := s.Send(context.Background(), &flowv1.FlowBatch{})
		now = now.Add(time.Second)
		return err
	}
	if send() != nil || s.Name() != "grpc" || g.sent != 1 {
		t.Fatalf("first send through %s", s.Name())
	}
	g.down = true
	for range 3 {
		if send() == nil {
			t.Fatal("send through a down gRPC succeeded")
		}
	}
	if send() != nil || s.Name() != "https" || h.sent != 1 {
		t.Fatalf("after three failures: through %s, https sent %d", s.Name(), h.sent)
	}
	g.down = false
	for now.Before(time.Unix(1000, 0).Add(33 * time.Second)) { // still inside the probe interval
		send()
	}
	if s.Name() != "https" {
		t.Fatalf("gRPC chosen again before its probe interval: %s", s.Name())
	}
	send()
	if s.Name() != "grpc" {
		t.Fatalf("gRPC not chosen again after its probe interval: %s", s.Name())
	}
	if v := testutil.ToFloat64(m.Demotions.WithLabelValues("grpc")); v != 1 {
		t.Errorf("demotions %v, want 1", v)
	}
	if testutil.ToFloat64(m.Active.WithLabelValues("grpc")) != 1 || testutil.ToFloat64(m.Active.WithLabelValues("https")) != 0 {
		t.Error("active gauge does not show gRPC alone")
	}

	// Pinning at run time overrides the policy; unpinning hands it back.
	s.Pin("https")
	send()
	if s.Name() != "https" {
		t.Fatalf("pinned https, sent through %s", s.Name())
	}
	s.Pin("auto")
	send()
	if s.Name() != "grpc" {
		t.Fatalf("unpinned, sent through %s", s.Name())
	}
	// The collector's hint moves the exporter; pinning still overrides it.
	g.hint, h.hint = "https", "https" // the same collector says so over either transport
	send()
	send()
	if s.Name() != "https" {
		t.Fatalf("collector hinted https, sent through %s", s.Name())
	}
	// A hint to a transport without acks lapses after a probe interval: the policy takes over again.
	u := &scripted{name: "udp"}
	s.Transports["udp"], s.health["udp"] = u, &health{}
	g.hint, h.hint = "udp", "udp"
	send() // through https: hears "udp"
	send()
	if s.Name() != "udp" {
		t.Fatalf("collector hinted udp, sent through %s", s.Name())
	}
	g.hint, h.hint = "", ""
	for range 31 { // UDP never answers, so it cannot carry a new hint
		send()
	}
	if s.Name() != "grpc" {
		t.Fatalf("a lapsed hint kept the exporter on %s", s.Name())
	}
	delete(s.Transports, "udp")
	delete(s.health, "udp")
	s.Pin("udp")
	if _, err := s.Send(context.Background(), &flowv1.FlowBatch{}); err == nil {
		t.Fatal("pinned to a transport that is not configured, and the send succeeded")
	}
}

func TestCgroupLimits(t *testing.T) {
	raw, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Skip("no /proc/self/cgroup")
	}
	var path string
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			path = rest
		}
	}
	for _, tc := range []struct {
		cpuMax, memMax string
		cpu            float64
		mem            int64
	}{
		{"50000 100000", "134217728", 0.5, 128 << 20},
		{"max 100000", "max", 0, 0},
	} {
		root := t.TempDir()
		dir := filepath.Join(root, path)
		os.MkdirAll(dir, 0o755)
		os.WriteFile(filepath.Join(dir, "cpu.max"), []byte(tc.cpuMax+"\n"), 0o644)
		os.WriteFile(filepath.Join(dir, "memory.max"), []byte(tc.memMax+"\n"), 0o644)
		if cpu, mem := CgroupLimits(root); cpu != tc.cpu || mem != tc.mem {
			t.Errorf("cpu.max %q memory.max %q: read %v cores %d bytes, want %v %d", tc.cpuMax, tc.memMax, cpu, mem, tc.cpu, tc.mem)
		}
	}
}

// TestSelectorStampsStatus: a batch with a status leaves saying which transport carries it and why; one
// without gets none.
func TestSelectorStampsStatus(t *testing.T) {
	g, h := &scripted{name: "grpc"}, &scripted{name: "https"}
	m, err := NewSelectorMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	s := &Selector{Transports: map[string]Transport{"grpc": g, "https": h}, FailAfter: 1, Probe: time.Minute,
		Metrics: m, Log: zap.NewNop(), Now: time.Now}
	send := func() *flowv1.ExporterStatus {
		b := &flowv1.FlowBatch{Status: &flowv1.ExporterStatus{Transport: "stale", QueuedRecords: 3}}
		s.Send(context.Background(), b)
		return b.Status
	}
	if st := send(); st.Transport != "grpc" || st.TransportReason != "the most reliable transport that works" || st.QueuedRecords != 3 {
		t.Errorf("auto: %v", st)
	}
	g.down = true
	if st := send(); st.Transport != "grpc" { // the failed attempt went over gRPC, and says so
		t.Errorf("failing gRPC: %v", st)
	}
	if st := send(); st.Transport != "https" || st.TransportReason != "the most reliable transport that works" {
		t.Errorf("gRPC demoted: %v", st)
	}
	s.Pin("https")
	if st := send(); st.Transport != "https" || st.TransportReason != "pinned in the config" {
		t.Errorf("pinned: %v", st)
	}
	b := &flowv1.FlowBatch{}
	s.Send(context.Background(), b)
	if b.Status != nil {
		t.Errorf("a batch without status got %v", b.Status)
	}
}

// refuser is a transport that cannot carry any batch, as UDP cannot one with a record over a datagram.
type refuser struct{ scripted }

func (r *refuser) Send(context.Context, *flowv1.FlowBatch) (flowv1.AckStatus, error) {
	return flowv1.AckStatus_ACK_STATUS_REJECTED, errors.New("record 0: over the datagram size: datagram too large")
}

// TestSelectorPassesRejection: a batch a transport refuses to carry comes back REJECTED with its error,
// for the sender to drop and count, and does not count against the transport.
func TestSelectorPassesRejection(t *testing.T) {
	u := &refuser{scripted{name: "udp"}}
	reg := prometheus.NewRegistry()
	m, err := NewSelectorMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	s := &Selector{Transports: map[string]Transport{"udp": u}, FailAfter: 1, Probe: time.Minute, Metrics: m,
		Log: zap.NewNop(), Now: time.Now}
	s.Pin("udp")
	for range 3 {
		if st, err := s.Send(context.Background(), &flowv1.FlowBatch{}); st != flowv1.AckStatus_ACK_STATUS_REJECTED || err == nil {
			t.Fatalf("refused batch: %v, %v; want REJECTED and the error", st, err)
		}
	}
	if f, d := testutil.ToFloat64(m.Failures.WithLabelValues("udp")), testutil.ToFloat64(m.Demotions.WithLabelValues("udp")); f != 0 || d != 0 {
		t.Errorf("failures %v, demotions %v; want 0, 0", f, d)
	}
}

// TestSelectorCarriesRefusedBatchElsewhere: unpinned, a batch one transport cannot carry goes out through
// another usable one (its status says so), and the refusing transport stays the choice for later batches.
func TestSelectorCarriesRefusedBatchElsewhere(t *testing.T) {
	u, g := &refuser{scripted{name: "udp"}}, &scripted{name: "grpc"}
	m, err := NewSelectorMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	// Half a core: the policy picks UDP (a constrained instance).
	s := &Selector{Transports: map[string]Transport{"udp": u, "grpc": g}, FailAfter: 1, Probe: time.Minute, Metrics: m,
		Log: zap.NewNop(), Now: time.Now, Limits: func() (float64, int64) { return 0.2, 0 }}
	b := &flowv1.FlowBatch{Status: &flowv1.ExporterStatus{}}
	st, err := s.Send(context.Background(), b)
	if st != flowv1.AckStatus_ACK_STATUS_STORED || err != nil || g.sent != 1 {
		t.Fatalf("refused by udp: %v, %v, grpc sent %d; want STORED through grpc", st, err, g.sent)
	}
	if b.Status.Transport != "grpc" || b.Status.TransportReason != "this batch does not fit udp" {
		t.Errorf("status %+v", b.Status)
	}
	if s.Name() != "udp" || testutil.ToFloat64(m.Failures.WithLabelValues("udp")) != 0 {
		t.Errorf("current %s, udp failures %v: want udp still chosen, no failure", s.Name(), testutil.ToFloat64(m.Failures.WithLabelValues("udp")))
	}
	// With grpc down too (demoted), the refusal comes back for the sender to drop and count.
	g.down = true
	s.Pin("grpc")
	s.Send(context.Background(), &flowv1.FlowBatch{})
	s.Pin("")
	if st, err := s.Send(context.Background(), &flowv1.FlowBatch{}); st != flowv1.AckStatus_ACK_STATUS_REJECTED || err == nil {
		t.Fatalf("nothing else usable: %v, %v; want REJECTED", st, err)
	}
}
