package client

import (
	"fmt"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/flowlens/flowlens/internal/flow"
	"github.com/flowlens/flowlens/internal/wire"
	sonarv1 "github.com/flowlens/flowlens/proto/flowlens/sonar/v1"
	"github.com/flowlens/flowlens/sonar/api"
)

// FuzzDecodeAnswers checks the hand decoder against the generated one: whatever protobuf decodes into
// valid answers, decodeAnswers decodes to the same answers; nothing panics on any input.
func FuzzDecodeAnswers(f *testing.F) {
	own := &sonarv1.OwnershipRange{Ip: []byte{10, 0, 0, 5}, Start: -5, End: 1 << 60, LastSeen: 7, Evidence: sonarv1.Evidence_EVIDENCE_POD_EVENT,
		Owner: wire.WorkloadToProto(flow.Workload{Name: "web", Namespace: "shop", Pod: "web-1", PodUID: "uid", Node: "n1", Cluster: "prod"})}
	other := proto.Clone(own).(*sonarv1.OwnershipRange)
	other.Owner.Name, other.Evidence = "db", sonarv1.Evidence_EVIDENCE_HEARTBEAT
	for _, resp := range []*sonarv1.LookupResponse{
		{},
		{Answers: []*sonarv1.LookupAnswer{{Status: sonarv1.LookupStatus_LOOKUP_STATUS_UNKNOWN}}},
		{Answers: []*sonarv1.LookupAnswer{{Status: sonarv1.LookupStatus_LOOKUP_STATUS_OWNER, Range: own}, {Status: sonarv1.LookupStatus_LOOKUP_STATUS_OWNER, Range: own}}},
		{Answers: []*sonarv1.LookupAnswer{{Status: sonarv1.LookupStatus_LOOKUP_STATUS_CONFLICT, Conflicting: []*sonarv1.OwnershipRange{own, other}}}},
		{Answers: []*sonarv1.LookupAnswer{{Status: sonarv1.LookupStatus_LOOKUP_STATUS_OWNER}}},
		{Answers: []*sonarv1.LookupAnswer{{Status: 9}}},
	} {
		b, err := proto.Marshal(resp)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeAnswers(b, 0)
		var resp sonarv1.LookupResponse
		if proto.Unmarshal(b, &resp) != nil {
			return
		}
		var want []any
		for _, p := range resp.GetAnswers() {
			a, err := api.AnswerFromProto(p)
			if err != nil {
				return // the generated path refuses it too
			}
			want = append(want, a)
		}
		if err != nil {
			t.Fatalf("protobuf decodes %x into valid answers, decodeAnswers fails: %v", b, err)
		}
		var gotAny []any
		for _, a := range got {
			gotAny = append(gotAny, a)
		}
		if !reflect.DeepEqual(gotAny, want) {
			t.Fatalf("%x:\n got %+v\nwant %+v", b, gotAny, want)
		}
	})
}

// BenchmarkDecode compares the hand decoder with protobuf's plus conversion, on a response of 1,000
// answers naming 100 owners.
func BenchmarkDecode(b *testing.B) {
	var resp sonarv1.LookupResponse
	for i := range 1000 {
		resp.Answers = append(resp.Answers, &sonarv1.LookupAnswer{Status: sonarv1.LookupStatus_LOOKUP_STATUS_OWNER,
			Range: &sonarv1.OwnershipRange{Ip: []byte{10, 0, byte(i >> 8), byte(i)}, Start: 1_764_039_600_000_000_000, End: 1_764_039_660_000_000_000,
				LastSeen: 1_764_039_660_000_000_000, Evidence: sonarv1.Evidence_EVIDENCE_HEARTBEAT,
				Owner: wire.WorkloadToProto(flow.Workload{Name: fmt.Sprint("app-", i%100%26), Namespace: "shop", Pod: fmt.Sprint("pod-", i%100), Node: "n1", Cluster: "prod"})}})
	}
	raw, _ := proto.Marshal(&resp)
	b.Run("hand", func(b *testing.B) {
		for b.Loop() {
			if _, err := decodeAnswers(raw, 1000); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("protobuf", func(b *testing.B) {
		for b.Loop() {
			var r sonarv1.LookupResponse
			if err := proto.Unmarshal(raw, &r); err != nil {
				b.Fatal(err)
			}
			for _, p := range r.Answers {
				api.AnswerFromProto(p)
			}
		}
	})
}
