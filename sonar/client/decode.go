package client

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

// Lookup answers are decoded straight from the wire into index.Answer: the generated decoder makes
// seven allocations per answer (messages, address, strings), most of a batch's client-side cost, while
// a batch names few distinct owners. rawCodec sends requests as protobuf and hands the response over
// undecoded; decodeAnswers reads it, interning strings per batch.

type rawCodec struct{}

// rawResponse receives a response's bytes.
type rawResponse struct{ b []byte }

func (rawCodec) Marshal(v any) ([]byte, error) { return proto.Marshal(v.(proto.Message)) }

func (rawCodec) Unmarshal(data []byte, v any) error {
	if r, ok := v.(*rawResponse); ok {
		r.b = append(r.b[:0], data...)
		return nil
	}
	return proto.Unmarshal(data, v.(proto.Message))
}

func (rawCodec) Name() string { return "proto" }

var errWire = errors.New("malformed response")

// wireReader walks protobuf fields.
type wireReader struct {
	b   []byte
	err error
}

// next returns the next field, or ok false at the end or on an error.
func (r *wireReader) next() (num protowire.Number, typ protowire.Type, ok bool) {
	if r.err != nil || len(r.b) == 0 {
		return 0, 0, false
	}
	num, typ, n := protowire.ConsumeTag(r.b)
	if n < 0 {
		r.err = errWire
		return 0, 0, false
	}
	r.b = r.b[n:]
	return num, typ, true
}

func (r *wireReader) varint(typ protowire.Type) uint64 {
	if typ != protowire.VarintType {
		r.err = errWire
		return 0
	}
	v, n := protowire.ConsumeVarint(r.b)
	if n < 0 {
		r.err = errWire
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) bytes(typ protowire.Type) []byte {
	if typ != protowire.BytesType {
		r.err = errWire
		return nil
	}
	v, n := protowire.ConsumeBytes(r.b)
	if n < 0 {
		r.err = errWire
		return nil
	}
	r.b = r.b[n:]
	return v
}

func (r *wireReader) skip(num protowire.Number, typ protowire.Type) {
	n := protowire.ConsumeFieldValue(num, typ, r.b)
	if n < 0 {
		r.err = errWire
		return
	}
	r.b = r.b[n:]
}

// decoder decodes one response. A batch names few owners: each owner's encoding is decoded once and
// its strings allocated once.
type decoder struct {
	strs   map[string]string
	owners map[string]flow.Workload // by the owner's wire bytes
}

func (d *decoder) str(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	if s, ok := d.strs[string(b)]; ok { // no allocation for the lookup
		return s
	}
	s := string(b)
	d.strs[s] = s
	return s
}

// decodeAnswers decodes a LookupResponse.
func decodeAnswers(b []byte, want int) ([]index.Answer, error) {
	d := decoder{strs: make(map[string]string), owners: make(map[string]flow.Workload)}
	answers := make([]index.Answer, 0, want)
	r := wireReader{b: b}
	for num, typ, ok := r.next(); ok; num, typ, ok = r.next() {
		if num != 1 || typ != protowire.BytesType { // protobuf keeps a mistyped field as unknown: so do we
			r.skip(num, typ)
			continue
		}
		a, err := d.answer(r.bytes(typ))
		if err != nil {
			return nil, err
		}
		answers = append(answers, a)
	}
	if r.err != nil {
		return nil, r.err
	}
	return answers, nil
}

// Lookup statuses on the wire (sonarv1.LookupStatus).
const (
	wireOwner    = 1
	wireUnknown  = 2
	wireConflict = 3
)

func (d *decoder) answer(b []byte) (index.Answer, error) {
	var a index.Answer
	var status uint64
	var hasRange bool
	r := wireReader{b: b}
	for num, typ, ok := r.next(); ok; num, typ, ok = r.next() {
		if want := [...]protowire.Type{1: protowire.VarintType, 2: protowire.BytesType, 3: protowire.BytesType}; num < 1 || num > 3 || typ != want[num] {
			r.skip(num, typ)
			continue
		}
		switch num {
		case 1:
			status = r.varint(typ)
		case 2:
			a.Range, hasRange = d.rangeOf(&r, typ), true
		case 3:
			a.Conflicting = append(a.Conflicting, d.rangeOf(&r, typ))
		default:
			r.skip(num, typ)
		}
	}
	if r.err != nil {
		return a, r.err
	}
	switch status {
	case wireUnknown:
		return index.Answer{}, nil
	case wireOwner:
		if !hasRange {
			return a, errors.New("answer OWNER without a range")
		}
		a.Status, a.Conflicting = index.Owned, nil
	case wireConflict:
		a.Status, a.Range = index.Conflict, index.Range{}
	default:
		return a, fmt.Errorf("answer status %d", status)
	}
	return a, nil
}

// rangeOf decodes an OwnershipRange field of r (its address is the query's and is skipped).
func (d *decoder) rangeOf(outer *wireReader, typ protowire.Type) index.Range {
	var rg index.Range
	r := wireReader{b: outer.bytes(typ)}
	for num, typ, ok := r.next(); ok; num, typ, ok = r.next() {
		if want := [...]protowire.Type{1: protowire.BytesType, 2: protowire.VarintType, 3: protowire.VarintType, 4: protowire.BytesType,
			5: protowire.VarintType, 6: protowire.VarintType}; num < 1 || num > 6 || typ != want[num] {
			r.skip(num, typ)
			continue
		}
		switch num {
		case 2:
			rg.Start = int64(r.varint(typ))
		case 3:
			rg.End = int64(r.varint(typ))
		case 4:
			rg.Owner = d.workload(&r, typ)
		case 5:
			rg.Evidence = index.Evidence(r.varint(typ))
		case 6:
			rg.LastSeen = int64(r.varint(typ))
		default:
			r.skip(num, typ)
		}
	}
	if r.err != nil && outer.err == nil {
		outer.err = r.err
	}
	return rg
}

// workload decodes a Workload field of outer.
func (d *decoder) workload(outer *wireReader, typ protowire.Type) flow.Workload {
	b := outer.bytes(typ)
	if w, ok := d.owners[string(b)]; ok {
		return w
	}
	var w flow.Workload
	r := wireReader{b: b}
	for num, typ, ok := r.next(); ok; num, typ, ok = r.next() {
		if typ != protowire.BytesType {
			r.skip(num, typ)
			continue
		}
		var dst *string
		switch num {
		case 1:
			dst = &w.Name
		case 2:
			dst = &w.Namespace
		case 3:
			dst = &w.Pod
		case 4:
			dst = &w.PodUID
		case 5:
			dst = &w.Node
		case 6:
			dst = &w.Cluster
		default:
			r.skip(num, typ)
			continue
		}
		*dst = d.str(r.bytes(typ))
	}
	if r.err != nil && outer.err == nil {
		outer.err = r.err
	}
	if r.err == nil {
		d.owners[string(b)] = w
	}
	return w
}
