package capture

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

func TestPreflightMissingBTF(t *testing.T) {
	err := Preflight(filepath.Join(t.TempDir(), "no-vmlinux"))
	if err == nil || !strings.Contains(err.Error(), "kernel BTF") || !strings.Contains(err.Error(), "CONFIG_DEBUG_INFO_BTF") {
		t.Fatalf("error %v, want it to name the missing BTF", err)
	}
}

// TestPreflightUnprivileged runs the preflight in a child process without root and without capabilities.
func TestPreflightUnprivileged(t *testing.T) {
	if os.Getenv("FLOWLENS_PREFLIGHT_CHILD") != "" {
		err := Preflight("")
		if err == nil {
			os.Exit(3)
		}
		os.Stderr.WriteString(err.Error())
		os.Exit(0)
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to start a child as another user")
	}
	// The test binary sits in a root-only build directory: give the child a copy it may execute.
	dir, err := os.MkdirTemp("", "flowlens-preflight")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	exe := filepath.Join(dir, "preflight.test")
	bin, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestPreflightUnprivileged$")
	cmd.Env = append(os.Environ(), "FLOWLENS_PREFLIGHT_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "CAP_BPF and CAP_PERFMON") {
		t.Fatalf("unprivileged preflight said %q, want it to name the capabilities", out)
	}
}

// TestVerifierRefusalCarriesLog: a program the verifier refuses gives an error with the verifier's log.
func TestVerifierRefusalCarriesLog(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to load a program")
	}
	_, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:    ebpf.RawTracepoint,
		License: "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Reg(asm.R0, asm.R3), // R3 was never written: the verifier refuses
			asm.Return(),
		},
	})
	if err == nil {
		t.Fatal("the verifier accepted an uninitialised read")
	}
	msg := loadError(err).Error()
	if !strings.Contains(msg, "verifier refused") || !strings.Contains(msg, "R3 !read_ok") {
		t.Fatalf("error %q: want the refusal and the verifier's log", msg)
	}
}
