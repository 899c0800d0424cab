package fleet

import (
	"reflect"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/flowlens/flowlens/collector/fleet/fleettest"
	flowv1 "github.com/flowlens/flowlens/proto/flowlens/flow/v1"
)

func TestToken(t *testing.T) {
	for in, want := range map[string]string{
		"":             "_",
		"shop":         "shop",
		"a.b":          "a_b",
		"*":            "_",
		">":            "_",
		"x y\tz":       "x_y_z",
		"ns.with*all>": "ns_with_all_",
		"üñí":          "üñí",
	} {
		if got := Token(in); got != want {
			t.Errorf("Token(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	recs := fleettest.Records(500, 1)
	for i := range recs {
		recs[i].ExporterID = "exp-a" // one exporter per Encode call
	}
	for _, limit := range []int{1 << 20, 4096, 1} {
		msgs := Encode("exp-a", "flowlens.flows.x.y", recs, limit)
		var got int
		for _, m := range msgs {
			if limit > 1 && len(m.Data) > limit {
				t.Fatalf("limit %d: message of %d bytes", limit, len(m.Data))
			}
			dec, err := Decode(m.Data)
			if err != nil {
				t.Fatalf("limit %d: %v", limit, err)
			}
			if len(dec) != m.Records {
				t.Fatalf("limit %d: decoded %d records, message says %d", limit, len(dec), m.Records)
			}
			if !reflect.DeepEqual(dec, recs[got:got+len(dec)]) {
				t.Fatalf("limit %d: records %d.. differ:\n got %+v\nwant %+v", limit, got, dec[0], recs[got])
			}
			got += len(dec)
		}
		if got != len(recs) {
			t.Fatalf("limit %d: %d records in %d messages, want %d", limit, got, len(msgs), len(recs))
		}
		switch {
		case limit == 1 && len(msgs) != len(recs):
			t.Fatalf("limit 1: %d messages, want one per record", len(msgs))
		case limit == 1<<20 && len(msgs) != 1:
			t.Fatalf("limit 1 MiB: %d messages, want 1", len(msgs))
		}
	}
}

func TestEncodeIsDeterministic(t *testing.T) {
	recs := fleettest.Records(300, 2)
	a, b := Encode("e", "s1", recs, 8192), Encode("e", "s1", recs, 8192)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("two encodings of the same records differ")
	}
	seen := map[string]bool{}
	for _, m := range a {
		if seen[m.ID] {
			t.Fatalf("ID %s used twice", m.ID)
		}
		seen[m.ID] = true
	}
	if c := Encode("e", "s2", recs, 8192); c[0].ID == a[0].ID {
		t.Fatal("the same records under another key got the same ID")
	}
}

func TestDecodeRejects(t *testing.T) {
	good := Encode("e", "k", fleettest.Records(3, 3), 1<<20)[0].Data
	var b flowv1.FlowBatch
	if err := proto.Unmarshal(good, &b); err != nil {
		t.Fatal(err)
	}
	mutate := func(f func(*flowv1.FlowBatch)) []byte {
		c := proto.Clone(&b).(*flowv1.FlowBatch)
		f(c)
		d, _ := proto.Marshal(c)
		return d
	}
	for name, data := range map[string][]byte{
		"garbage":     []byte("\xff\xff\xff not protobuf"),
		"version":     mutate(func(c *flowv1.FlowBatch) { c.Version = 9 }),
		"attribution": mutate(func(c *flowv1.FlowBatch) { c.Records[1].Attribution = 42 }),
		"address":     mutate(func(c *flowv1.FlowBatch) { c.Records[0].RemoteAddr = []byte{1, 2, 3} }),
		"close":       mutate(func(c *flowv1.FlowBatch) { c.Records[2].Close = 0 }),
	} {
		if recs, err := Decode(data); err == nil {
			t.Errorf("%s: decoded %d records, want an error", name, len(recs))
		}
	}
}

// FuzzDecode: any bytes either fail to decode or decode to records that encode back to the same records.
func FuzzDecode(f *testing.F) {
	for _, m := range Encode("e", "k", fleettest.Records(20, 4), 1024) {
		f.Add(m.Data)
	}
	f.Add([]byte{})
	f.Add([]byte{0x08, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, err := Decode(data)
		if err != nil || len(recs) == 0 {
			return
		}
		for _, m := range Encode(recs[0].ExporterID, "k", recs, 1<<30) {
			again, err := Decode(m.Data)
			if err != nil {
				t.Fatalf("re-encoded records do not decode: %v", err)
			}
			if !reflect.DeepEqual(again, recs) {
				t.Fatalf("round trip changed the records:\n%+v\n%+v", again, recs)
			}
		}
	})
}
