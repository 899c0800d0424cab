package natstest

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A server restarted by Stop and Start keeps its port and its streams.
func TestRestartKeepsPortAndStreams(t *testing.T) {
	s := Start(t)
	addr := s.Addr()
	_, js := s.Connect(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.x", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s.Start()
	if s.Addr() != addr {
		t.Fatalf("restarted on %s, was %s", s.Addr(), addr)
	}
	_, js = s.Connect(t, nats.Name("again"))
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetMsg(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "kept" {
		t.Fatalf("message after restart: %q", m.Data)
	}
}

// Without the binary a test fails under CI=true, naming the install script, and skips elsewhere.
func TestMissingBinary(t *testing.T) {
	if os.Getenv("NATSTEST_CHILD") == "1" {
		Binary(t)
		return
	}
	for _, ci := range []string{"true", ""} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMissingBinary$", "-test.v")
		cmd.Env = []string{"NATSTEST_CHILD=1", "PATH=", "GOPATH=" + t.TempDir(), "CI=" + ci, "HOME=" + t.TempDir()}
		out, err := cmd.CombinedOutput()
		switch {
		case ci == "true" && (err == nil || !strings.Contains(string(out), InstallScript)):
			t.Errorf("CI=true: err %v, output:\n%s", err, out)
		case ci == "" && (err != nil || !strings.Contains(string(out), "--- SKIP")):
			t.Errorf("CI unset: err %v, output:\n%s", err, out)
		}
	}
}
