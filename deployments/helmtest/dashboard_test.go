package helmtest

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

const dashboardFile = "../grafana/flowlens.json"

// registered parses the repository's Go source (tests excluded) and returns every metric name it
// registers, from prometheus.*Opts literals (Namespace_Subsystem_Name, constants resolved within the
// file) and prometheus.NewDesc calls, with "histogram" or "summary" for those kinds.
func registered(t *testing.T, root string) map[string]string {
	t.Helper()
	names := map[string]string{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "deployments") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		consts := map[string]string{}
		ast.Inspect(f, func(n ast.Node) bool {
			if vs, ok := n.(*ast.ValueSpec); ok {
				for i, id := range vs.Names {
					if i < len(vs.Values) {
						if s, ok := str(vs.Values[i], nil); ok {
							consts[id.Name] = s
						}
					}
				}
			}
			return true
		})
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CompositeLit:
				sel, ok := n.Type.(*ast.SelectorExpr)
				if !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") || !isPkg(sel.X, "prometheus") {
					return true
				}
				var parts []string
				for _, field := range []string{"Namespace", "Subsystem", "Name"} {
					for _, e := range n.Elts {
						kv, ok := e.(*ast.KeyValueExpr)
						if !ok {
							continue
						}
						if k, _ := kv.Key.(*ast.Ident); k != nil && k.Name == field {
							if s, ok := str(kv.Value, consts); ok && s != "" {
								parts = append(parts, s)
							}
						}
					}
				}
				if len(parts) > 0 {
					names[strings.Join(parts, "_")] = strings.ToLower(strings.TrimSuffix(sel.Sel.Name, "Opts"))
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if ok && sel.Sel.Name == "NewDesc" && isPkg(sel.X, "prometheus") && len(n.Args) > 0 {
					if s, ok := str(n.Args[0], consts); ok {
						if _, known := names[s]; !known {
							names[s] = "desc"
						}
					}
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func isPkg(e ast.Expr, pkg string) bool {
	id, ok := e.(*ast.Ident)
	return ok && id.Name == pkg
}

// str evaluates a string literal, a constant of the file, or a + of those.
func str(e ast.Expr, consts map[string]string) (string, bool) {
	switch e := e.(type) {
	case *ast.BasicLit:
		if e.Kind == token.STRING {
			s, err := strconv.Unquote(e.Value)
			return s, err == nil
		}
	case *ast.Ident:
		s, ok := consts[e.Name]
		return s, ok
	case *ast.BinaryExpr:
		if e.Op == token.ADD {
			a, ok1 := str(e.X, consts)
			b, ok2 := str(e.Y, consts)
			return a + b, ok1 && ok2
		}
	}
	return "", false
}

var metricRE = regexp.MustCompile(`\bflowlens_[a-z0-9_]+`)

// TestDashboardMetricsExist: every metric the dashboard queries is one the code registers (histogram
// series only for histograms), and it covers what an operator needs from each binary.
func TestDashboardMetricsExist(t *testing.T) {
	raw, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Type    string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	code := registered(t, "../..")
	if len(code) < 40 {
		t.Fatalf("found only %d metrics in the source: the parser misses their declarations", len(code))
	}
	used := map[string]bool{}
	for _, p := range d.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			ms := metricRE.FindAllString(tg.Expr, -1)
			if len(ms) == 0 {
				t.Errorf("panel %q: query %q names no flowlens metric", p.Title, tg.Expr)
			}
			for _, m := range ms {
				used[m] = true
				if _, ok := code[m]; ok {
					continue
				}
				base, suffix := m, ""
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					if strings.HasSuffix(m, s) {
						base, suffix = strings.TrimSuffix(m, s), s
					}
				}
				kind := code[base]
				if suffix == "" || !(kind == "histogram" || (kind == "summary" && suffix != "_bucket")) {
					t.Errorf("panel %q: %s is not a metric the code registers (base %s is %q)", p.Title, m, base, kind)
				}
			}
		}
	}
	for _, m := range []string{
		"flowlens_exporter_drops_total", "flowlens_exporter_records_emitted_total", "flowlens_exporter_transport_active",
		"flowlens_collector_ingest_records_total", "flowlens_collector_queue_records", "flowlens_collector_parked_records",
		"flowlens_collector_attributed_records_total", "flowlens_collector_attribution_latency_seconds_bucket",
		"flowlens_sonar_lookups_total", "flowlens_sonar_index_conflicts_total",
	} {
		if !used[m] {
			t.Errorf("dashboard does not show %s", m)
		}
	}
	t.Logf("dashboard queries %d metrics, all among the %d the code registers", len(used), len(code))
}
