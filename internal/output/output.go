// Package output writes flow records as JSON lines (flow-exporter --output=stdout, flow-collector's
// stdout sink) or discards them (--output=discard, for benchmarks). Shipping to the collector is
// exporter/shipper.
package output

import (
	"bufio"
	"fmt"
	"io"

	"github.com/flowlens/flowlens/internal/flow"
)

// Sink takes records one at a time from a single goroutine. Flush is called when no record is waiting.
type Sink interface {
	Write(r *flow.Record) error
	Flush() error
}

// New returns the sink named by the config's output setting, writing to w where it writes at all.
func New(name string, w io.Writer) (Sink, error) {
	switch name {
	case "stdout":
		return NewJSON(w), nil
	case "discard":
		return Discard{}, nil
	}
	return nil, fmt.Errorf("unknown output %q", name)
}

// JSON writes one JSON object per line.
type JSON struct {
	w   *bufio.Writer
	buf []byte
}

// NewJSON returns a JSON-lines sink on w, buffered until Flush.
func NewJSON(w io.Writer) *JSON {
	return &JSON{w: bufio.NewWriterSize(w, 64<<10)}
}

func (j *JSON) Write(r *flow.Record) error {
	j.buf = append(AppendJSON(j.buf[:0], r), '\n')
	_, err := j.w.Write(j.buf)
	return err
}

func (j *JSON) Flush() error { return j.w.Flush() }

// Discard drops every record; with the exporter's metrics it measures the capture path alone.
type Discard struct{}

func (Discard) Write(*flow.Record) error { return nil }
func (Discard) Flush() error             { return nil }
