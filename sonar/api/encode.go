package api

import (
	"net/netip"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/sonar/index"
)

// Lookup responses are encoded by hand, straight from index.Answer: building a LookupAnswer,
// OwnershipRange and Workload message per answer and marshalling them cost several times the lookups
// themselves. The bytes are exactly what proto.Marshal writes for the same answers (fields in number
// order, zero values omitted); Lookup hands them to gRPC as the response's unknown fields, which
// protobuf marshals verbatim, so the service and every client stay plain protobuf.

// Field numbers of flowlens.sonar.v1 and flowlens.flow.v1.Workload.
const (
	fAnswers     = 1 // LookupResponse.answers
	fStatus      = 1 // LookupAnswer.status
	fRange       = 2 // LookupAnswer.range
	fConflicting = 3 // LookupAnswer.conflicting
	fIP          = 1 // OwnershipRange.ip
	fStart       = 2
	fEnd         = 3
	fOwner       = 4
	fEvidence    = 5
	fLastSeen    = 6
)

// appendAnswer appends one LookupResponse.answers field.
func appendAnswer(b []byte, ip []byte, a index.Answer) []byte {
	b = protowire.AppendTag(b, fAnswers, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(answerSize(ip, a)))
	b = protowire.AppendTag(b, fStatus, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(statusToProto[a.Status]))
	if a.Status == index.Owned {
		b = appendRange(b, fRange, ip, &a.Range)
	}
	for i := range a.Conflicting {
		b = appendRange(b, fConflicting, ip, &a.Conflicting[i])
	}
	return b
}

func answerSize(ip []byte, a index.Answer) int {
	n := 1 + protowire.SizeVarint(uint64(statusToProto[a.Status]))
	if a.Status == index.Owned {
		n += 1 + protowire.SizeBytes(rangeSize(ip, &a.Range))
	}
	for i := range a.Conflicting {
		n += 1 + protowire.SizeBytes(rangeSize(ip, &a.Conflicting[i]))
	}
	return n
}

func appendRange(b []byte, field protowire.Number, ip []byte, r *index.Range) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(rangeSize(ip, r)))
	if len(ip) > 0 {
		b = protowire.AppendTag(b, fIP, protowire.BytesType)
		b = protowire.AppendBytes(b, ip)
	}
	b = appendInt(b, fStart, r.Start)
	b = appendInt(b, fEnd, r.End)
	b = protowire.AppendTag(b, fOwner, protowire.BytesType) // always present, as RangeToProto sets it
	b = protowire.AppendVarint(b, uint64(workloadSize(&r.Owner)))
	for i, s := range workloadFields(&r.Owner) {
		if s != "" {
			b = protowire.AppendTag(b, protowire.Number(i+1), protowire.BytesType)
			b = protowire.AppendString(b, s)
		}
	}
	b = appendInt(b, fEvidence, int64(r.Evidence))
	return appendInt(b, fLastSeen, r.LastSeen)
}

func rangeSize(ip []byte, r *index.Range) int {
	n := 0
	if len(ip) > 0 {
		n += 1 + protowire.SizeBytes(len(ip))
	}
	n += intSize(r.Start) + intSize(r.End) + intSize(int64(r.Evidence)) + intSize(r.LastSeen)
	return n + 1 + protowire.SizeBytes(workloadSize(&r.Owner))
}

// workloadFields are a workload's strings in field order (flowlens.flow.v1.Workload 1..6).
func workloadFields(w *flow.Workload) [6]string {
	return [6]string{w.Name, w.Namespace, w.Pod, w.PodUID, w.Node, w.Cluster}
}

func workloadSize(w *flow.Workload) int {
	n := 0
	for _, s := range workloadFields(w) {
		if s != "" {
			n += 1 + protowire.SizeBytes(len(s))
		}
	}
	return n
}

// appendInt appends an int64 (or enum) field; proto3 omits zero.
func appendInt(b []byte, field protowire.Number, v int64) []byte {
	if v == 0 {
		return b
	}
	return protowire.AppendVarint(protowire.AppendTag(b, field, protowire.VarintType), uint64(v))
}

func intSize(v int64) int {
	if v == 0 {
		return 0
	}
	return 1 + protowire.SizeVarint(uint64(v))
}

// encodeAnswers is the body of a LookupResponse answering queries with answers.
func encodeAnswers(queries []query, answers []index.Answer) []byte {
	b := make([]byte, 0, 80*len(answers)) // an answer with a full owner is ~60 bytes
	var ip []byte
	for i, a := range answers {
		ip = appendIP(ip[:0], queries[i].ip)
		b = appendAnswer(b, ip, a)
	}
	return b
}

func appendIP(b []byte, ip netip.Addr) []byte {
	ip = ip.Unmap()
	if ip.Is4() {
		a := ip.As4()
		return append(b, a[:]...)
	}
	a := ip.As16()
	return append(b, a[:]...)
}
