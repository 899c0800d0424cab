package udpwire

import (
	"errors"
	"fmt"
	"sort"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

// growTries bounds the compressions spent per datagram. The first try, sized from the ratio of the
// datagram before, usually lands within a record of the best, and the second on it.
const growTries = 4

// Datagram is one sealed datagram and the number of records it carries.
type Datagram struct {
	Bytes   []byte
	Records int
}

// Splitter cuts batches into datagrams of at most a given size, each carrying the batch's header fields
// and a run of its records. It keeps its buffers from one batch to the next, so it is not safe for
// concurrent use, and what Split returns is valid only until the next Split.
type Splitter struct {
	c     *Codec
	max   int
	shell []byte  // the batch's fields but its records, marshalled: what the datagram being made carries
	first []byte  // the shell of a batch's first datagram, with the exporter's status
	rest  []byte  // the shell of its other datagrams: without the status, which the first one carried
	recs  []byte  // every record of the batch as a records field (tag, length, message), back to back
	ends  []int   // where each record ends in recs
	plain []byte  // the payload being tried: shell and a run of records
	spare []byte  // a candidate that did not fit, kept for its backing array
	ratio float64 // compressed to plain payload size of the last datagram made: the guess for the next
	out   []Datagram
}

// NewSplitter makes datagrams of at most maxDatagram bytes, sealed by c.
func NewSplitter(c *Codec, maxDatagram int) (*Splitter, error) {
	// A datagram needs room for the batch's header fields and at least one record: anything smaller than
	// the format's overhead and 100 bytes is surely a mistake in the configuration.
	if maxDatagram < Overhead+100 || maxDatagram > MaxDatagram {
		return nil, fmt.Errorf("udp datagram size %d: want %d to %d bytes", maxDatagram, Overhead+100, MaxDatagram)
	}
	return &Splitter{c: c, max: maxDatagram}, nil
}

// Split seals b's records into as few datagrams as it finds, numbered firstSeq, firstSeq+1, ...; a batch
// without records makes one datagram. Every datagram carries the batch's fields, but only the first
// carries its status: it is the exporter's, not the records', and a hundred bytes or so in each datagram
// would cost some records' room. A record that does not fit in a datagram on its own fails the whole
// batch with ErrTooLarge, before any datagram is made.
func (s *Splitter) Split(b *flowv1.FlowBatch, firstSeq uint64) ([]Datagram, error) {
	if err := s.marshal(b); err != nil {
		return nil, err
	}
	s.out = s.out[:0]
	s.shell = s.first
	for i := 0; i < len(s.ends) || len(s.out) == 0; {
		if len(s.out) == 1 {
			s.shell = s.rest
		}
		var d Datagram
		if len(s.out) < cap(s.out) {
			d = s.out[:len(s.out)+1][len(s.out)] // reuse the backing array of the datagram made here before
		}
		d, err := s.pack(d.Bytes[:0], firstSeq+uint64(len(s.out)), i)
		if err != nil {
			return nil, err
		}
		s.out = append(s.out, d)
		i += d.Records
	}
	return s.out, nil
}

// marshal encodes b's header fields (with and without the status) and each of its records once; every
// try after only concatenates. Protobuf fields may come in any order, and repeated ones in pieces, so
// shell + records parses as the batch with those records.
func (s *Splitter) marshal(b *flowv1.FlowBatch) error {
	m := b.ProtoReflect()
	fields := m.Descriptor().Fields()
	recordsField, statusField := fields.ByName("records"), fields.ByName("status")
	shell := m.New()
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd != recordsField {
			shell.Set(fd, v)
		}
		return true
	})
	shell.SetUnknown(m.GetUnknown())
	opts := proto.MarshalOptions{Deterministic: true}
	var err error
	if s.first, err = opts.MarshalAppend(s.first[:0], shell.Interface()); err != nil {
		return fmt.Errorf("marshal batch %d: %w", b.GetSeq(), err)
	}
	shell.Clear(statusField)
	if s.rest, err = opts.MarshalAppend(s.rest[:0], shell.Interface()); err != nil {
		return fmt.Errorf("marshal batch %d: %w", b.GetSeq(), err)
	}
	s.recs, s.ends = s.recs[:0], s.ends[:0]
	for i, r := range b.Records {
		s.recs = protowire.AppendTag(s.recs, protowire.Number(recordsField.Number()), protowire.BytesType)
		s.recs = protowire.AppendVarint(s.recs, uint64(opts.Size(r)))
		if s.recs, err = (proto.MarshalOptions{Deterministic: true, UseCachedSize: true}).MarshalAppend(s.recs, r); err != nil {
			return fmt.Errorf("marshal batch %d record %d: %w", b.GetSeq(), i, err)
		}
		s.ends = append(s.ends, len(s.recs))
	}
	return nil
}

