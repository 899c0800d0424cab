package natsflows

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/flowlens/flowlens/collector/fleet"
	"github.com/flowlens/flowlens/collector/fleet/fleettest"
	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/natstest"
)

func newPublisher(t testing.TB, srv *natstest.Server, cfg Config) (*Publisher, jetstream.JetStream) {
	t.Helper()
	nc, js, err := fleet.Connect(srv.URL(), "natsflows-test", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	p, err := New(context.Background(), js, cfg, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return p, js
}

type stored struct {
	subject string
	header  nats.Header
	recs    []flow.Enriched
}

// readStream returns every message of the stream in order, decoded.
func readStream(t testing.TB, js jetstream.JetStream, stream string) []stored {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []stored
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("message %d: %v", seq, err)
		}
		recs, err := fleet.Decode(m.Data)
		if err != nil {
			t.Fatalf("message %d on %s: %v", seq, m.Subject, err)
		}
		out = append(out, stored{m.Subject, m.Header, recs})
	}
	return out
}

func TestPublishSubjectsAndContent(t *testing.T) {
	srv := natstest.Start(t)
	p, js := newPublisher(t, srv, Config{})
	recs := fleettest.Records(200, 1)
	if err := p.Publish(context.Background(), recs); err != nil {
		t.Fatal(err)
	}

	// What should be there: per (subject, exporter) in first-seen order, the records in input order.
	want := map[string][]flow.Enriched{}
	var order []string
	for _, r := range recs {
		k := p.Subject(&r) + " " + r.ExporterID
		if _, ok := want[k]; !ok {
			order = append(order, k)
		}
		want[k] = append(want[k], r)
	}
	got := readStream(t, js, "FLOWLENS_FLOWS")
	if len(got) != len(order) {
		t.Fatalf("%d messages, want %d (one per subject and exporter)", len(got), len(order))
	}
	subjects := map[string]bool{}
	for i, m := range got {
		k := m.subject + " " + m.recs[0].ExporterID
		if k != order[i] {
			t.Errorf("message %d: %s, want %s", i, k, order[i])
		}
		if !reflect.DeepEqual(m.recs, want[k]) {
			t.Errorf("message %d (%s): records differ from those published", i, k)
		}
		if m.header.Get(fleet.SchemaHeader) != fleet.Schema || m.header.Get(jetstream.MsgIDHeader) == "" {
			t.Errorf("message %d: headers %v", i, m.header)
		}
		subjects[m.subject] = true
	}
	wantSubjects := map[string]bool{
		"flowlens.flows.prod-eu.shop": true, "flowlens.flows.prod-us.payments": true,
		"flowlens.flows._._": true, "flowlens.flows.x_y.a_b__c_": true,
	}
	if !reflect.DeepEqual(subjects, wantSubjects) {
		t.Errorf("subjects %v, want %v", subjects, wantSubjects)
	}
	if n := testutil.ToFloat64(p.m.Records.WithLabelValues("stored")); n != 200 {
		t.Errorf("records stored metric %v, want 200", n)
	}
}

// A retried Publish of the same records stores nothing twice.
func TestRetryIsDeduplicated(t *testing.T) {
	srv := natstest.Start(t)
	p, js := newPublisher(t, srv, Config{})
	recs := fleettest.Records(50, 2)
	for range 2 {
		if err := p.Publish(context.Background(), recs); err != nil {
			t.Fatal(err)
		}
	}
	var n int
	for _, m := range readStream(t, js, "FLOWLENS_FLOWS") {
		n += len(m.recs)
	}
	if n != 50 {
		t.Fatalf("%d records stored after two publishes of 50, want 50", n)
	}
	if d := testutil.ToFloat64(p.m.Records.WithLabelValues("duplicate")); d != 50 {
		t.Fatalf("duplicate records metric %v, want 50", d)
	}
}

// Messages are split under the size bound; every record arrives, in order.
func TestPublishSplitsLargeBatches(t *testing.T) {
	srv := natstest.Start(t)
	p, js := newPublisher(t, srv, Config{MaxMessageBytes: 2048})
	recs := fleettest.Records(400, 3)
	for i := range recs { // one subject, one exporter: the order of all records is kept
		recs[i].LocalWorkload, recs[i].ExporterID = fleettest.Workloads[0], "exp"
	}
	if err := p.Publish(context.Background(), recs); err != nil {
		t.Fatal(err)
	}
	var got []flow.Enriched
	msgs := readStream(t, js, "FLOWLENS_FLOWS")
	for _, m := range msgs {
		got = append(got, m.recs...)
	}
	if len(msgs) < 10 || !reflect.DeepEqual(got, recs) {
		t.Fatalf("%d messages with %d records; want >= 10 messages with the 400 records in order", len(msgs), len(got))
	}
}

func TestStreamConfig(t *testing.T) {
	srv := natstest.Start(t)
	_, js := newPublisher(t, srv, Config{StreamSettings: fleet.StreamSettings{Stream: "F2", SubjectPrefix: "f2", MaxAge: time.Hour, MaxBytes: 64 << 20}})
	s, err := js.Stream(context.Background(), "F2")
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	if c.MaxAge != time.Hour || c.MaxBytes != 64<<20 || !reflect.DeepEqual(c.Subjects, []string{"f2.>"}) ||
		c.Storage != jetstream.FileStorage || c.Duplicates != 2*time.Minute {
		t.Fatalf("stream config %+v", c)
	}
	// New again with other limits updates the stream in place.
	_, js = newPublisher(t, srv, Config{StreamSettings: fleet.StreamSettings{Stream: "F2", SubjectPrefix: "f2", MaxAge: 2 * time.Hour}})
	s, _ = js.Stream(context.Background(), "F2")
	if c := s.CachedInfo().Config; c.MaxAge != 2*time.Hour || c.MaxBytes != -1 {
		t.Fatalf("updated stream config: max age %v, max bytes %d", c.MaxAge, c.MaxBytes)
	}
}

// With the server gone, Publish fails instead of reporting success; after a restart the same records
// are published and stored once.
func TestPublishToStoppedServerFails(t *testing.T) {
	srv := natstest.Start(t)
	p, js := newPublisher(t, srv, Config{Timeout: 2 * time.Second})
	first := fleettest.Records(20, 4)
	if err := p.Publish(context.Background(), first); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	recs := fleettest.Records(30, 5)
	err := p.Publish(context.Background(), recs)
	if err == nil {
		t.Fatal("Publish to a stopped server returned nil")
	}
	t.Logf("publish with the server stopped: %v", err)
	if n := testutil.ToFloat64(p.m.Records.WithLabelValues("error")); n != 30 {
		t.Errorf("error records metric %v, want 30", n)
	}

	srv.Start()
	deadline := time.Now().Add(20 * time.Second)
	for err = errors.New("not tried"); err != nil; {
		if time.Now().After(deadline) {
			t.Fatalf("publish after restart: %v", err)
		}
		err = p.Publish(context.Background(), recs)
	}
	var n int
	for _, m := range readStream(t, js, "FLOWLENS_FLOWS") {
		n += len(m.recs)
	}
	if n != 50 {
		t.Fatalf("%d records stored, want 50 (20 before the stop, 30 after the restart, none twice)", n)
	}
}
