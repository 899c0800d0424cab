// Package timeparam parses the times the HTTP APIs and flowctl take: RFC 3339, Unix nanoseconds, "now"
// (or nothing), or a duration relative to now such as -15m.
package timeparam

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Parse returns v as Unix nanoseconds; relative durations count from now.
func Parse(v string, now time.Time) (int64, error) {
	if v == "" || v == "now" {
		return now.UnixNano(), nil
	}
	if v[0] == ' ' { // an unescaped "+10s" in a query string arrives as " 10s"
		v = "+" + strings.TrimLeft(v, " ")
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		return n, nil
	}
	if v[0] == '-' || v[0] == '+' {
		d, err := time.ParseDuration(v)
		if err != nil {
			return 0, fmt.Errorf("bad relative duration %q (want e.g. -15m)", v)
		}
		return now.Add(d).UnixNano(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return 0, fmt.Errorf("%q is not RFC 3339, Unix nanoseconds, now, or a relative duration like -15m", v)
	}
	return t.UnixNano(), nil
}
