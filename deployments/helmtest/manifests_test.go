package helmtest

import (
	"bytes"
	"os"
	"testing"
)

// TestManifestsFresh fails when the committed plain manifests differ from the chart rendered now.
func TestManifestsFresh(t *testing.T) {
	header, err := os.ReadFile("../manifests/header.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := append(header, helm(t, templateArgs()...)...)
	got, err := os.ReadFile(manifestsFile)
	if err != nil {
		t.Fatalf("%v: run deployments/manifests/generate.sh", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale (%d bytes, a fresh render is %d): run deployments/manifests/generate.sh", manifestsFile, len(got), len(want))
	}
}
