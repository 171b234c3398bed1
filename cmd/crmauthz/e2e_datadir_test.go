package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/index"
)

// fdsOfPidInto counts the open file descriptors of process pid on files in dir.
func fdsOfPidInto(pid int, dir string) int {
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	es, err := os.ReadDir(fdDir)
	if err != nil {
		return 0
	}
	n := 0
	for _, e := range es {
		if target, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil && strings.HasPrefix(target, dir+"/") {
			n++
		}
	}
	return n
}

// serveArgs are the arguments of `crmauthz serve` on free loopback ports with the test token.
func serveArgs(t testing.TB, dataDir string, extra ...string) []string {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return append([]string{"serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--data-dir", dataDir, "--replication-token-file", tokenFile}, extra...)
}

// TestE2ESecondServerOnSameDataDir is issue 15 item 2 with two real processes: B starts on A's
// data directory and waits for its lock; A loads a snapshot (renaming a new file over index.db),
// acknowledges a batch and stops. B must then serve A's last state, and what B acknowledges must
// survive a restart. Before, B got bbolt's lock on the replaced file when A let it go at the swap,
// served A's old applied_seq and acknowledged batches into a deleted file.
func TestE2ESecondServerOnSameDataDir(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("watches /proc/PID/fd")
	}
	dir := t.TempDir()
	a := startServer(t, dir)
	if code, body := call(t, http.MethodPost, a.admin+"/v1/replication/events", demoEvents(1), authz); code != 200 {
		t.Fatalf("%d %v", code, body)
	}

	t.Run("refused while the first runs", func(t *testing.T) {
		code, _, stderr := runCLI(t, "", serveArgs(t, dir, "--index-lock-timeout", "200ms")...)
		lock := filepath.Join(dir, index.LockFileName)
		if code == 0 || !strings.Contains(stderr, lock) || !strings.Contains(stderr, "pid "+strconv.Itoa(a.cmd.Process.Pid)) {
			t.Errorf("second server: exit %d, want an error naming %s and pid %d:\n%s", code, lock, a.cmd.Process.Pid, stderr)
		}
	})

	b := &proc{t: t, dataDir: dir, stderr: &syncBuffer{}, done: make(chan struct{})}
	b.cmd = exec.Command(binPath, serveArgs(t, dir, "--index-lock-timeout", "5m")...)
	b.cmd.Stderr = b.stderr
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { b.exitErr = b.cmd.Wait(); close(b.done) }()
	t.Cleanup(b.kill)
	// B waits for its lock once it has a file of the data directory open.
	for fdsOfPidInto(b.cmd.Process.Pid, dir) == 0 {
		select {
		case <-b.done:
			t.Fatalf("B exited: %v\n%s", b.exitErr, b.stderr.String())
		default:
			time.Sleep(5 * time.Millisecond)
		}
	}

	putSnapshot(t, a, loadFixture(t).snapshot(100))
	if code, body := call(t, http.MethodPost, a.admin+"/v1/replication/events",
		`{"events": [{"seq": 101, "op": "user.upsert", "user": {"id": "u-late", "role": "admin", "location_ids": ["loc-1"]}}]}`, authz); code != 200 {
		t.Fatalf("batch on A: %d %v", code, body)
	}
	if strings.Contains(b.stderr.String(), "crmauthz serving") {
		t.Fatalf("B serves while A runs:\n%s", b.stderr.String())
	}
	a.stop()

	// B serves once A is gone.
	var admin string
	for admin == "" {
		select {
		case <-b.done:
			t.Fatalf("B exited: %v\n%s", b.exitErr, b.stderr.String())
		default:
		}
		for _, line := range strings.Split(b.stderr.String(), "\n") {
			var l struct {
				Msg       string `json:"msg"`
				AdminAddr string `json:"admin_addr"`
			}
			if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "crmauthz serving" {
				admin = "http://" + l.AdminAddr
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.admin = admin
	if st := status(t, b); st["applied_seq"] != float64(101) {
		t.Fatalf("B serves applied_seq %v, want A's last, 101", st["applied_seq"])
	}
	if code, body := call(t, http.MethodPost, b.admin+"/v1/replication/events",
		`{"events": [{"seq": 102, "op": "user.delete", "user_id": "u-late"}]}`, authz); code != 200 {
		t.Fatalf("batch on B: %d %v", code, body)
	}
	b.stop()
	c := startServer(t, dir)
	if st := status(t, c); st["applied_seq"] != float64(102) {
		t.Fatalf("after a restart: applied_seq %v, want B's acknowledged 102", st["applied_seq"])
	}
}

// TestE2EDamagedIndexRefused is issue 15 item 7: the server refuses to start on an index.db that
// is empty (before: an empty ready index at applied_seq 0) or truncated (before: a panic), with an
// error naming the file and how to restore it, and without touching it.
func TestE2EDamagedIndexRefused(t *testing.T) {
	dir := t.TempDir()
	p := startServer(t, dir, "--load-snapshot", demoSnapshot)
	p.stop()
	path := filepath.Join(dir, index.FileName)
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "empty (0 bytes)"},
		{"truncated to its meta pages", good[:2*page], "truncated"},
		{"garbage", []byte(strings.Repeat("not a bbolt file ", 1000)), "damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			code, _, stderr := runCLI(t, "", serveArgs(t, dir)...)
			if code == 0 || !strings.Contains(stderr, path) || !strings.Contains(stderr, tc.want) ||
				!strings.Contains(stderr, "backup") || strings.Contains(stderr, "goroutine ") {
				t.Errorf("exit %d, want a refusal naming %s, %q and how to restore, without a panic:\n%s", code, path, tc.want, stderr)
			}
			if now, _ := os.ReadFile(path); string(now) != string(tc.data) {
				t.Errorf("the refused start changed index.db (%d bytes, was %d)", len(now), len(tc.data))
			}
		})
	}
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	q := startServer(t, dir)
	if a, r := decide(t, q, "u-carol", "edit", "contact", "c-1", nil); !a || r != "follower" {
		t.Errorf("after restoring index.db: %v %s", a, r)
	}
}

