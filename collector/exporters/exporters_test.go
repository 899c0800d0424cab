package exporters

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flowlens/flowlens/collector/ingest"
	"github.com/flowlens/flowlens/internal/flow"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// clock is a settable time for the registry.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

var t0 = time.Date(2026, 11, 25, 6, 0, 0, 0, time.UTC)

func newRegistry(t testing.TB, cfg Config) (*Registry, *clock, *prometheus.Registry) {
	t.Helper()
	c := &clock{t: t0}
	cfg.Now = c.now
	reg := prometheus.NewRegistry()
	r, err := New(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	return r, c, reg
}

// batch is exporter id's batch seq with n records ending 1..n ms before it was sent at send, received at
// recv.
func batch(id string, seq uint64, transport string, n int, send, recv time.Time) *ingest.Batch {
	b := &ingest.Batch{ExporterID: id, Seq: seq, Transport: transport, Host: "node-1",
		Workload: flow.Workload{Name: "checkout", Namespace: "shop"}, SendTime: send.UnixNano(),
		ReceivedAt: recv.UnixNano(), WireBytes: 100 * n}
	for i := range n {
		b.Records = append(b.Records, flow.Record{EndTime: send.Add(-time.Duration(i+1) * time.Millisecond).UnixNano()})
	}
	return b
}

// okSink takes every batch; fullSink refuses every batch as full.
type okSink struct{}

func (okSink) Put(context.Context, *ingest.Batch) error { return nil }

type fullSink struct{}

func (fullSink) Put(context.Context, *ingest.Batch) error { return ingest.ErrFull }

func TestObserve(t *testing.T) {
	r, c, _ := newRegistry(t, Config{})
	s := r.Sink(okSink{})
	status := &flowv1.ExporterStatus{Transport: "grpc", TransportReason: "pinned in the config",
		StartedAt: t0.Add(-time.Hour).UnixNano(), Drops: map[string]uint64{"queue/full": 4}, QueuedRecords: 9}
	b := batch("a", 1, "grpc", 3, t0.Add(-2*time.Second), t0.Add(-2*time.Second+1500*time.Microsecond))
	b.Status = status
	s.Put(context.Background(), b)
	c.t = t0.Add(time.Second)
	s.Put(context.Background(), batch("a", 2, "grpc", 2, t0, t0.Add(2*time.Millisecond))) // no status: the last one stands

	got := r.Exporters()
	if len(got) != 1 {
		t.Fatalf("%d exporters, want 1", len(got))
	}
	e := got[0]
	started := t0.Add(-time.Hour)
	want := Exporter{ID: "a", Host: "node-1", Workload: flow.Workload{Name: "checkout", Namespace: "shop"},
		ReceivedOver: "grpc", Transport: "grpc", TransportReason: "pinned in the config", StartedAt: &started,
		FirstSeen: t0.Add(-2*time.Second + 1500*time.Microsecond), LastSeen: t0.Add(2 * time.Millisecond),
		Batches: 2, Records: 5, Drops: map[string]uint64{"queue/full": 4}, QueuedRecords: 9,
		LagMs: 2, ExportLagMs: 2} // the second batch: received 2 ms after sent, its oldest record ended 2 ms before
	if fmt.Sprint(e) != fmt.Sprint(want) || !e.StartedAt.Equal(started) {
		t.Errorf("exporter\n got %+v\nwant %+v", e, want)
	}
}

// TestUDPBatchesCountOnce: the datagrams of one UDP batch share its sequence number and count as one
// batch, their records each; the collector's count of missing datagrams is the exporter's lost_batches.
func TestUDPBatchesCountOnce(t *testing.T) {
	r, _, _ := newRegistry(t, Config{})
	s := r.Sink(okSink{})
	for _, d := range []struct {
		seq  uint64
		n    int
		lost uint64
	}{{1, 10, 0}, {1, 10, 0}, {1, 3, 0}, {2, 5, 2}, {3, 5, 1}} {
		b := batch("u", d.seq, "udp", d.n, t0, t0)
		b.LostDatagrams = d.lost
		s.Put(context.Background(), b)
	}
	e := r.Exporters()[0]
	if e.Batches != 3 || e.Records != 33 || e.LostBatches != 1 || e.ReceivedOver != "udp" {
		t.Errorf("batches %d records %d lost %d over %q; want 3, 33, 1, udp", e.Batches, e.Records, e.LostBatches, e.ReceivedOver)
	}
	in := r.Ingest()
	if u := in.ByTransport["udp"]; u.BatchesPerSecond*Window != 3 || u.RecordsPerSecond*Window != 33 || u.BytesPerSecond*Window != 3300 {
		t.Errorf("udp rates %+v", u)
	}
}

// TestIngestWindow: rates count the last Window seconds, this one included, by transport; refusals from
// the sink's ErrFull and from ingest's own limit count apart; the queue is read through Config.Queue.
func TestIngestWindow(t *testing.T) {
	r, c, reg := newRegistry(t, Config{Queue: func() Queue { return Queue{Records: 12, Capacity: 1000, Parked: 3} }})
	ok, full := r.Sink(okSink{}), r.Sink(fullSink{})
	ok.Put(context.Background(), batch("old", 1, "grpc", 100, t0, t0)) // at t0: out of the window at t0+60s
	c.t = t0.Add(30 * time.Second)
	ok.Put(context.Background(), batch("a", 1, "grpc", 6, c.t, c.t))
	ok.Put(context.Background(), batch("b", 1, "https", 12, c.t, c.t))
	if err := full.Put(context.Background(), batch("b", 2, "https", 12, c.t, c.t)); err != ingest.ErrFull {
		t.Fatalf("full sink: %v", err)
	}
	full.(ingest.Refuser).Refused("https") // HTTPS ingest's in-flight limit
	c.t = t0.Add(60 * time.Second)
	ok.Put(context.Background(), batch("a", 2, "grpc", 6, c.t, c.t))

	got := r.Ingest()
	want := Ingest{WindowSeconds: 60, BatchesPerSecond: 3.0 / 60, RecordsPerSecond: 24.0 / 60, RefusedPerSecond: 2.0 / 60,
		ByTransport: map[string]Rate{
			"grpc":  {BatchesPerSecond: 2.0 / 60, RecordsPerSecond: 12.0 / 60, BytesPerSecond: 1200.0 / 60},
			"https": {BatchesPerSecond: 1.0 / 60, RecordsPerSecond: 12.0 / 60, BytesPerSecond: 1200.0 / 60},
			"udp":   {}},
		QueueRecords: 12, QueueCapacity: 1000, ParkedRecords: 3, Exporters: 3, ExportersStale: 0}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ingest\n got %+v\nwant %+v", got, want)
	}
	if v := testutil.ToFloat64(r.m.refused[1]); v != 2 {
		t.Errorf("refused over https counted %v, want 2", v)
	}
	if n, err := testutil.GatherAndCount(reg, "flowlens_collector_ingest_bytes_total"); err != nil || n != 3 {
		t.Errorf("bytes series: %d, %v", n, err)
	}
	c.t = t0.Add(200 * time.Second) // long after: nothing in the window; "old" unseen for over 3 minutes
	if got := r.Ingest(); got.RecordsPerSecond != 0 || got.BatchesPerSecond != 0 || got.RefusedPerSecond != 0 || got.ExportersStale != 1 {
		t.Errorf("after the window: %+v", got)
	}
}