// begin is where record i starts in recs.
func (s *Splitter) begin(i int) int {
	if i == 0 {
		return 0
	}
	return s.ends[i-1]
}

// plainSize is the payload of records [i, j) uncompressed.
func (s *Splitter) plainSize(i, j int) int { return len(s.shell) + s.begin(j) - s.begin(i) }

// fit is the largest j such that records [i, j) take at most limit bytes uncompressed; i if none fits.
func (s *Splitter) fit(i, limit int) int {
	return i + sort.Search(len(s.ends)-i, func(k int) bool { return s.plainSize(i, i+k+1) > limit })
}

// pack seals into dst the datagram seq that starts at record i, with as many records as it finds room
// for. Compression decides how many fit, and compressing is most of the cost, so it guesses the count
// from the compression ratio of the datagram before, corrects with the ratio of each try, and stops when
// the room left is less than an average record.
func (s *Splitter) pack(dst []byte, seq uint64, i int) (Datagram, error) {
	budget := s.max - Overhead
	lo := s.fit(i, budget) // records that fit uncompressed: a floor, since Seal never makes a payload longer
	if lo == i {
		// Not even one record fits uncompressed (or there are none): seal one, or the bare header fields.
		lo = min(i+1, len(s.ends))
		d, err := s.seal(dst, seq, i, lo)
		if err == nil && len(d) <= s.max {
			return Datagram{Bytes: d, Records: lo - i}, nil
		}
		if err != nil && !errors.Is(err, ErrTooLarge) {
			return Datagram{}, err
		}
		what := fmt.Sprintf("record %d", i)
		if lo == i {
			what = "batch header"
		}
		return Datagram{}, fmt.Errorf("%s: %d bytes with the header fields, over the datagram size %d: %w",
			what, s.plainSize(i, lo)+Overhead, s.max, ErrTooLarge)
	}
	hi := len(s.ends) + 1      // the fewest records from i known not to fit
	best, sealed := dst, false // lo sealed, once a try has; until then dst, for its backing array
	j := max(s.guess(i, s.ratio, budget), lo)
	for try := 0; ; try++ {
		cand, err := s.seal(s.spare[:0], seq, i, j)
		if err != nil && !errors.Is(err, ErrTooLarge) {
			return Datagram{}, err
		}
		fits := err == nil && len(cand) <= s.max
		if fits {
			best, s.spare, lo, sealed = cand, best[:0], j, true
		} else {
			s.spare, hi = cand, j
		}
		full := fits && (cand[HeaderSize-1] != FlagZstd || s.max-len(cand) < (len(cand)-Overhead)/(j-i))
		if full || lo+1 >= hi || try+1 == growTries || err != nil {
			break
		}
		j = min(max(s.guess(i, float64(len(cand)-Overhead)/float64(s.plainSize(i, j)), budget), lo+1), hi-1)
	}
	if !sealed {
		var err error
		if best, err = s.seal(best[:0], seq, i, lo); err != nil { // lo fits uncompressed: only a bug fails here
			return Datagram{}, err
		}
	}
	s.ratio = float64(len(best)-Overhead) / float64(s.plainSize(i, lo))
	return Datagram{Bytes: best, Records: lo - i}, nil
}

// guess is how many records from i fill budget at the compression ratio given (0: none known yet).
func (s *Splitter) guess(i int, ratio float64, budget int) int {
	if ratio <= 0 {
		return i
	}
	return s.fit(i, int(min(float64(budget)/ratio, MaxDecoded)))
}

// seal makes the datagram seq of records [i, j).
func (s *Splitter) seal(dst []byte, seq uint64, i, j int) ([]byte, error) {
	s.plain = append(append(s.plain[:0], s.shell...), s.recs[s.begin(i):s.begin(j)]...)
	return s.c.Seal(dst, seq, s.plain)
}
