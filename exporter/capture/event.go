package capture

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"
	"unsafe"

	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/flowlens/flowlens/bpf"
	"github.com/flowlens/flowlens/internal/flow"
)

// Kind is what a kernel event reports.
type Kind uint8

const (
	KindClose     = Kind(bpf.FlowEventKindEVENT_CLOSE)      // the final record of a connection
	KindActive    = Kind(bpf.FlowEventKindEVENT_ACTIVE)     // an interim record of a live connection
	KindResetSent = Kind(bpf.FlowEventKindEVENT_RESET_SENT) // a RST left Sock after its final record was made
)

// Event is one decoded ring-buffer record. Sock is the kernel socket's address: it ties a late RST to the
// connection's final record, and is meaningless outside the exporter.
type Event struct {
	Kind   Kind
	Sock   uint64
	Record flow.Record
}

// ErrTimeout is returned by Read when its deadline passes with nothing to read.
var ErrTimeout = os.ErrDeadlineExceeded

// ErrClosed is returned by Read once the probe is closed.
var ErrClosed = ringbuf.ErrClosed

// SetDeadline makes Read return ErrTimeout once t has passed and nothing is waiting.
func (p *Probe) SetDeadline(t time.Time) { p.reader.SetDeadline(t) }

// Read blocks until the next event, the deadline (ErrTimeout) or Close (ErrClosed).
func (p *Probe) Read(ev *Event) error {
	if err := p.reader.ReadInto(&p.sample); err != nil {
		return err
	}
	return decode(p.sample.RawSample, p.clock, ev, p.comm)
}

// comm interns process names; the table is bounded, and starts over when full.
func (p *Probe) comm(c *[16]int8) string {
	if s, ok := p.comms[*c]; ok {
		return s
	}
	if len(p.comms) >= 4096 {
		clear(p.comms)
	}
	s := commString(c)
	p.comms[*c] = s
	return s
}

var eventSize = int(unsafe.Sizeof(bpf.FlowFlowEvent{}))

// Decode fills ev from one raw flow_event as the kernel wrote it (host byte order).
func Decode(raw []byte, c clock, ev *Event) error { return decode(raw, c, ev, commString) }

func decode(raw []byte, c clock, ev *Event, comm func(*[16]int8) string) error {
	if len(raw) < eventSize {
		return fmt.Errorf("decode flow event: %d bytes, want %d", len(raw), eventSize)
	}
	var k bpf.FlowFlowEvent
	copy(unsafe.Slice((*byte)(unsafe.Pointer(&k)), eventSize), raw)

	ev.Kind = Kind(k.Kind)
	ev.Sock = k.Sk
	r := &ev.Record
	*r = flow.Record{}
	if ev.Kind == KindResetSent {
		return nil
	}
	if ev.Kind != KindClose && ev.Kind != KindActive {
		return fmt.Errorf("decode flow event: unknown kind %d", k.Kind)
	}
	if k.Role > uint8(flow.RoleServer) || k.Close > uint8(flow.CloseTimeout) {
		return fmt.Errorf("decode flow event: role %d or close reason %d out of range", k.Role, k.Close)
	}
	r.LocalAddr = addr(k.Family, &k.Laddr)
	r.RemoteAddr = addr(k.Family, &k.Raddr)
	r.LocalPort = k.Lport
	r.RemotePort = k.Rport
	r.Role = flow.Role(k.Role)
	r.Preexisting = k.Flags&uint8(bpf.FlowEventFlagFLAG_PREEXISTING) != 0
	if !r.Preexisting {
		r.StartTime = c.Wall(k.StartNs)
	}
	r.EndTime = c.Wall(k.EndNs)
	r.BytesSent = k.BytesSent
	r.BytesReceived = k.BytesReceived
	r.SegsSent = k.SegsOut
	r.SegsReceived = k.SegsIn
	r.Retransmits = k.TotalRetrans
	r.SrttUs = k.SrttUs
	r.RttVarUs = k.RttvarUs
	r.MinRttUs = k.MinRttUs
	r.Close = flow.Close(k.Close)
	if k.SkErr != 0 && ev.Kind == KindClose {
		r.Error = unix.ErrnoName(syscall.Errno(k.SkErr))
	}
	r.Pid = k.Pid
	r.Comm = comm(&k.Comm)
	r.Netns = k.Netns
	r.CgroupID = k.CgroupId
	return nil
}

// addr turns the kernel's address bytes into an address, unmapping v4-mapped IPv6 so that the same
// IPv4 peer is one address whatever socket family reached it.
func addr(family uint16, b *[16]uint8) netip.Addr {
	if family == unix.AF_INET {
		return netip.AddrFrom4([4]byte(b[:4]))
	}
	return netip.AddrFrom16(*b).Unmap()
}

func commString(c *[16]int8) string {
	b := unsafe.Slice((*byte)(unsafe.Pointer(&c[0])), len(c))
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

// IsTimeout reports whether err is Read's deadline passing.
func IsTimeout(err error) bool { return errors.Is(err, ErrTimeout) }
