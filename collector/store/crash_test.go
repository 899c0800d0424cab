package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// TestCrashAfterWrite: a write is durable once Write returns. A child process (this test binary)
// writes two batches, says so on stdout and waits; the test kills it with SIGKILL, so nothing runs
// after the write (no Close, no checkpoint), then reopens the file and finds every flow.
func TestCrashAfterWrite(t *testing.T) {
	if path := os.Getenv("FLOWLENS_STORE_CRASH_CHILD"); path != "" {
		crashChild(path)
		return
	}
	path := filepath.Join(t.TempDir(), "flows.duckdb")
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashAfterWrite$")
	cmd.Env = append(os.Environ(), "FLOWLENS_STORE_CRASH_CHILD="+path)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || line != "written\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child said %q, %v", line, err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	// The flows are in the write-ahead log only: reopening must replay it.
	if fi, err := os.Stat(path + ".wal"); err != nil || fi.Size() == 0 {
		t.Fatalf("no write-ahead log after the crash: %v", err)
	}

	s := openTest(t, path)
	got := allFlows(t, s)
	if len(got) != 2*crashBatch {
		t.Fatalf("after the crash: %d flows, want %d", len(got), 2*crashBatch)
	}
	want := benchBatch(crashBatch, 0, 0)
	seen := make(map[connKey]bool)
	for i := range got {
		seen[keyOf(&got[i])] = true
	}
	for i := range want {
		for _, shift := range []int64{0, 1e9} {
			f := want[i]
			f.StartTime += shift
			if k := keyOf(&f); !seen[k] {
				t.Fatalf("flow %d (+%d) missing after the crash", i, shift)
			}
		}
	}
	if b, err := s.RecentBatches(context.Background(), time.Time{}); err != nil || len(b) != 2 {
		t.Fatalf("batches after the crash: %v, %v", b, err)
	}
}

const crashBatch = 3000

func crashChild(path string) {
	s, err := Open(Config{Path: path, RollupInterval: -1}, zap.NewNop(), prometheus.NewRegistry())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for i, shift := range []int64{0, 1e9} {
		fs := benchBatch(crashBatch, 0, 0)
		for j := range fs {
			fs[j].StartTime += shift
			fs[j].EndTime += shift
		}
		if err := s.Write(context.Background(), Write{Flows: fs, Batches: []BatchKey{{"crash", uint64(i)}}}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	fmt.Println("written")
	time.Sleep(time.Hour) // killed here
}
