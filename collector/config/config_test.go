package config

import (
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--insecure"}, ""},
		{nil, "cert_file and key_file"},
		{[]string{"--grpc-addr", ""}, "no ingest"},
		{[]string{"--insecure", "--udp-addr", ":1"}, "udp_key_file"},
		{[]string{"--insecure", "--https-addr", ":1"}, "cert_file"},
		{[]string{"--insecure", "--prefer", "fax"}, `prefer "fax"`},
		{[]string{"--insecure", "--data-dir", ""}, "data_dir"},
		{[]string{"--insecure", "--attribution-deadline", "-1s"}, "attribution.deadline"},
	}
	for _, tt := range tests {
		_, err := Load(tt.args)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%v: %v", tt.args, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%v: error %v, want it to mention %q", tt.args, err, tt.want)
		}
	}
}
