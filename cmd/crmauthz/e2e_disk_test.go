package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// mountTmpfs mounts a tmpfs of the given size at a new directory, for the
// disk-fault tests. It skips (with the reason) where the test may not mount:
// not root, or a sandbox without mount(2).
func mountTmpfs(t testing.TB, size string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root and mount(2)), so the disk-fault test cannot run: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			t.Logf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// fill writes a file until the file system is full.
func fill(t testing.TB, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			return path
		}
	}
}

func bigBatch(first, n int) string {
	var b strings.Builder
	b.WriteString(`{"events": [`)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"seq": %d, "op": "record.upsert", "record": {"type": "contact", "id": "big-%d", "location_id": "loc-1", "owner": "u-%s"}}`,
			first+i, first+i, strings.Repeat("x", 300))
	}
	b.WriteString(`]}`)
	return b.String()
}

// TestDiskFull fills the data directory's file system: replication answers
// 507 with the error body of docs/reference.md §2.6 and applies nothing, a snapshot is refused and
// the old index stays, decisions go on from the last committed index, the
// process lives on, and replication works again once space returns.
func TestDiskFull(t *testing.T) {
	dir := mountTmpfs(t, "3m")
	p := startServer(t, dir)
	if code, body := call(t, http.MethodPost, p.admin+"/v1/replication/events", demoEvents(1), authz); code != 200 {
		t.Fatalf("%d %v", code, body)
	}
	filler := fill(t, dir)

	code, body := call(t, http.MethodPost, p.admin+"/v1/replication/events", bigBatch(5, 3000), authz)
	if code != http.StatusInsufficientStorage || errCode(body) != "insufficient_storage" {
		t.Fatalf("batch on a full disk: %d %v, want 507 insufficient_storage", code, body)
	}
	var snap strings.Builder
	snap.WriteString("{\"seq\": 900}\n")
	for i := 0; i < 20000; i++ {
		fmt.Fprintf(&snap, "{\"user\": {\"id\": \"s-%d\", \"role\": \"user\", \"location_ids\": [\"loc-1\"]}}\n", i)
	}
	code, body = call(t, http.MethodPut, p.admin+"/v1/replication/snapshot", snap.String(), authz)
	if code != http.StatusInsufficientStorage || errCode(body) != "insufficient_storage" {
		t.Fatalf("snapshot on a full disk: %d %v, want 507", code, body)
	}
	if st := status(t, p); st["applied_seq"] != float64(4) || st["users"] != float64(3) {
		t.Fatalf("the index changed on a full disk: %v", st)
	}
	if a, r := decide(t, p, "u-2", "edit", "contact", "c-1", nil); !a || r != "follower" {
		t.Fatalf("decision on a full disk = %v %s", a, r)
	}

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if code, body := call(t, http.MethodPost, p.admin+"/v1/replication/events",
		`{"events": [{"seq": 5, "op": "follower.add", "type": "contact", "id": "c-1", "user_id": "u-3"}]}`, authz); code != 200 || body["applied_seq"] != float64(5) {
		t.Fatalf("batch after space returned: %d %v", code, body)
	}
	if a, r := decide(t, p, "u-3", "view", "contact", "c-1", nil); !a || r != "follower" {
		t.Fatalf("decision after recovery = %v %s", a, r)
	}
	p.stop()
	q := startServer(t, dir)
	if st := status(t, q); st["applied_seq"] != float64(5) {
		t.Fatalf("after restart: %v", st)
	}
}

// TestReadOnlyDataDir starts the server on a read-only file system holding an
// index: it serves decisions from that index, reports read_only, and
// replication answers 503 index_read_only.
func TestReadOnlyDataDir(t *testing.T) {
	dir := mountTmpfs(t, "8m")
	p := startServer(t, dir)
	if code, body := call(t, http.MethodPost, p.admin+"/v1/replication/events", demoEvents(1), authz); code != 200 {
		t.Fatalf("%d %v", code, body)
	}
	p.stop()
	if out, err := exec.Command("mount", "-o", "remount,ro", dir).CombinedOutput(); err != nil {
		t.Fatalf("remount read-only: %v: %s", err, out)
	}

	q := startServer(t, dir)
	if a, r := decide(t, q, "u-2", "edit", "contact", "c-1", nil); !a || r != "follower" {
		t.Fatalf("decision from a read-only index = %v %s", a, r)
	}
	code, body := call(t, http.MethodPost, q.admin+"/v1/replication/events",
		`{"events": [{"seq": 5, "op": "user.delete", "user_id": "u-2"}]}`, authz)
	if code != http.StatusServiceUnavailable || errCode(body) != "index_read_only" {
		t.Fatalf("replication on a read-only index: %d %v", code, body)
	}
	code, body = call(t, http.MethodGet, q.admin+"/v1/status", nil, nil)
	if code != 200 || body["read_only"] != true || body["applied_seq"] != float64(4) {
		t.Fatalf("status: %d %v", code, body)
	}
	if !strings.Contains(q.stderr.String(), "not writable") {
		t.Errorf("no warning about the read-only directory in the log:\n%s", q.stderr.String())
	}
}
