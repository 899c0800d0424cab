package console_test

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// browser is one headless Chromium (Debian's package) for a whole test, with what it has seen:
// every URL it requested and every script error or console error.
type browser struct {
	ctx       context.Context
	base      string   // the collector's API address, http://127.0.0.1:port
	artefacts []string // where screenshots go

	mu       sync.Mutex
	requests []string
	errors   []string
}

// requireChromium finds Debian's chromium. Under CI=true its absence fails the test: make test
// installs it (scripts/install-chromium.sh), so missing means the setup is broken.
func requireChromium(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("chromium not found (scripts/install-chromium.sh installs it): %v", err)
		}
		t.Skipf("chromium not found (run scripts/install-chromium.sh): %v", err)
	}
	return path
}

// startBrowser starts Chromium and opens a tab; both end with the test.
func startBrowser(t testing.TB, base string) *browser {
	t.Helper()
	b := &browser{base: base}
	// The screenshots of all subtests go to the test's own artefact directory (a subtest's would be
	// a directory of its own), and to $FLOWLENS_ARTIFACTS/console when set.
	if a, ok := t.(interface{ ArtifactDir() string }); ok {
		b.artefacts = append(b.artefacts, a.ArtifactDir())
	}
	if d := os.Getenv("FLOWLENS_ARTIFACTS"); d != "" {
		b.artefacts = append(b.artefacts, filepath.Join(d, "console"))
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(requireChromium(t)),
		chromedp.NoSandbox, // tests run as root, where Chromium's sandbox refuses to start
		chromedp.Flag("disable-gpu", true),
		chromedp.WindowSize(1400, 1000),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	// The first Run starts the browser; it must not carry a timeout (that would end the browser).
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b.ctx = ctx
	return b
}

func (b *browser) listen(ev any) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		b.requests = append(b.requests, ev.Request.URL)
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
		b.errors = append(b.errors, fmt.Sprintf("exception at %s:%d: %s", d.URL, d.LineNumber+1, msg))
	case *runtime.EventConsoleAPICalled:
		if ev.Type == "error" {
			var args []string
			for _, a := range ev.Args {
				args = append(args, a.Description+fmt.Sprint(a.Value))
			}
			b.errors = append(b.errors, "console.error: "+strings.Join(args, " "))
		}
	case *cdplog.EventEntryAdded:
		if ev.Entry.Level == cdplog.EntryLevelError {
			b.errors = append(b.errors, "log: "+ev.Entry.Text+" "+ev.Entry.URL)
		}
	}
}

// do runs steps with a time limit.
func (b *browser) do(t testing.TB, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// eval evaluates a JavaScript expression and decodes its value into T.
func eval[T any](t testing.TB, b *browser, expr string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// open shows a console page (#/page?query) and waits until the element that page marks with
// data-ready when drawn (the map, the flow table...) has been drawn for it.
func (b *browser) open(t testing.TB, hash, ready string) {
	t.Helper()
	b.after(t, ready, chromedp.Navigate(b.base+"/console/#/"+hash))
}

// after runs an action that makes a page draw again (a navigation, a click) and waits for ready's
// data-ready, cleared first so that the previous drawing does not count.
func (b *browser) after(t testing.TB, ready string, act chromedp.Action[chromedp.Void]) {
	t.Helper()
	b.do(t, chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`{ const e = document.querySelector(%q); if (e) delete e.dataset.ready; }`, ready)))
	b.do(t, act, chromedp.Poll[chromedp.Void](fmt.Sprintf(`document.querySelector(%q)?.dataset.ready === '1'`, ready),
		chromedp.WithPollingTimeout(10*time.Second)))
}

// screenshot saves the whole page as name.png among the test's artefacts (go test -artifacts keeps
// them under its output directory) and, when FLOWLENS_ARTIFACTS is set, under $FLOWLENS_ARTIFACTS/console.
func (b *browser) screenshot(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 15*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	for _, d := range b.artefacts {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// checkOffline fails unless every request the browser made went to the collector, and no script or
// console error (a CSP violation among them) happened.
func (b *browser) checkOffline(t testing.TB) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	base, _ := url.Parse(b.base)
	n := 0
	for _, r := range b.requests {
		if r == "about:blank" || strings.HasPrefix(r, "data:") {
			continue // no request at all: Chromium's own icons (the date picker's) are data: URLs
		}
		u, err := url.Parse(r)
		if err != nil || u.Scheme != "http" || u.Host != base.Host {
			t.Errorf("request to %q: only %s may be asked", r, base.Host)
		}
		n++
	}
	if n == 0 {
		t.Error("no requests seen: the listener is not working")
	}
	for _, e := range b.errors {
		t.Errorf("browser error: %s", e)
	}
}
