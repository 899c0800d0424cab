package capture

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Capabilities the exporter needs when it is not root: CAP_BPF to load programs and create maps,
// CAP_PERFMON to attach tracepoints and read kernel memory through CO-RE. CAP_SYS_ADMIN implies both.
const (
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// tracefsDirs are where tracepoints are found, newest first.
var tracefsDirs = []string{"/sys/kernel/tracing", "/sys/kernel/debug/tracing"}

// Preflight checks what loading needs and says exactly what is missing, before the kernel gives a less
// helpful error. btfPath is the kernel BTF to check ("" for /sys/kernel/btf/vmlinux).
func Preflight(btfPath string) error {
	var errs []error
	if err := checkCaps(); err != nil {
		errs = append(errs, err)
	}
	if btfPath == "" {
		btfPath = "/sys/kernel/btf/vmlinux"
	}
	if _, err := os.Stat(btfPath); err != nil {
		errs = append(errs, fmt.Errorf("kernel BTF: %w (the kernel needs CONFIG_DEBUG_INFO_BTF=y; the programs use CO-RE)", err))
	}
	if err := checkTracefs(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func checkCaps() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(capSysAdmin) || (has(capBPF) && has(capPerfmon)) {
		return nil
	}
	return fmt.Errorf("insufficient privileges (uid %d): run as root or grant CAP_BPF and CAP_PERFMON", os.Geteuid())
}

// checkTracefs finds tracefs, mounting it at /sys/kernel/tracing when it is missing and we may.
func checkTracefs() error {
	for _, d := range tracefsDirs {
		if _, err := os.Stat(d + "/events"); err == nil {
			return nil
		}
	}
	err := unix.Mount("tracefs", tracefsDirs[0], "tracefs", 0, "")
	if err == nil {
		return nil
	}
	return fmt.Errorf("tracefs not found at %v and mounting it failed (%w): mount -t tracefs tracefs %s", tracefsDirs, err, tracefsDirs[0])
}
