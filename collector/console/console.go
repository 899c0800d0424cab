// Package console is the collector's web console: a dependency map of workloads, a flow explorer, an
// IP ownership lookup and the fleet's health, as static pages (hand-written HTML, CSS and JavaScript,
// no framework) embedded in the binary. The pages read the collector's own query API from the same
// origin, and every answer carries a Content-Security-Policy that lets the browser load nothing from
// anywhere else: no CDN, no font service, no analytics.
package console

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Prefix is the path the console is served under.
const Prefix = "/console/"

// CSP is the Content-Security-Policy of every console answer: scripts, styles, images and API calls
// from this origin only; no inline scripts or styles, no plugins, no framing, no <base> tricks.
const CSP = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Handler serves the console's files under Prefix.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree always has static/: a build without it does not compile
	}
	files := http.StripPrefix(Prefix, http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secure(w.Header())
		// Embedded files carry no modification time, so nothing would revalidate them after an
		// upgrade: make the browser ask each time (the files are small and served from memory).
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// Register mounts the console on mux: its files under Prefix, and "/" (exactly) redirecting there,
// so the API address opened in a browser shows the console. Other paths stay with whoever has them.
func Register(mux *http.ServeMux) {
	mux.Handle(Prefix, Handler())
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		secure(w.Header())
		http.Redirect(w, r, Prefix, http.StatusFound)
	})
}

func secure(h http.Header) {
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}