// TestBounded: beyond MaxExporters a new exporter is not tracked (counted as overflow, its batches still
// in the rates) until one is forgotten after ForgetAfter unseen.
func TestBounded(t *testing.T) {
	r, c, _ := newRegistry(t, Config{MaxExporters: 2, ForgetAfter: time.Hour})
	s := r.Sink(okSink{})
	s.Put(context.Background(), batch("a", 1, "grpc", 1, t0, t0))
	c.t = t0.Add(30 * time.Minute)
	s.Put(context.Background(), batch("b", 1, "grpc", 1, c.t, c.t))
	s.Put(context.Background(), batch("c", 1, "grpc", 1, c.t, c.t))
	if ids := ids(r.Exporters()); ids != "a b" {
		t.Fatalf("exporters %q, want a b", ids)
	}
	if v := testutil.ToFloat64(r.m.overflow); v != 1 {
		t.Errorf("overflow %v, want 1", v)
	}
	if got := r.Ingest().RecordsPerSecond * Window; got != 2 { // a's is out of the window by now
		t.Errorf("records in the window %v, want 2", got)
	}
	c.t = t0.Add(61 * time.Minute) // a unseen for over an hour
	s.Put(context.Background(), batch("c", 2, "grpc", 1, c.t, c.t))
	if ids := ids(r.Exporters()); ids != "b c" {
		t.Fatalf("exporters %q, want b c", ids)
	}
	if v := testutil.ToFloat64(r.m.forgotten); v != 1 {
		t.Errorf("forgotten %v, want 1", v)
	}
	c.t = t0.Add(122 * time.Minute)
	if n := len(r.Exporters()); n != 0 {
		t.Errorf("%d exporters remembered after all were unseen an hour", n)
	}
}

