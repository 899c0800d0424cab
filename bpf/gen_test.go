package bpf

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedUpToDate rebuilds the object and bindings with the //go:generate line of gen.go into a
// temporary directory and fails if they differ from the committed ones: run `make generate`.
func TestGeneratedUpToDate(t *testing.T) {
	if _, err := exec.LookPath("clang"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("clang not installed: `make test` installs it")
		}
		t.Skip("clang not installed")
	}
	src, err := os.ReadFile("gen.go")
	if err != nil {
		t.Fatal(err)
	}
	var args []string
	for _, line := range strings.Split(string(src), "\n") {
		if rest, ok := strings.CutPrefix(line, "//go:generate go "); ok {
			args = splitQuoted(rest)
		}
	}
	if len(args) < 2 || args[1] != "bpf2go" {
		t.Fatalf("no bpf2go //go:generate line in gen.go")
	}
	dir := t.TempDir()
	// Flags go before bpf2go's positional arguments (the stem and the source).
	args = append(args[:2], append([]string{"-output-dir", dir, "-go-package", "bpf"}, args[2:]...)...)
	cmd := exec.Command("go", args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	for _, f := range []string{"flow_bpfel.o", "flow_bpfel.go"} {
		want, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run `make generate` and commit the result", f)
		}
	}
}

// splitQuoted splits a //go:generate line on spaces, keeping "double-quoted" words whole.
func splitQuoted(s string) []string {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
		case r == ' ' && !quoted:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(r)
		}
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out
}
