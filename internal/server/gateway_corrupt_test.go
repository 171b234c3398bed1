package server

import (
	"encoding/binary"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/server/errcode"
	"github.com/crmauthz/crmauthz/policies"
)

// corruptRootPage overwrites the page type of the root bucket's page of the
// bbolt file at path, as a bad disk would, while the file is open and mapped:
// bbolt panics ("invalid page type") on the next read through that page.
func corruptRootPage(tb testing.TB, path string) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	// Two meta pages (0 and 1); the one with the higher txid is current.
	// Meta page layout: a 16-byte page header, then magic, version,
	// page size (uint32 at 24), flags, the root bucket's page id (uint64
	// at 32), its sequence, the freelist's page id, the high water mark and
	// the txid (uint64 at 64).
	var root, best uint64
	var pageSize int64
	for i := int64(0); i < 2; i++ {
		hdr := make([]byte, 72)
		if _, err := f.ReadAt(hdr, i*pageSize); err != nil {
			tb.Fatal(err)
		}
		if i == 0 {
			pageSize = int64(binary.LittleEndian.Uint32(hdr[24:]))
		}
		if txid := binary.LittleEndian.Uint64(hdr[64:]); i == 0 || txid > best {
			best, root = txid, binary.LittleEndian.Uint64(hdr[32:])
		}
	}
	if pageSize < 1024 || root < 2 {
		tb.Fatalf("not a bbolt file as expected: page size %d, root page %d", pageSize, root)
	}
	// The page's flags (uint16 at 8 of its header): 0 is no page type.
	if _, err := f.WriteAt([]byte{0, 0}, int64(root)*pageSize+8); err != nil {
		tb.Fatal(err)
	}
}

// TestGatewayDeniesOnCorruptIndex: a read of a corrupted index page (bbolt
// panics) through the HTTP gateway endpoints is a deny (403
// evaluation_error), never a 5xx, which Envoy's failure_mode_allow would
// turn into an allow (docs/gateways.md). The decision endpoint answers its
// 500, a deny too.
func TestGatewayDeniesOnCorruptIndex(t *testing.T) {
	dir := t.TempDir()
	ix, err := index.Open(index.Config{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ix.Close() })
	repl, err := replication.New(replication.Config{Index: ix})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := repl.LoadSnapshot(strings.NewReader(gwFacts)); err != nil {
		t.Fatal(err)
	}
	eng, err := policy.New(policy.Config{EvalTimeout: testEvalTimeout, FS: policies.FS})
	if err != nil {
		t.Fatal(err)
	}
	s := mustNew(t, Config{Index: ix, Engine: eng, Replicator: repl, Metrics: metrics.New(metrics.Config{}),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	g := &gwServer{Server: s, ix: ix, h: s.DecisionHandler()}

	// Before: the index is sound and the owner may edit.
	checkReply(t, g.do(t, http.MethodGet, "/v1/forward-auth", caddy("PATCH", "/contacts/c-1", "u-owner"), ""), http.StatusOK, "owner")

	corruptRootPage(t, filepath.Join(dir, index.FileName))

	cases := []struct {
		name, method, target string
		hdr                  map[string]string
		body                 string
	}{
		{"forward auth, Caddy headers", http.MethodGet, "/v1/forward-auth", caddy("PATCH", "/contacts/c-1", "u-owner"), ""},
		{"forward auth, nginx headers", http.MethodGet, "/v1/forward-auth", nginx("DELETE", "/contacts/c-1", "u-owner"), ""},
		{"Envoy HTTP ext_authz", http.MethodPatch, "/v1/ext-authz/contacts/c-1", map[string]string{"X-User-Id": "u-owner"}, `{"name":"x"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			checkReply(t, g.do(t, tc.method, tc.target, tc.hdr, tc.body), http.StatusForbidden, errcode.EvaluationError)
		})
	}
}
