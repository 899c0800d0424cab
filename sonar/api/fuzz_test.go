package api

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/flowlens/flowlens/sonar/index"
)

// FuzzBatch feeds arbitrary bodies to POST /api/v1/lookup: every one is answered 200 with one answer
// per query, or 400/413 with an error message; nothing panics.
func FuzzBatch(f *testing.F) {
	for _, s := range []string{
		`{"queries":[{"ip":"10.0.0.5","at":1764039600000000000}]}`,
		`{"queries":[{"ip":"fd00::1","at":"2026-11-25T03:00:00Z"},{"ip":"::ffff:10.0.0.1","at":"-5m"},{"ip":"10.0.0.1"}]}`,
		`{"queries":[{"ip":"10.0.0.5","at":"+1h"}]}`,
		`{"queries":[{"ip":"10.0.0.5","at":null}]}`,
		`{"queries":[{"ip":"10.0.0.5","at":-1}]}`,
		`{"queries":[{"ip":"fe80::1%eth0","at":"0"}]}`,
		`{"queries":[]}`, `{}`, `[]`, `null`, ``, `{"queries":[{"ip":1}]}`, `{"queries":[{"ip":"10.0.0.5","at":{}}]}`,
		`{"queries":[{"ip":"10.0.0.5","at":1e9}]}`, `{"queries":[{"ip":"10.0.0.5","at":"9999999999999999999"}]}`,
	} {
		f.Add([]byte(s))
	}
	idx := index.New(index.Config{})
	idx.Add(index.Claim{IP: netip.MustParseAddr("10.0.0.5"), Start: 0, End: 1 << 62, Evidence: index.EvidenceHeartbeat})
	h := NewHTTP(idx, zap.NewNop(), WithClock(func() time.Time { return time.Unix(1_764_039_600, 0) }))
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/api/v1/lookup", strings.NewReader(string(body))))
		switch w.Code {
		case http.StatusOK:
			var req BatchRequest
			if err := json.Unmarshal(body, &req); err != nil {
				t.Fatalf("accepted a body encoding/json refuses: %v", err)
			}
			var resp BatchResponse
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil || len(resp.Answers) != len(req.Queries) {
				t.Fatalf("answer %q: %v, %d answers to %d queries", w.Body, err, len(resp.Answers), len(req.Queries))
			}
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge:
			var e ErrorJSON
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("error answer %q: %v", w.Body, err)
			}
		default:
			t.Fatalf("status %d", w.Code)
		}
	})
}

// FuzzLookupQuery feeds arbitrary ip and at values to GET /api/v1/lookup: 200 with the address and
// time echoed as parsed, or 400 with a message; nothing panics.
func FuzzLookupQuery(f *testing.F) {
	for _, s := range [][2]string{{"10.0.0.5", "1764039600000000000"}, {"fd00::1", "2026-11-25T03:00:00.5+01:00"},
		{"::ffff:10.0.0.5", "-5m"}, {"10.0.0.5", " 10s"}, {"10.0.0.5", ""}, {"", "-"}, {"fe80::1%eth0", "+"}, {"1.2.3.4", "-9223372036854775808"}} {
		f.Add(s[0], s[1])
	}
	h := NewHTTP(index.New(index.Config{}), zap.NewNop(), WithClock(func() time.Time { return time.Unix(1_764_039_600, 0) }))
	f.Fuzz(func(t *testing.T, ip, at string) {
		q := url.Values{"ip": {ip}, "at": {at}}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/api/v1/lookup?"+q.Encode(), nil))
		switch w.Code {
		case http.StatusOK:
			var a AnswerJSON
			if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil || a.Status != "UNKNOWN" {
				t.Fatalf("answer %q: %v", w.Body, err)
			}
			if want := netip.MustParseAddr(ip).String(); a.IP != want {
				t.Fatalf("ip %q echoed as %q, want %q", ip, a.IP, want)
			}
		case http.StatusBadRequest:
			var e ErrorJSON
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("error answer %q: %v", w.Body, err)
			}
		default:
			t.Fatalf("status %d", w.Code)
		}
	})
}
