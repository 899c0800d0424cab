package config

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	c, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{GRPCAddr: "127.0.0.1:9491", HTTPAddr: "127.0.0.1:9492", SnapshotInterval: 5 * time.Minute,
		MergeGap: 30 * time.Second, MaxAge: 24 * time.Hour, MaxRanges: 4 << 20, ExpireInterval: time.Minute,
		Metrics: true, LogLevel: "info", ShutdownTimeout: 10 * time.Second, KubeResync: 30 * time.Second, KubeResyncLag: time.Minute,
		KubeEventLag: 15 * time.Second, OwnershipStream: "FLOWLENS_OWNERSHIP"}
	if c != want {
		t.Fatalf("defaults:\n got %+v\nwant %+v", c, want)
	}
}

func TestPrecedence(t *testing.T) {
	file := filepath.Join(t.TempDir(), "sonar.yaml")
	os.WriteFile(file, []byte("data_dir: /from/file\nmerge_gap: 1m\nmax_ranges: 10\ncidr_file: /file/cidrs.yaml\n"), 0o644)
	t.Setenv("FLOWLENS_MERGE_GAP", "2m")
	c, err := Load([]string{"--config", file, "--max-ranges", "20"})
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/from/file" || c.MergeGap != 2*time.Minute || c.MaxRanges != 20 || c.CIDRFile != "/file/cidrs.yaml" {
		t.Fatalf("flags > env > file: %+v", c)
	}
	if ic := c.Index(); ic.MergeGap != 2*time.Minute || ic.MaxRanges != 20 || ic.MaxAge != 24*time.Hour {
		t.Fatalf("Index(): %+v", ic)
	}
}

func TestValidate(t *testing.T) {
	_, err := Load([]string{"--grpc-addr", "nope", "--cert-file", "x", "--merge-gap", "0s", "--max-ranges", "-1",
		"--kubeconfig", "k", "--in-cluster", "--log-level", "loud"})
	want := "grpc_addr \"nope\": address nope: missing port in address\ncert_file and key_file go together\n" +
		"merge_gap 0s: want > 0\nmax_ranges -1: want > 0\nkubeconfig and in_cluster: choose one\n" +
		"log_level \"loud\": want debug, info, warn or error"
	if err == nil || err.Error() != want {
		t.Fatalf("Validate:\n%v\nwant\n%s", err, want)
	}
}
