package ingest

import "testing"

func TestDedup(t *testing.T) {
	d := NewDedup(2)
	claimStore := func(id string, seq uint64) bool {
		if d.Claim(id, seq) != Claimed {
			return false
		}
		d.Done(id, seq, true)
		return true
	}
	steps := []struct {
		id   string
		seq  uint64
		want bool
	}{
		{"a", 1, true}, {"a", 1, false}, // resent after a lost ack
		{"a", 3, true}, {"a", 2, true}, {"a", 2, false}, // out of order
		{"a", 3 + window - 1, true}, {"a", 3, false}, // still inside the window
		{"a", 2, false}, // fell out of the window: an exporter never resends that far back
		{"b", 1, true}, {"b", 1, false},
	}
	for i, s := range steps {
		if got := claimStore(s.id, s.seq); got != s.want {
			t.Fatalf("step %d (%s, %d): stored %v, want %v", i, s.id, s.seq, got, s.want)
		}
	}

	// While a batch is being stored, a resend is told it is in flight (retry), not that it is stored; a
	// failed store releases the claim.
	if d.Claim("b", 5) != Claimed {
		t.Fatal("first claim refused")
	}
	if got := d.Claim("b", 5); got != InFlight {
		t.Fatalf("claim of a batch in flight: %v, want InFlight", got)
	}
	if d.IsStored("b", 5) {
		t.Fatal("a batch in flight reported stored")
	}
	d.Done("b", 5, false)
	if !claimStore("b", 5) {
		t.Fatal("resend after a failed store refused")
	}

	// A third exporter makes the least recently active one (a) forgotten.
	claimStore("c", 1)
	if !claimStore("a", 1) {
		t.Fatal("a forgotten exporter's old batch refused")
	}
}
