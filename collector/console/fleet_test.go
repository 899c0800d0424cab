package console_test

import (
	"strings"
	"testing"
)

// exporterJSON is the part of /api/v1/exporters' answer the fleet page shows and the test checks.
type exporterJSON struct {
	ID              string `json:"id"`
	Transport       string `json:"transport"`
	TransportReason string `json:"transport_reason"`
	Records         int64  `json:"records"`
}

// testFleet: the fleet page lists the probe exporter with the transport it uses and why, as the
// collector's /api/v1/exporters reports them, and shows the collector's ingest rates.
func testFleet(t *testing.T, b *browser, e *env) {
	var ex struct {
		Exporters []exporterJSON `json:"exporters"`
	}
	getJSON(t, e.base+"/api/v1/exporters", &ex)
	var probe *exporterJSON
	for i := range ex.Exporters {
		if strings.HasPrefix(ex.Exporters[i].ID, "probe-") {
			probe = &ex.Exporters[i]
		}
	}
	if probe == nil || probe.Transport != "grpc" || probe.TransportReason == "" || probe.Records != 1 {
		t.Fatalf("the collector reports exporters %+v, want the probe on grpc with a reason and 1 record", ex.Exporters)
	}
	b.open(t, "fleet", "#fleet-exporters")
	b.screenshot(t, "fleet")
	rows := eval[[]row](t, b, `[...document.querySelectorAll('#fleet-exporters tbody tr')].map(tr => ({id: tr.dataset.id, transport: tr.dataset.transport, text: tr.textContent}))`)
	if len(rows) != len(ex.Exporters) {
		t.Fatalf("fleet page lists %d exporters, the collector %d", len(rows), len(ex.Exporters))
	}
	found := false
	for _, r := range rows {
		if r["id"] == probe.ID {
			found = true
			if r["transport"] != "grpc" || !strings.Contains(r["text"], probe.TransportReason) || !strings.Contains(r["text"], "ops/probe") {
				t.Errorf("probe's row %v, want grpc and %q", r, probe.TransportReason)
			}
		}
	}
	if !found {
		t.Fatalf("probe %s not listed: %v", probe.ID, rows)
	}
	if st := eval[string](t, b, `document.querySelector('#fleet-status').textContent`); strings.Contains(st, "ingest:") {
		t.Fatalf("fleet status %q", st)
	}
	if cards := eval[int](t, b, `document.querySelectorAll('#fleet-ingest .card').length`); cards < 6 {
		t.Fatalf("%d ingest cards", cards)
	}
}
