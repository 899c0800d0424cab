// Package capture loads flowlens's eBPF programs, attaches them to their tracepoints and turns what
// they report into events. It keeps no per-connection state itself: live connections live in the
// kernel's flows map and reach user space only as final or interim records.
package capture

import (
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/flowlens/flowlens/bpf"
)

// Options says what to watch and how much kernel memory to use.
type Options struct {
	// Netns is the inode of the network namespace to watch; 0 watches every namespace (host scope).
	Netns uint32
	// MaxConnections sizes the kernel's preallocated flows map (40 B an entry plus hash overhead).
	MaxConnections uint32
	// RingBufferBytes sizes the ring buffer; a power of two and a multiple of the page size.
	RingBufferBytes uint32
}

// Probe is the loaded and attached set of programs. Read must be called from one goroutine;
// Snapshot, Drops and Stats may be called from others. Close detaches everything.
type Probe struct {
	log    *zap.Logger
	objs   bpf.FlowObjects
	links  []link.Link
	reader *ringbuf.Reader
	clock  clock
	tick   uint32
	sample ringbuf.Record
	comms  map[[16]int8]string // interned process names: the same few names recur on every record
}

// hooks lists the tracepoints the programs attach to.
func hooks(o *bpf.FlowObjects) []struct {
	group, name string
	prog        *ebpf.Program
	btf         bool // a tp_btf program: a raw tracepoint with typed arguments
} {
	return []struct {
		group, name string
		prog        *ebpf.Program
		btf         bool
	}{
		{"sock", "inet_sock_set_state", o.OnSetState, true},
		{"syscalls", "sys_exit_accept4", o.OnAccept4Exit, false},
		{"syscalls", "sys_exit_accept", o.OnAcceptExit, false},
		{"tcp", "tcp_send_reset", o.OnSendReset, true},
		{"tcp", "tcp_retransmit_skb", o.OnRetransmit, true},
	}
}

// Open loads the programs with opts, attaches them and opens the ring buffer.
func Open(opts Options, log *zap.Logger) (*Probe, error) {
	spec, err := bpf.LoadFlow()
	if err != nil {
		return nil, fmt.Errorf("load bpf object: %w", err)
	}
	if err := spec.Variables["target_netns"].Set(opts.Netns); err != nil {
		return nil, fmt.Errorf("set target_netns: %w", err)
	}
	if opts.MaxConnections > 0 {
		spec.Maps["flows"].MaxEntries = opts.MaxConnections
	}
	if opts.RingBufferBytes > 0 {
		spec.Maps["events"].MaxEntries = opts.RingBufferBytes
	}
	if err := spec.Variables["wakeup_bytes"].Set(uint64(spec.Maps["events"].MaxEntries / 4)); err != nil {
		return nil, fmt.Errorf("set wakeup_bytes: %w", err)
	}

	p := &Probe{log: log, comms: make(map[[16]int8]string)}
	if err := spec.LoadAndAssign(&p.objs, nil); err != nil {
		return nil, loadError(err)
	}
	// Loading parsed the kernel's BTF (mmapped, and released by a GC cleanup) and the object's: megabytes
	// nothing needs any more. Collect now rather than carry them in RSS until the heap next doubles.
	maxConns, ringBytes := spec.Maps["flows"].MaxEntries, spec.Maps["events"].MaxEntries
	spec = nil
	debug.FreeOSMemory()
	// The clock offset is taken before any event can be produced, once, so every record converts alike.
	p.clock = newClock()

	for _, h := range hooks(&p.objs) {
		var l link.Link
		if h.btf {
			l, err = link.AttachTracing(link.TracingOptions{Program: h.prog})
		} else {
			l, err = link.Tracepoint(h.group, h.name, h.prog, nil)
		}
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("attach %s:%s: %w", h.group, h.name, err)
		}
		p.links = append(p.links, l)
	}
	p.reader, err = ringbuf.NewReader(p.objs.Events)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	log.Info("bpf programs attached", zap.Uint32("netns", opts.Netns), zap.Int("hooks", len(p.links)),
		zap.Uint32("max_connections", maxConns), zap.Uint32("ring_buffer_bytes", ringBytes))
	return p, nil
}

// loadError says why loading failed; a verifier refusal carries the verifier's whole log.
func loadError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		// %w keeps the error inspectable; %+v adds the whole verifier log, which Error() truncates.
		return fmt.Errorf("the kernel's verifier refused a program: %w\nverifier log:\n%+v", err, ve)
	}
	return fmt.Errorf("load bpf programs: %w", err)
}

// Detach stops the tracepoints; the ring buffer and the snapshot program keep working, so the
// connections still open can be flushed as interim records.
func (p *Probe) Detach() {
	for _, l := range p.links {
		l.Close()
	}
	p.links = nil
}

// Close detaches the programs and releases the maps. A Read blocked in another goroutine returns
// ringbuf.ErrClosed.
func (p *Probe) Close() error {
	p.Detach()
	if p.reader != nil {
		p.reader.Close()
	}
	return p.objs.Close()
}

// NetnsInode returns the inode of the network namespace at path, or of process pid's when path is a number.
// Anything that is not a namespace file is an error, rather than a scope that silently matches nothing.
func NetnsInode(pathOrPid string) (uint32, error) {
	path := pathOrPid
	if path == "" {
		path = "/proc/self/ns/net"
	} else if _, err := strconv.Atoi(path); err == nil {
		path = "/proc/" + path + "/ns/net"
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(path, &fs); err != nil {
		return 0, fmt.Errorf("network namespace %s: %w", path, err)
	}
	if fs.Type != unix.NSFS_MAGIC {
		return 0, fmt.Errorf("network namespace %s: not a namespace file (give /var/run/netns/NAME, /proc/PID/ns/net or a pid)", path)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("network namespace %s: %w", path, err)
	}
	return uint32(st.Ino), nil
}

// clock converts the kernel's CLOCK_MONOTONIC to wall-clock time with one offset taken at load.
type clock struct{ offset int64 }

func newClock() clock {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return clock{offset: time.Now().UnixNano() - ts.Nano()}
}

// Wall converts a CLOCK_MONOTONIC reading in nanoseconds to Unix nanoseconds.
func (c clock) Wall(mono uint64) int64 { return int64(mono) + c.offset }
