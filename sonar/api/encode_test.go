package api

import (
	"bytes"
	"math/rand/v2"
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/flowlens/flowlens/internal/flow"
	sonarv1 "github.com/flowlens/flowlens/proto/flowlens/sonar/v1"
	"github.com/flowlens/flowlens/sonar/index"
)

// TestEncodeAnswersMatchesProto: the hand encoding is byte for byte what protobuf writes for the same
// answers built with AnswerToProto, over every status, both address families, negative, zero and
// extreme times, empty and full owners.
func TestEncodeAnswersMatchesProto(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	times := []int64{0, 1, -1, 1_764_039_600_000_000_000, -9223372036854775808, 9223372036854775807, 127, 128}
	owners := []flow.Workload{{}, {Name: "web"}, {Name: "web", Namespace: "shop", Pod: "web-1", PodUID: "8a1c", Node: "n1", Cluster: "prod"},
		{Cluster: "c", Node: "ünïcode"}}
	rangeOf := func() index.Range {
		return index.Range{Start: times[rng.IntN(len(times))], End: times[rng.IntN(len(times))], LastSeen: times[rng.IntN(len(times))],
			Owner: owners[rng.IntN(len(owners))], Evidence: index.Evidence(rng.IntN(6))}
	}
	ips := []netip.Addr{netip.MustParseAddr("10.0.0.5"), netip.MustParseAddr("::ffff:10.0.0.6"), netip.MustParseAddr("fd00::1")}
	for round := range 200 {
		var qs []query
		var as []index.Answer
		want := &sonarv1.LookupResponse{}
		for range rng.IntN(5) {
			q := query{ip: ips[rng.IntN(len(ips))]}
			var a index.Answer
			switch rng.IntN(3) {
			case 1:
				a = index.Answer{Status: index.Owned, Range: rangeOf()}
			case 2:
				a = index.Answer{Status: index.Conflict, Conflicting: []index.Range{rangeOf(), rangeOf(), rangeOf()}[:2+rng.IntN(2)]}
			}
			qs, as = append(qs, q), append(as, a)
			want.Answers = append(want.Answers, AnswerToProto(q.ip, a))
		}
		wantBytes, err := proto.MarshalOptions{Deterministic: true}.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		if got := encodeAnswers(qs, as); !bytes.Equal(got, wantBytes) {
			t.Fatalf("round %d: %+v\n got %x\nwant %x", round, as, got, wantBytes)
		}
	}
}

// BenchmarkEncodeAnswers compares the hand encoding of 1,000 answers with building and marshalling
// the messages.
func BenchmarkEncodeAnswers(b *testing.B) {
	qs := make([]query, 1000)
	as := make([]index.Answer, 1000)
	for i := range as {
		qs[i].ip = netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		as[i] = index.Answer{Status: index.Owned, Range: index.Range{Start: 1_764_039_600_000_000_000, End: 1_764_039_660_000_000_000,
			LastSeen: 1_764_039_660_000_000_000, Evidence: index.EvidenceHeartbeat,
			Owner: flow.Workload{Name: "app", Namespace: "shop", Pod: "app-7d9f", Node: "n1", Cluster: "prod"}}}
	}
	b.Run("hand", func(b *testing.B) {
		for b.Loop() {
			resp := &sonarv1.LookupResponse{}
			resp.ProtoReflect().SetUnknown(encodeAnswers(qs, as))
			proto.Marshal(resp)
		}
	})
	b.Run("protobuf", func(b *testing.B) {
		for b.Loop() {
			resp := &sonarv1.LookupResponse{}
			for i := range as {
				resp.Answers = append(resp.Answers, AnswerToProto(qs[i].ip, as[i]))
			}
			proto.Marshal(resp)
		}
	})
}