func ids(es []Exporter) string {
	var s []string
	for _, e := range es {
		s = append(s, e.ID)
	}
	return strings.Join(s, " ")
}

// TestHTTP: the two endpoints over a real listener answer JSON with exactly the contract's keys; an
// exporter that never sent a status shows started_at null and drops {}.
func TestHTTP(t *testing.T) {
	r, _, _ := newRegistry(t, Config{})
	r.Sink(okSink{}).Put(context.Background(), batch("old-exporter", 1, "https", 2, t0, t0))
	mux := http.NewServeMux()
	r.Mount(mux)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	defer srv.Close()
	get := func(path string) map[string]any {
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d %s %s", path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		var v map[string]any
		if err := json.Unmarshal(body, &v); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		return v
	}
	exps := get("/api/v1/exporters")["exporters"].([]any)
	e := exps[0].(map[string]any)
	if keys := sortedKeys(e); keys != "batches drops export_lag_ms first_seen host id lag_ms last_seen lost_batches queued_records received_over records started_at transport transport_reason workload" {
		t.Errorf("exporter keys: %s", keys)
	}
	if e["started_at"] != nil || fmt.Sprint(e["drops"]) != "map[]" || e["first_seen"] != "2026-11-25T06:00:00Z" || e["records"] != 2.0 {
		t.Errorf("exporter without status: %v", e)
	}
	in := get("/api/v1/ingest")
	if keys := sortedKeys(in); keys != "batches_per_second by_transport exporters exporters_stale parked_records queue_capacity queue_records records_per_second refused_per_second window_seconds" {
		t.Errorf("ingest keys: %s", keys)
	}
	if keys := sortedKeys(in["by_transport"].(map[string]any)); keys != "grpc https udp" {
		t.Errorf("by_transport keys: %s", keys)
	}
	if keys := sortedKeys(in["by_transport"].(map[string]any)["https"].(map[string]any)); keys != "batches_per_second bytes_per_second records_per_second" {
		t.Errorf("rate keys: %s", keys)
	}
	resp, err := http.Post("http://"+ln.Addr().String()+"/api/v1/ingest", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST: %d, want 405", resp.StatusCode)
	}
}

func sortedKeys(m map[string]any) string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return strings.Join(ks, " ")
}

