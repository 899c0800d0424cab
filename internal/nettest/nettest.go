// Package nettest gives tests the real kernel pieces they need: a gate for privileged tests and
// throw-away network namespaces, joined by veth pairs, to run connections in.
package nettest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// RequirePrivileged skips t unless it runs as root on a kernel with BTF and tracefs. Under CI (CI set)
// it fails instead, so a CI machine that cannot run the kernel tests is noticed rather than skipped.
func RequirePrivileged(t testing.TB) {
	t.Helper()
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		missing = append(missing, "kernel BTF")
	}
	if _, err := os.Stat("/sys/kernel/tracing/events"); err != nil {
		if _, err := os.Stat("/sys/kernel/debug/tracing/events"); err != nil {
			missing = append(missing, "tracefs (mount -t tracefs tracefs /sys/kernel/tracing)")
		}
	}
	if len(missing) == 0 {
		return
	}
	msg := "kernel test needs " + strings.Join(missing, ", ")
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// Run runs a command and fails t with its output if it fails.
func Run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

var seq atomic.Int64

// Netns is a network namespace made for one test, removed when the test ends.
type Netns struct {
	Name  string
	Path  string
	Inode uint32
}

// NewNetns makes a namespace with loopback up.
func NewNetns(t testing.TB) *Netns {
	t.Helper()
	name := fmt.Sprintf("fltest-%d-%d", os.Getpid(), seq.Add(1))
	Run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	n := &Netns{Name: name, Path: "/var/run/netns/" + name}
	var st unix.Stat_t
	if err := unix.Stat(n.Path, &st); err != nil {
		t.Fatalf("stat %s: %v", n.Path, err)
	}
	n.Inode = uint32(st.Ino)
	n.Exec(t, "ip", "link", "set", "lo", "up")
	return n
}

// Exec runs a command inside the namespace.
func (n *Netns) Exec(t testing.TB, name string, args ...string) {
	t.Helper()
	Run(t, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// Do runs fn on an OS thread that has entered the namespace. Sockets fn creates belong to the namespace
// for their whole life, whichever goroutine uses them later.
func (n *Netns) Do(t testing.TB, fn func()) {
	t.Helper()
	if err := InNetns(n.Path, fn); err != nil {
		t.Fatal(err)
	}
}

// InNetns runs fn on an OS thread that has entered the network namespace at path.
func InNetns(path string, fn func()) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it dies with the goroutine rather than return to the pool in the
		// wrong namespace.
		runtime.LockOSThread()
		f, err := os.Open(path)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		fn()
		errc <- nil
	}()
	return <-errc
}

// Veth joins a and b with a veth pair addressed aAddr and bAddr (CIDR, e.g. "10.199.0.1/24" — the
// addresses exist only inside the two namespaces). It returns the interface names in a and in b.
func Veth(t testing.TB, a, b *Netns, aAddr, bAddr string) (string, string) {
	t.Helper()
	id := seq.Add(1)
	an, bn := fmt.Sprintf("vfa%d", id), fmt.Sprintf("vfb%d", id)
	Run(t, "ip", "link", "add", an, "netns", a.Name, "type", "veth", "peer", "name", bn, "netns", b.Name)
	a.Exec(t, "ip", "addr", "add", aAddr, "dev", an)
	b.Exec(t, "ip", "addr", "add", bAddr, "dev", bn)
	a.Exec(t, "ip", "link", "set", an, "up")
	b.Exec(t, "ip", "link", "set", bn, "up")
	return an, bn
}

// Serve accepts connections on ln until ln closes, handling each in its own goroutine.
func Serve(ln net.Listener, handle func(net.Conn)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go handle(c)
		}
	}()
}
