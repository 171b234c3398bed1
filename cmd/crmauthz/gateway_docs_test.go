package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestGatewayDocsShowTheTestedConfigs: docs/gateways.md shows every file of
// examples/gateways verbatim, so the nginx and Caddy configurations in the
// docs are the ones TestE2EGateways runs.
func TestGatewayDocsShowTheTestedConfigs(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "gateways.md"))
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join("..", "..", "examples", "gateways", "*"))
	if err != nil || len(files) < 5 {
		t.Fatalf("examples/gateways: %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(doc), string(b)) {
				t.Fatalf("docs/gateways.md does not show %s as it is", f)
			}
		})
	}
}
