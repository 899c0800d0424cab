package proto

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedUpToDate regenerates the Go code into a temporary directory and fails if any committed
// file differs or is missing: run `make generate`.
func TestGeneratedUpToDate(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("protoc not installed: `make test` installs it")
		}
		t.Skip("protoc not installed")
	}
	dir := t.TempDir()
	if out, err := exec.Command("../scripts/gen-proto.sh", dir).CombinedOutput(); err != nil {
		t.Fatalf("gen-proto.sh: %v\n%s", err, out)
	}
	n := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		want, _ := os.ReadFile(path)
		got, err := os.ReadFile(rel)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s is stale or missing: run `make generate` and commit the result", rel)
		}
		n++
		return nil
	})
	if err != nil || n == 0 {
		t.Fatalf("walked %d generated files: %v", n, err)
	}
}
