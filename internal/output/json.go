package output

import (
	"strconv"
	"unicode/utf8"

	"github.com/flowlens/flowlens/internal/flow"
)

// AppendJSON appends r as one JSON object, byte for byte what encoding/json writes with HTML escaping off
// (FuzzAppendJSON holds it to that), at a tenth of the cost: the exporter writes one per flow.
func AppendJSON(b []byte, r *flow.Record) []byte {
	b = append(b, `{"local_addr":"`...)
	b = r.LocalAddr.AppendTo(b)
	b = append(b, `","local_port":`...)
	b = strconv.AppendUint(b, uint64(r.LocalPort), 10)
	b = append(b, `,"remote_addr":"`...)
	b = r.RemoteAddr.AppendTo(b)
	b = append(b, `","remote_port":`...)
	b = strconv.AppendUint(b, uint64(r.RemotePort), 10)
	b = append(b, `,"role":"`...)
	b = append(b, r.Role.String()...)
	b = append(b, `","start_time":`...)
	b = strconv.AppendInt(b, r.StartTime, 10)
	b = append(b, `,"end_time":`...)
	b = strconv.AppendInt(b, r.EndTime, 10)
	b = appendUint(b, `,"bytes_sent":`, r.BytesSent)
	b = appendUint(b, `,"bytes_received":`, r.BytesReceived)
	b = appendUint(b, `,"segs_sent":`, uint64(r.SegsSent))
	b = appendUint(b, `,"segs_received":`, uint64(r.SegsReceived))
	b = appendUint(b, `,"retransmits":`, uint64(r.Retransmits))
	b = appendUint(b, `,"srtt_us":`, uint64(r.SrttUs))
	b = appendUint(b, `,"rtt_var_us":`, uint64(r.RttVarUs))
	b = appendUint(b, `,"min_rtt_us":`, uint64(r.MinRttUs))
	b = append(b, `,"close":"`...)
	b = append(b, r.Close.String()...)
	b = append(b, '"')
	if r.Error != "" {
		b = append(b, `,"error":`...)
		b = appendString(b, r.Error)
	}
	b = appendUint(b, `,"pid":`, uint64(r.Pid))
	b = append(b, `,"comm":`...)
	b = appendString(b, r.Comm)
	b = appendUint(b, `,"netns":`, uint64(r.Netns))
	b = appendUint(b, `,"cgroup_id":`, r.CgroupID)
	if r.Preexisting {
		b = append(b, `,"preexisting":true`...)
	}
	b = append(b, `,"local_workload":{`...)
	w := &r.LocalWorkload
	first := true
	for _, f := range [...]struct{ key, val string }{
		{"name", w.Name}, {"namespace", w.Namespace}, {"pod", w.Pod}, {"pod_uid", w.PodUID}, {"node", w.Node}, {"cluster", w.Cluster},
	} {
		if f.val == "" {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, f.key...)
		b = append(b, `":`...)
		b = appendString(b, f.val)
	}
	return append(b, "}}"...)
}

func appendUint(b []byte, key string, v uint64) []byte {
	return strconv.AppendUint(append(b, key...), v, 10)
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string as encoding/json does: control characters, quote and backslash
// escaped, invalid UTF-8 replaced by U+FFFD, U+2028 and U+2029 escaped.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
