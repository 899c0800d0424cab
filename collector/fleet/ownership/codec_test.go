package ownership

import (
	"net/netip"
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/flowlens/flowlens/collector/fleet/fleettest"
	sonarv1 "github.com/flowlens/flowlens/proto/flowlens/sonar/v1"
	"github.com/flowlens/flowlens/sonar/index"
)

func claims(n int) []index.Claim {
	out := make([]index.Claim, n)
	for i := range out {
		ip := netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)})
		if i%5 == 4 {
			ip = netip.MustParseAddr("fd00::42").Next()
		}
		out[i] = index.Claim{IP: ip, Start: int64(i) * 1e9, End: int64(i)*1e9 + 5e8,
			Owner: fleettest.Workloads[i%len(fleettest.Workloads)], Evidence: index.Evidence(1 + i%4), Seen: int64(i)*1e9 + 6e8}
	}
	return out
}

func TestCodecRoundTrip(t *testing.T) {
	want := claims(1000)
	for _, limit := range []int{1 << 20, 2048} {
		var got []index.Claim
		msgs := Encode(want, limit)
		for _, m := range msgs {
			if len(m.Data) > limit {
				t.Fatalf("limit %d: message of %d bytes", limit, len(m.Data))
			}
			c, err := Decode(m.Data)
			if err != nil {
				t.Fatal(err)
			}
			if len(c) != m.Ranges {
				t.Fatalf("decoded %d ranges, message says %d", len(c), m.Ranges)
			}
			got = append(got, c...)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("limit %d: %d claims in %d messages differ from the %d encoded", limit, len(got), len(msgs), len(want))
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good := &sonarv1.ReportRequest{}
	if err := proto.Unmarshal(Encode(claims(3), 1<<20)[0].Data, good); err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(*sonarv1.ReportRequest)) []byte {
		c := proto.Clone(good).(*sonarv1.ReportRequest)
		f(c)
		b, _ := proto.Marshal(c)
		return b
	}
	for name, data := range map[string][]byte{
		"garbage":   []byte("\x0a\xff\xff\xff\xff not a report"),
		"empty":     {},
		"ip":        mutate(func(r *sonarv1.ReportRequest) { r.Ranges[1].Ip = []byte{1, 2, 3} }),
		"inverted":  mutate(func(r *sonarv1.ReportRequest) { r.Ranges[0].Start = r.Ranges[0].End + 1 }),
		"evidence0": mutate(func(r *sonarv1.ReportRequest) { r.Ranges[2].Evidence = 0 }),
		"cidr":      mutate(func(r *sonarv1.ReportRequest) { r.Ranges[2].Evidence = sonarv1.Evidence_EVIDENCE_CIDR }),
		"no owner":  mutate(func(r *sonarv1.ReportRequest) { r.Ranges[0].Owner = nil }),
	} {
		if c, err := Decode(data); err == nil {
			t.Errorf("%s: decoded %d claims, want an error", name, len(c))
		}
	}
}

// FuzzDecode: any bytes either fail, or decode to claims the index takes and that encode back to the same.
func FuzzDecode(f *testing.F) {
	for _, m := range Encode(claims(10), 512) {
		f.Add(m.Data)
	}
	f.Add([]byte("garbage"))
	f.Add([]byte{0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			return
		}
		for i := range c {
			if !valid(&c[i]) {
				t.Fatalf("claim %d invalid: %+v", i, c[i])
			}
		}
		var again []index.Claim
		for _, m := range Encode(c, 1<<30) {
			d, err := Decode(m.Data)
			if err != nil {
				t.Fatalf("re-encoded claims do not decode: %v", err)
			}
			again = append(again, d...)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip changed the claims:\n%+v\n%+v", again, c)
		}
		x := index.New(index.Config{})
		for _, cl := range c {
			x.Add(cl)
		}
	})
}
