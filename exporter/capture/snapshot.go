package capture

import (
	"context"
	"fmt"
	"time"
	"unsafe"

	"github.com/cilium/ebpf"
)

// Snapshot emits an interim (ACTIVE) record, through the ring buffer, for every live connection past its
// handshake. Every connection, however young: then one open across N rounds gets N interim records, and a
// short one gets an extra record only when it straddles a round. Tracepoints alone never fire for an idle connection, so the exporter runs
// the never-attached `snapshot` program with BPF_PROG_RUN: it walks the flows map in the kernel and reads
// each socket's counters from struct tcp_sock, exactly as the final record will. When the ring buffer
// fills mid-round the program stops; Snapshot waits for the reader to drain it and runs the round again,
// and each connection is reported once per round. Snapshot must not run concurrently with itself.
func (p *Probe) Snapshot(ctx context.Context) error {
	p.tick++
	args := [1]uint64{uint64(p.tick)}
	opts := &ebpf.RunOptions{Context: unsafe.Slice((*byte)(unsafe.Pointer(&args[0])), int(unsafe.Sizeof(args)))}
	for {
		full, err := p.objs.Snapshot.Run(opts)
		if err != nil {
			return fmt.Errorf("run snapshot program: %w", err)
		}
		if full == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("snapshot round %d incomplete: %w", p.tick, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
