package client

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/flowlens/flowlens/sonar/index"
)

// TestUnreachable: with no sonar listening, calls fail with an error naming the call, and the
// collector-shaped Lookuper answers UNKNOWN (never a guess) and counts the failure.
func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	c, err := Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ip := netip.MustParseAddr("10.0.0.1")
	if _, err := c.Lookup(ctx, ip, 0); err == nil || !strings.HasPrefix(err.Error(), "sonar lookup: ") {
		t.Fatalf("Lookup: %v", err)
	}
	if _, err := c.Report(ctx, []index.Claim{{IP: ip, Start: 0, End: 1, Evidence: index.EvidenceHeartbeat}}); err == nil || !strings.HasPrefix(err.Error(), "sonar report: ") {
		t.Fatalf("Report: %v", err)
	}
	if _, _, err := c.Ranges(ctx, ip); err == nil || !strings.HasPrefix(err.Error(), "sonar ranges: ") {
		t.Fatalf("Ranges: %v", err)
	}
	l := c.Lookuper(200 * time.Millisecond)
	if a := l.Lookup(ip, 0); a.Status != index.Unknown || l.Errors() != 1 {
		t.Fatalf("Lookuper: %+v, %d errors", a, l.Errors())
	}
	// A batch of two calls' worth: every answer Unknown, each failed call counted.
	as := l.LookupBatch(make([]Query, 10_001))
	if len(as) != 10_001 || as[0].Status != index.Unknown || as[10_000].Status != index.Unknown || l.Errors() != 3 {
		t.Fatalf("Lookuper.LookupBatch: %d answers, %d errors; want 10001 Unknown and 3 errors", len(as), l.Errors())
	}
	// Empty inputs make no call at all.
	if as, err := c.LookupBatch(ctx, nil); err != nil || len(as) != 0 {
		t.Fatalf("LookupBatch(nil): %v %v", as, err)
	}
	if n, err := c.Report(ctx, nil); err != nil || n != 0 {
		t.Fatalf("Report(nil): %d %v", n, err)
	}
}