// BenchmarkObserve is the registry's cost per accepted batch, the sink wrapper included: batches of 64
// records, each with a status, from 1,000 exporters in turn. The records are the same ones each time, hot
// in the cache as they are when ingest has just decoded them.
func BenchmarkObserve(b *testing.B) {
	r, _, _ := newRegistry(b, Config{})
	r.cfg.Now = time.Now
	b.ReportAllocs()
	s := r.Sink(okSink{})
	const exporters = 1000
	now := time.Now()
	records := batch("", 1, "grpc", 64, now, now).Records
	batches := make([]*ingest.Batch, exporters)
	for i := range batches {
		batches[i] = batch(fmt.Sprintf("exporter-%d", i), 1, Transports[i%3], 0, now, now)
		batches[i].Records = records
		batches[i].Status = &flowv1.ExporterStatus{Transport: Transports[i%3], TransportReason: "pinned in the config",
			StartedAt: now.UnixNano(), Drops: map[string]uint64{"kernel/ringbuf_full": 3}, QueuedRecords: 10}
	}
	ctx := context.Background()
	i := 0
	for b.Loop() {
		bt := batches[i%exporters]
		bt.Seq++
		s.Put(ctx, bt)
		i++
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/batch")
}

// TestStatusBounded: a status beyond any honest exporter's (hundreds of drop reasons, huge names) is kept
// cut to the bounds, so one exporter cannot make the registry hold megabytes.
func TestStatusBounded(t *testing.T) {
	r, _, _ := newRegistry(t, Config{})
	st := &flowv1.ExporterStatus{Transport: strings.Repeat("u", 10_000), TransportReason: "why", Drops: map[string]uint64{}}
	for i := range 500 {
		st.Drops[fmt.Sprintf("stage/reason-%03d", i)] = uint64(i)
	}
	st.Drops[strings.Repeat("x", 100_000)] = 1
	b := batch("a", 1, "grpc", 1, t0, t0)
	b.Status = st
	r.Sink(okSink{}).Put(context.Background(), b)
	e := r.Exporters()[0]
	if len(e.Drops) != maxDropReasons || len(e.Transport) != maxStatusText || e.TransportReason != "why" || e.Drops["stage/reason-031"] != 31 {
		t.Errorf("kept %d drop reasons, a transport of %d bytes, reason %q", len(e.Drops), len(e.Transport), e.TransportReason)
	}
	for k := range e.Drops {
		if len(k) > maxStatusText {
			t.Errorf("drop reason of %d bytes kept", len(k))
		}
	}
}

// TestIdentityBounded: the host, workload and id an exporter's batches carry are bounded like its status:
// thousands of exporters each naming itself with megabytes must not make the registry hold gigabytes.
func TestIdentityBounded(t *testing.T) {
	r, _, _ := newRegistry(t, Config{})
	huge := strings.Repeat("h", 1<<20)
	b := batch("a", 1, "grpc", 1, t0, t0)
	b.Host = huge
	b.Workload = flow.Workload{Name: huge, Namespace: huge, Pod: huge, PodUID: huge, Node: huge, Cluster: huge}
	r.Sink(okSink{}).Put(context.Background(), b)
	r.Sink(okSink{}).Put(context.Background(), batch(huge, 1, "grpc", 1, t0, t0))
	got := r.Exporters()
	if ids := ids(got); ids != "a" {
		t.Fatalf("exporters %d bytes of ids, want only a", len(ids))
	}
	w := got[0].Workload
	for name, n := range map[string]int{"host": len(got[0].Host), "name": len(w.Name), "namespace": len(w.Namespace),
		"pod": len(w.Pod), "pod_uid": len(w.PodUID), "node": len(w.Node), "cluster": len(w.Cluster)} {
		if n != maxStatusText {
			t.Errorf("%s kept with %d bytes, want %d", name, n, maxStatusText)
		}
	}
	if n := testutil.ToFloat64(r.m.overflow); n != 1 {
		t.Errorf("overflow %v, want 1 (the batch of the exporter with a huge id)", n)
	}
}

// TestCutKeepsUTF8: a drop reason cut to the bound stays valid UTF-8 (protobuf hands the collector only
// valid strings, and a cut inside a character would make an invalid one), so the reported drops metric,
// which carries it as a label, can be gathered: an invalid label value makes the client library panic.
func TestCutKeepsUTF8(t *testing.T) {
	r, _, reg := newRegistry(t, Config{})
	long := strings.Repeat("€", 100) // 3 bytes each: 256 falls inside one
	b := batch("a", 1, "grpc", 1, t0, t0)
	b.Host = long
	b.Status = &flowv1.ExporterStatus{Transport: long, Drops: map[string]uint64{long: 7}}
	r.Sink(okSink{}).Put(context.Background(), b)
	e := r.Exporters()[0]
	want := strings.Repeat("€", maxStatusText/3)
	if e.Transport != want || e.Host != want || e.Drops[want] != 7 {
		t.Fatalf("transport %q, host %q, drops %v: want each cut to %d whole characters", e.Transport, e.Host, e.Drops, maxStatusText/3)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "flowlens_collector_exporters_reported_drops" {
			if got := mf.GetMetric()[0].GetLabel()[0].GetValue(); got != want {
				t.Errorf("reported drops reason %q, want %q", got, want)
			}
			return
		}
	}
	t.Error("no flowlens_collector_exporters_reported_drops gathered")
}
