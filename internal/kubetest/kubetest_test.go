package kubetest

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// outcome is a testing.TB that records Fatalf and Skipf instead of ending the test it belongs to.
type outcome struct {
	testing.TB
	fatal, skip string
}

func (o *outcome) Helper() {}
func (o *outcome) Fatalf(format string, args ...any) {
	o.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (o *outcome) Skipf(format string, args ...any) {
	o.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func run(t *testing.T) (o *outcome, dir string) {
	o = &outcome{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		dir = requireBinaries(o)
	}()
	<-done
	return o, dir
}

func TestRequireBinaries(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(DirEnv, dir)
	if Dir() != dir {
		t.Fatalf("Dir() = %q with %s=%q", Dir(), DirEnv, dir)
	}

	t.Setenv("CI", "true")
	o, _ := run(t)
	if !strings.Contains(o.fatal, "kube-apiserver not found in "+dir) || !strings.Contains(o.fatal, InstallScript) || o.skip != "" {
		t.Fatalf("CI=true, no binaries: fatal %q skip %q; want a failure naming the binary, the directory and %s", o.fatal, o.skip, InstallScript)
	}
	t.Setenv("CI", "")
	if o, _ = run(t); o.fatal != "" || !strings.Contains(o.skip, InstallScript) {
		t.Fatalf("no CI, no binaries: fatal %q skip %q; want a skip", o.fatal, o.skip)
	}

	// kube-apiserver there, etcd not executable: still missing.
	if err := os.WriteFile(filepath.Join(dir, "kube-apiserver"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "etcd"), []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CI", "true")
	if o, _ = run(t); !strings.Contains(o.fatal, "etcd not found") {
		t.Fatalf("etcd not executable: fatal %q skip %q", o.fatal, o.skip)
	}
	if err := os.Chmod(filepath.Join(dir, "etcd"), 0o755); err != nil {
		t.Fatal(err)
	}
	if o, got := run(t); o.fatal != "" || o.skip != "" || got != dir {
		t.Fatalf("both present: fatal %q skip %q dir %q", o.fatal, o.skip, got)
	}
}

func TestDefaultDir(t *testing.T) {
	t.Setenv(DirEnv, "")
	if want := "/var/cache/flowlens/envtest/" + KubeVersion; Dir() != want {
		t.Fatalf("Dir() = %q, want %q", Dir(), want)
	}
	// The script builds the version the tests look for.
	b, err := os.ReadFile("../../" + InstallScript)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `kube_version="`+KubeVersion+`"`) {
		t.Fatalf("%s does not build %s", InstallScript, KubeVersion)
	}
}