// TestE2EStalledBackupBlocksNothing is issue 15 item 8 against the binary: a backup download
// whose client reads nothing must not hold up a snapshot load or the batch after it (before,
// both waited for the download, 503 snapshot_in_progress for batches meanwhile); the download,
// read afterwards, is the old index, whole.
func TestE2EStalledBackupBlocksNothing(t *testing.T) {
	dir := t.TempDir()
	var snap strings.Builder
	snap.WriteString("{\"seq\": 1}\n")
	for i := range 60000 { // a bbolt file of many MB: more than loopback's socket buffers hold
		fmt.Fprintf(&snap, "{\"record\": {\"type\": \"contact\", \"id\": \"c-%d\", \"location_id\": \"loc-1\", \"owner\": \"u-%d\", \"followers\": [\"u-%d\"]}}\n",
			i, i%100, (i+1)%100)
	}
	p := startServer(t, dir)
	putSnapshot(t, p, snap.String())

	conn, err := net.Dial("tcp", strings.TrimPrefix(p.admin, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req, _ := http.NewRequest(http.MethodGet, p.admin+"/v1/replication/backup", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	if err := req.Write(conn); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("backup: %v %v", resp, err)
	}
	// Now read nothing more: the server is inside the backup's read transaction.

	putSnapshot(t, p, loadFixture(t).snapshot(50))
	if code, body := call(t, http.MethodPost, p.admin+"/v1/replication/events",
		`{"events": [{"seq": 51, "op": "user.upsert", "user": {"id": "u-late", "role": "admin", "location_ids": ["loc-1"]}}]}`, authz); code != 200 {
		t.Fatalf("batch during a stalled backup: %d %v", code, body)
	}
	if runtime.GOOS == "linux" {
		deleted := 0
		es, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
		for _, e := range es {
			target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", p.cmd.Process.Pid, e.Name()))
			if strings.HasSuffix(target, index.FileName+" (deleted)") {
				deleted++
			}
		}
		if deleted == 0 {
			t.Fatal("the backup no longer holds the old index file: it was not stalled, so this test proves nothing")
		}
	}

	body, err := io.ReadAll(resp.Body)
	if err != nil || int64(len(body)) != resp.ContentLength || resp.Header.Get("X-Crmauthz-Applied-Seq") != "1" {
		t.Fatalf("the stalled backup, read now: %d of %d bytes, seq %q, %v", len(body), resp.ContentLength, resp.Header.Get("X-Crmauthz-Applied-Seq"), err)
	}
	rdir := t.TempDir()
	if err := os.WriteFile(filepath.Join(rdir, index.FileName), body, 0o600); err != nil {
		t.Fatal(err)
	}
	ix, err := index.Open(index.Config{Dir: rdir, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ix.Close()
	if n := ix.Counts().Records[index.TypeContact]; ix.AppliedSeq() != 1 || n != 60000 {
		t.Fatalf("the backup holds seq %d, %d contacts", ix.AppliedSeq(), n)
	}
	if st := status(t, p); st["applied_seq"] != float64(51) {
		t.Fatalf("server: %v", st)
	}
}
