package timeparam

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	now := time.Date(2026, 11, 25, 3, 0, 0, 0, time.UTC)
	for in, want := range map[string]int64{
		"":                            now.UnixNano(),
		"now":                         now.UnixNano(),
		"-15m":                        now.Add(-15 * time.Minute).UnixNano(),
		"+1h":                         now.Add(time.Hour).UnixNano(),
		" 10s":                        now.Add(10 * time.Second).UnixNano(), // "+10s" unescaped in a query string
		"1795000000000000000":         1795000000000000000,
		"2026-11-25T02:00:00Z":        now.Add(-time.Hour).UnixNano(),
		"2026-11-25T04:00:00.5+01:00": now.Add(500 * time.Millisecond).UnixNano(),
	} {
		got, err := Parse(in, now)
		if err != nil || got != want {
			t.Errorf("%q: %d %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"-", "-15x", "15m", "2026-11-25", "tomorrow"} {
		if _, err := Parse(in, now); err == nil {
			t.Errorf("%q parsed", in)
		}
	}
}
