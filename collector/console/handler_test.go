package console_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/flowlens/flowlens/collector/console"
)

// TestHandler: the console's files are served with their types and the CSP, "/" redirects to them,
// and every other path stays with whoever else the mux has (here a handler answering 418).
func TestHandler(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) })
	console.Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		path, method string
		code         int
		ctype, body  string // prefix of Content-Type, substring of the body
	}{
		{"/", "GET", http.StatusFound, "", ""},
		{"/console/", "GET", http.StatusOK, "text/html", `<script type="module" src="js/main.js">`},
		{"/console/js/map.js", "GET", http.StatusOK, "text/javascript", "export function health"},
		{"/console/console.css", "GET", http.StatusOK, "text/css", "--red"},
		{"/console/favicon.svg", "GET", http.StatusOK, "image/svg+xml", "<svg"},
		{"/console/nothing.js", "GET", http.StatusNotFound, "text/plain", ""},
		{"/api/v1/flows", "GET", http.StatusTeapot, "", ""},
		{"/", "POST", http.StatusTeapot, "", ""},
	} {
		req, _ := http.NewRequest(tc.method, srv.URL+tc.path, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.code || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.ctype) || !strings.Contains(string(body), tc.body) {
			t.Errorf("%s %s: %d %q, want %d %q containing %q", tc.method, tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.code, tc.ctype, tc.body)
		}
		if tc.code == http.StatusTeapot {
			continue
		}
		if csp := resp.Header.Get("Content-Security-Policy"); csp != console.CSP || !strings.HasPrefix(csp, "default-src 'self';") {
			t.Errorf("%s: CSP %q", tc.path, csp)
		}
		if tc.code == http.StatusFound && resp.Header.Get("Location") != console.Prefix {
			t.Errorf("/ redirects to %q", resp.Header.Get("Location"))
		}
	}
}
