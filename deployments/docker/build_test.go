// Package docker holds the container build files, one Dockerfile per binary. There is no Docker engine
// where the tests run, so this test does what each Dockerfile's build stage does — its own `go build`
// line, with its own environment and flags — and checks that the binary fits the final stage's base:
// the static (distroless/static) images get a binary with no interpreter and no shared libraries that
// runs alone in an empty root, and the collector's (distroless/cc) links only what that image ships.
package docker

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// ccLibs are the shared libraries distroless/cc-debian12 provides: glibc's and the GCC runtime.
var ccLibs = []string{"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1",
	"libstdc++.so.6", "libgcc_s.so.1", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1"}

// dockerfile is what the test needs of one build file.
type dockerfile struct {
	env      []string // the build line's variable assignments (CGO_ENABLED=0)
	args     []string // go build's arguments, -o's value replaced by the test
	out      string   // the -o path inside the build stage
	base     string   // the final stage's FROM
	copyDest string   // where the final stage puts the binary
	entry    string   // the ENTRYPOINT's program
}

func TestDockerfilesBuildWhatTheirImagesRun(t *testing.T) {
	files, err := filepath.Glob("Dockerfile.*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no Dockerfiles: %v", err)
	}
	// One per binary that make build produces.
	want := []string{"flow-collector", "flow-exporter", "flowctl", "flowlens-injector", "sonar"}
	var got []string
	for _, f := range files {
		got = append(got, strings.TrimPrefix(f, "Dockerfile."))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("Dockerfiles for %v, want %v", got, want)
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		name := strings.TrimPrefix(f, "Dockerfile.")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			d, err := parse(string(src))
			if err != nil {
				t.Fatal(err)
			}
			if filepath.Base(d.out) != name || d.copyDest != "/usr/local/bin/"+name || d.entry != d.copyDest {
				t.Fatalf("built %s, copied to %s, entrypoint %s: want %s in /usr/local/bin and run from there", d.out, d.copyDest, d.entry, name)
			}
			bin := filepath.Join(t.TempDir(), name)
			args := replaceOut(d.args, bin)
			cmd := exec.Command("go", append([]string{"build"}, args...)...)
			cmd.Dir = root
			// The Dockerfile's environment only: the Makefile's GOFLAGS (build tags) must not mask a
			// Dockerfile that forgot them.
			cmd.Env = append(os.Environ(), "GOFLAGS=")
			cmd.Env = append(cmd.Env, d.env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go build %q: %v\n%s", args, err, out)
			}
			info, err := os.Stat(bin)
			if err != nil {
				t.Fatal(err)
			}
			interp, libs := linkage(t, bin)
			t.Logf("figure: %s binary %.1f MiB, base %s, shared libraries %v", name, float64(info.Size())/(1<<20), d.base, libs)
			switch {
			case strings.Contains(d.base, "distroless/static"):
				if interp != "" || len(libs) > 0 {
					t.Fatalf("%s must be static for %s: interpreter %q, libraries %v", name, d.base, interp, libs)
				}
				runAlone(t, bin)
			case strings.Contains(d.base, "distroless/cc"):
				for _, l := range libs {
					if !slices.Contains(ccLibs, l) {
						t.Errorf("%s needs %s, which %s does not ship", name, l, d.base)
					}
				}
			default:
				t.Fatalf("final stage FROM %s: the test knows distroless/static and distroless/cc", d.base)
			}
		})
	}
}

// parse reads the last stage's base, COPY destination and ENTRYPOINT, and the build stage's go build
// line (backslash continuations joined).
func parse(src string) (dockerfile, error) {
	var d dockerfile
	joined := strings.ReplaceAll(src, "\\\n", " ")
	for _, line := range strings.Split(joined, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			d.base = f[1]
		case "COPY":
			if len(f) == 4 && strings.HasPrefix(f[1], "--from=") {
				d.copyDest = f[3]
			}
		case "ENTRYPOINT":
			d.entry = strings.Trim(strings.TrimSuffix(strings.TrimPrefix(f[1], "["), "]"), `"`)
		case "RUN":
			i := slices.Index(f, "go")
			if i < 0 || i+1 >= len(f) || f[i+1] != "build" {
				continue
			}
			for _, w := range f[1:i] {
				if strings.Contains(w, "=") && !strings.HasPrefix(w, "--") {
					d.env = append(d.env, w)
				}
			}
			d.args = f[i+2:] // as the shell split them; replaceOut rejoins quoted values
			if o := slices.Index(d.args, "-o"); o >= 0 && o+1 < len(d.args) {
				d.out = d.args[o+1]
			}
		}
	}
	if d.out == "" || d.base == "" {
		return d, os.ErrNotExist
	}
	return d, nil
}

// unquoteFlag turns the shell's -ldflags="-s -w" (rejoined) into the argument go sees.
func unquoteFlag(a string) string {
	if k, v, ok := strings.Cut(a, "="); ok && strings.HasPrefix(v, `"`) {
		return k + "=" + strings.Trim(v, `"`)
	}
	return a
}

// replaceOut is the build line's arguments as the shell would pass them, writing to out instead.
func replaceOut(args []string, out string) []string {
	// Rejoin a quoted value that strings.Fields split (-ldflags="-s -w").
	var joined []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		for strings.Count(a, `"`)%2 == 1 && i+1 < len(args) {
			i++
			a += " " + args[i]
		}
		joined = append(joined, unquoteFlag(a))
	}
	if o := slices.Index(joined, "-o"); o >= 0 {
		joined[o+1] = out
	}
	return joined
}

// linkage is the binary's ELF interpreter and needed libraries.
func linkage(t *testing.T, bin string) (string, []string) {
	t.Helper()
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var interp string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				t.Fatal(err)
			}
			interp = string(bytes.TrimRight(b, "\x00"))
		}
	}
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	return interp, libs
}

// runAlone runs bin --help chrooted into a directory that holds nothing else, as the static image's
// root holds little more: if it needed a loader, a library or a file from the host, it would fail.
func runAlone(t *testing.T, bin string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("running the binary in an empty root needs root (chroot); CI runs as root")
		}
		t.Skip("chroot needs root")
	}
	dir := t.TempDir()
	if err := os.Rename(bin, filepath.Join(dir, "prog")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/prog", "--help")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: dir}
	cmd.Dir = "/"
	cmd.Env = []string{}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("--help in an empty root: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("--")) {
		t.Fatalf("--help printed no flags:\n%s", out)
	}
}
