package persist

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

// The encodings are varints throughout: times as signed varints (Unix nanoseconds), an address as its
// length (4 or 16) and bytes, a workload as its six strings, each length-prefixed.

func appendAddr(b []byte, ip netip.Addr) []byte {
	s := ip.Unmap().AsSlice()
	return append(append(b, byte(len(s))), s...)
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func appendWorkload(b []byte, w flow.Workload) []byte {
	for _, s := range [...]string{w.Name, w.Namespace, w.Pod, w.PodUID, w.Node, w.Cluster} {
		b = appendString(b, s)
	}
	return b
}

func appendClaim(b []byte, c index.Claim) []byte {
	b = appendAddr(b, c.IP)
	b = binary.AppendVarint(b, c.Start)
	b = binary.AppendVarint(b, c.End)
	b = binary.AppendVarint(b, c.Seen)
	b = append(b, byte(c.Evidence))
	return appendWorkload(b, c.Owner)
}

var errShort = errors.New("truncated")

// decoder reads the encodings back; the first error sticks and every later read returns zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(err error) {
	if d.err == nil {
		d.err = err
	}
}

func (d *decoder) byte() byte {
	if d.err != nil || len(d.b) < 1 {
		d.fail(errShort)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail(errShort)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes(n uint64) []byte {
	if d.err != nil || uint64(len(d.b)) < n {
		d.fail(errShort)
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) addr() netip.Addr {
	n := d.byte()
	if d.err == nil && n != 4 && n != 16 {
		d.fail(fmt.Errorf("address of %d bytes", n))
		return netip.Addr{}
	}
	ip, _ := netip.AddrFromSlice(d.bytes(uint64(n)))
	return ip
}

func (d *decoder) string() string { return string(d.bytes(d.uvarint())) }

func (d *decoder) workload() flow.Workload {
	return flow.Workload{Name: d.string(), Namespace: d.string(), Pod: d.string(), PodUID: d.string(), Node: d.string(), Cluster: d.string()}
}

func (d *decoder) claim() index.Claim {
	c := index.Claim{IP: d.addr(), Start: d.varint(), End: d.varint(), Seen: d.varint(), Evidence: index.Evidence(d.byte())}
	c.Owner = d.workload()
	return c
}
