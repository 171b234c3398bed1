package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/crmauthz/crmauthz/internal/natstest"
	"github.com/crmauthz/crmauthz/internal/refmodel"
)

// natsWriteNDJSON writes events, one per line, to a file in dir.
func natsWriteNDJSON(tb testing.TB, dir, name string, events []refmodel.Event) string {
	tb.Helper()
	var b strings.Builder
	for _, e := range events {
		j, err := json.Marshal(e)
		if err != nil {
			tb.Fatal(err)
		}
		b.Write(j)
		b.WriteByte('\n')
	}
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, []byte(b.String()), 0o600); err != nil {
		tb.Fatal(err)
	}
	return file
}

// natsCLI runs the binary with args and returns its stdout; it fails the test
// on a non-zero exit.
func natsCLI(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command(binPath, args...).Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		tb.Fatalf("crmauthz %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
	}
	return string(out)
}

func natsAppliedSeq(tb testing.TB, p *proc) int {
	tb.Helper()
	v, _ := status(tb, p)["applied_seq"].(float64)
	return int(v)
}

// waitSeq polls the sidecars until each has applied seq.
func natsWaitSeq(tb testing.TB, timeout time.Duration, seq int, ps ...*proc) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for _, p := range ps {
		for {
			got := natsAppliedSeq(tb, p)
			if got == seq {
				break
			}
			if got > seq {
				tb.Fatalf("applied_seq %d, beyond %d", got, seq)
			}
			if time.Now().After(deadline) {
				_, st := call(tb, http.MethodGet, p.admin+"/v1/status", nil, nil)
				tb.Fatalf("applied_seq %d after %s, want %d; status %v\n%s", got, timeout, seq, st, p.stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// natsWaitReady polls /health/ready of each sidecar until it is 200.
func natsWaitReady(tb testing.TB, ps ...*proc) {
	tb.Helper()
	deadline := time.Now().Add(time.Minute) // a hang, not a speed limit
	for i, p := range ps {
		for code, msg := natsReady(tb, p); code != 200; code, msg = natsReady(tb, p) {
			if time.Now().After(deadline) {
				tb.Fatalf("sidecar %d not ready: %d %s", i, code, msg)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func natsReady(tb testing.TB, p *proc) (int, string) {
	tb.Helper()
	code, body := call(tb, http.MethodGet, p.admin+"/health/ready", nil, nil)
	msg, _ := errField(body, "message").(string)
	return code, msg
}

// TestE2ENATSFleet is the fleet of issue 8 on one machine: a real
// NATS server with JetStream (in this process), three crmauthz binaries
// reading one stream while 100,000 events are published with `crmauthz
// publish`; one is SIGKILLed mid-stream and restarted. All converge on the
// same applied_seq and the same index (snapshot exports equal to each other
// and to the reference model), and decide and list alike. Then a snapshot
// object is stored with `crmauthz snapshot publish`, the stream is purged
// below it, and a fourth sidecar bootstraps from the object; a fifth, with no
// bucket, waits not ready until a snapshot is PUT. Last, read-your-writes:
// a follower removed through NATS is never still allowed when asked with
// min_seq = its publish ack's sequence.
func TestE2ENATSFleet(t *testing.T) {
	const total = 100_000
	start := time.Now()
	events := refmodel.Events(t, refmodel.GenConfig{Seed: 11}, total+500)
	srv := natstest.Start(t, natstest.Options{})
	dir := t.TempDir()
	url := srv.URL()
	natsArgs := []string{"--replication-source", url, "--nats-stream", "FLEET", "--nats-subject", "fleet.events"}
	pubArgs := []string{"publish", "--nats", url, "--stream", "FLEET", "--subject", "fleet.events"}

	// The stream, with its first 1000 events; then three sidecars.
	out := natsCLI(t, append(pubArgs, "--create", natsWriteNDJSON(t, dir, "first.ndjson", events[:1000]))...)
	if !strings.Contains(out, `"published":1000`) || !strings.Contains(out, `"last_seq":1000`) {
		t.Fatalf("publish: %s", out)
	}
	dataDirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	fleet := make([]*proc, 3)
	for i := range fleet {
		fleet[i] = startServer(t, dataDirs[i], natsArgs...)
	}
	natsWaitSeq(t, 3*time.Minute, 1000, fleet...)
	natsWaitReady(t, fleet...) // ready follows the commit that natsWaitSeq saw

	// The other 99,000, published while the sidecars read.
	rest := natsWriteNDJSON(t, dir, "rest.ndjson", events[1000:total])
	pubStart := time.Now()
	pubDone := make(chan string, 1)
	go func() {
		out, err := exec.Command(binPath, append(pubArgs, rest)...).CombinedOutput()
		if err != nil {
			out = append(out, []byte(" ERROR: "+err.Error())...)
		}
		pubDone <- string(out)
	}()

	// Kill sidecar 1 mid-stream, restart it on the same data directory.
	deadline := time.Now().Add(3 * time.Minute)
	for natsAppliedSeq(t, fleet[1]) < 30_000 {
		if time.Now().After(deadline) {
			t.Fatalf("sidecar 1 did not reach seq 30000: %d", natsAppliedSeq(t, fleet[1]))
		}
		time.Sleep(10 * time.Millisecond)
	}
	fleet[1].kill()
	killedAt, _ := exported(t, fleet[0]) // only to log progress
	fleet[1] = startServer(t, dataDirs[1], natsArgs...)
	if seq := natsAppliedSeq(t, fleet[1]); seq < 30_000 {
		t.Fatalf("sidecar 1 restarted at applied_seq %d: it applied at least 30000 before the SIGKILL", seq)
	}

	out = <-pubDone
	pubTime := time.Since(pubStart)
	if !strings.Contains(out, `"published":99000`) {
		t.Fatalf("publish: %s", out)
	}
	natsWaitSeq(t, 3*time.Minute, total, fleet...)
	converged := time.Since(pubStart)

	// The same index everywhere, equal to the reference model.
	model := modelAt(t, events, total)
	want := model.Canonical()
	for i, p := range fleet {
		seq, got := exported(t, p)
		if seq != total || got.Canonical() != want {
			t.Fatalf("sidecar %d: export at seq %d differs from the reference model", i, seq)
		}
	}
	natsSameAnswers(t, model, fleet...)
	t.Logf("3 sidecars: 99,000 events published in %s; all at seq %d %s after the publish began (sidecar 1 killed near seq 30000, fleet at %d then)",
		pubTime.Round(time.Millisecond), total, converged.Round(time.Millisecond), killedAt)

	// A snapshot object at seq 100000, the stream purged below it, 500 more events.
	snapFile := filepath.Join(dir, "snap.ndjson")
	code, raw := callRaw(t, http.MethodGet, fleet[0].admin+"/v1/replication/snapshot", nil, authz)
	if code != 200 || os.WriteFile(snapFile, raw, 0o600) != nil {
		t.Fatalf("export: %d", code)
	}
	out = natsCLI(t, "snapshot", "publish", "--nats", url, "--bucket", "FLEETSNAP", "--create", snapFile)
	if !strings.Contains(out, `"seq":100000`) {
		t.Fatalf("snapshot publish: %s", out)
	}
	js := natstest.JetStream(t, url)
	ctx := context.Background()
	stream, err := js.Stream(ctx, "FLEET")
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Purge(ctx, jetstream.WithPurgeSequence(total+1)); err != nil {
		t.Fatal(err)
	}
	natsCLI(t, append(pubArgs, natsWriteNDJSON(t, dir, "more.ndjson", events[total:]))...)
	final := total + 500

	bootStart := time.Now()
	fourth := startServer(t, t.TempDir(), append(natsArgs, "--nats-snapshot-bucket", "FLEETSNAP")...)
	fleet = append(fleet, fourth)
	natsWaitSeq(t, 3*time.Minute, final, fleet...)
	bootTime := time.Since(bootStart)
	for _, e := range events[total:] {
		if err := model.Apply(e); err != nil {
			t.Fatalf("reference model: event %d: %v", e.Seq, err)
		}
	}
	want = model.Canonical()
	for i, p := range fleet {
		seq, got := exported(t, p)
		if seq != uint64(final) || got.Canonical() != want {
			t.Fatalf("sidecar %d: export at seq %d differs from the reference model", i, seq)
		}
	}
	if !strings.Contains(fourth.stderr.String(), "snapshot loaded from the bucket") {
		t.Fatalf("the fourth sidecar did not load the snapshot object:\n%s", fourth.stderr.String())
	}
	natsSameAnswers(t, model, fleet...)
	t.Logf("a 4th sidecar joined after the purge: snapshot object (seq %d) loaded and 500 events applied in %s",
		total, bootTime.Round(time.Millisecond))

	// A fifth without a bucket: not ready, saying why, until a snapshot is PUT.
	fifth := startServer(t, t.TempDir(), natsArgs...)
	deadline = time.Now().Add(time.Minute)
	for {
		code, msg := natsReady(t, fifth)
		if code == 503 && strings.Contains(msg, "no longer holds seq 1") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the fifth sidecar: /health/ready %d %q", code, msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, st := call(t, http.MethodGet, fifth.admin+"/v1/status", nil, nil)
	if src, _ := st["replication_source"].(map[string]any); src["state"] != "waiting_for_snapshot" || st["ready"] != false {
		t.Fatalf("/v1/status of the fifth: %v", st)
	}
	putSnapshot(t, fifth, string(raw))
	natsWaitSeq(t, 3*time.Minute, final, fifth)
	fleet = append(fleet, fifth)
	natsWaitReady(t, fleet...)

	// Read-your-writes through NATS: remove a follower, ask with min_seq.
	subject, record := natsRestrictedFollower(t, model)
	ack, err := js.Publish(ctx, "fleet.events", []byte(fmt.Sprintf(
		`{"op":"follower.remove","type":%q,"id":%q,"user_id":%q}`, record.Type, record.ID, subject)),
		jetstream.WithExpectLastSequence(uint64(final)))
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range fleet {
		req := map[string]any{"subject": subject, "action": "view", "min_seq": ack.Sequence,
			"resource": map[string]string{"type": record.Type, "id": record.ID}}
		code, body := call(t, http.MethodPost, p.base+"/v1/decision", req, nil)
		switch {
		case code == 503 && errCode(body) == "index_behind":
		case code == 200 && body["allow"] == false && body["applied_seq"].(float64) >= float64(ack.Sequence):
		default:
			t.Fatalf("sidecar %d: %s views %s/%s with min_seq %d right after losing it: %d %v",
				i, subject, record.Type, record.ID, ack.Sequence, code, body)
		}
	}
	t.Logf("whole test %s", time.Since(start).Round(time.Millisecond))
}

// natsRestrictedFollower finds a restricted user of the model that follows a
// record (and does not own it): a decision that changes with a follower.remove.
func natsRestrictedFollower(tb testing.TB, m *refmodel.Model) (string, refmodel.Record) {
	tb.Helper()
	for _, k := range m.Keys() {
		r := m.Records[k]
		for _, f := range r.Followers {
			u, ok := m.Users[f]
			if ok && u.Role == "user" && u.AssignedDataOnly && (r.Type == "contact" && u.ContactsEnabled || r.Type == "opportunity" && u.OpportunitiesEnabled) {
				return f, r
			}
		}
	}
	tb.Fatal("no restricted follower in the model")
	return "", refmodel.Record{}
}

// natsSameAnswers asks every sidecar the same decisions (each user, every record,
// view and edit) and lists, and checks that they answer alike.
func natsSameAnswers(tb testing.TB, m *refmodel.Model, ps ...*proc) {
	tb.Helper()
	users := m.UserIDs()
	var checks []map[string]any
	for _, r := range m.Records {
		for _, a := range []string{"view", "edit", "delete"} {
			checks = append(checks, map[string]any{"action": a, "resource": map[string]string{"type": r.Type, "id": r.ID}})
		}
	}
	answers := make([]string, len(ps))
	for i, p := range ps {
		var b strings.Builder
		for _, u := range users {
			code, body := call(tb, http.MethodPost, p.base+"/v1/decisions", map[string]any{"subject": u, "checks": checks}, nil)
			if code != 200 {
				tb.Fatalf("decisions: %d %v", code, body)
			}
			j, _ := json.Marshal(body["results"])
			b.Write(j)
			for _, typ := range []string{"contact", "opportunity"} {
				code, raw := callRaw(tb, http.MethodGet, p.base+"/v1/subjects/"+u+"/records?limit=1000&location_id=loc-1&type="+typ, nil, nil)
				var l map[string]any
				if code != 200 || json.Unmarshal(raw, &l) != nil {
					tb.Fatalf("list: %d %s", code, raw)
				}
				delete(l, "applied_seq")
				j, _ := json.Marshal(l)
				b.Write(j)
			}
		}
		answers[i] = b.String()
		if i > 0 && answers[i] != answers[0] {
			tb.Fatalf("sidecar %d decides or lists differently from sidecar 0", i)
		}
	}
}

// natsRun runs the binary and returns its exit code, stdout and stderr.
func natsRun(tb testing.TB, env []string, args ...string) (int, string, string) {
	tb.Helper()
	cmd := exec.Command(binPath, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		tb.Fatal(err)
	}
	return code, stdout.String(), stderr.String()
}

// TestE2ENATSCommands: the publish commands' and serve's NATS errors are
// clear and fail (exit 1) rather than half-work.
func TestE2ENATSCommands(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	url := srv.URL()
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := file("good.ndjson", `{"seq":1,"op":"user.upsert","user":{"id":"u-1","role":"user","location_ids":["loc-1"]}}`+"\n")
	bad := file("bad.ndjson", `{"op":"user.upsert","user":{"id":"u-2","role":"user","location_ids":["loc-1"]}}`+"\n"+`{"op":"user.upsert","user":{"id":"u-3"}}`+"\n")
	badSnap := file("bad-snap.ndjson", "{\"seq\": 5}\n{\"user\": {\"id\": \"u-1\", \"role\": \"user\", \"location_ids\": []}}\n{\"user\": {\"id\": \"u-2\"}}\n")
	goodSnap := file("snap.ndjson", "{\"seq\": 5}\n{\"user\": {\"id\": \"u-1\", \"role\": \"user\", \"location_ids\": []}}\n")
	cases := []struct {
		name       string
		args       []string
		code       int
		out, errIn string
	}{
		{"publish to a missing stream", []string{"publish", "--nats", url, "--stream", "NOPE", good}, 1, "", "does not exist: create it with --create"},
		{"publish --create", []string{"publish", "--nats", url, "--stream", "CMD", "--subject", "cmd.events", "--create", good}, 0, `"last_seq":1`, ""},
		{"the stream exists with another subject", []string{"publish", "--nats", url, "--stream", "CMD", "--subject", "other", "--create", good}, 1, "", `not "other"`},
		{"publish again resumes", []string{"publish", "--nats", url, "--stream", "CMD", "--subject", "cmd.events", good}, 0, `"skipped":1`, ""},
		{"an invalid event stops the publish after the valid ones", []string{"publish", "--nats", url, "--stream", "CMD", "--subject", "cmd.events", bad}, 1, `"published":1`, "event 2 (line 2) is invalid"},
		{"dry run publishes nothing", []string{"publish", "--nats", url, "--stream", "CMD", "--subject", "cmd.events", "--dry-run", good}, 0, `"published":0,"skipped":1`, ""},
		{"no NATS URL", []string{"publish", good}, 1, "", `"nats" not set`},
		{"an http URL", []string{"publish", "--nats", "http://127.0.0.1:1", good}, 2, "", "want nats://HOST:PORT or tls://HOST:PORT"},
		{"nobody listening", []string{"publish", "--nats", "nats://127.0.0.1:1", good}, 1, "", "connecting to nats://127.0.0.1:1"},
		{"an invalid snapshot is refused with its line", []string{"snapshot", "publish", "--nats", url, "--bucket", "B", "--create", badSnap}, 1, "", "line 3"},
		{"a missing bucket", []string{"snapshot", "publish", "--nats", url, "--bucket", "NOBUCKET", goodSnap}, 1, "", "create it with --create"},
		{"snapshot publish", []string{"snapshot", "publish", "--nats", url, "--bucket", "B", "--create", goodSnap}, 0, `"seq":5`, ""},
		{"serve with an http source", []string{"serve", "--data-dir", t.TempDir(), "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--replication-source", "http://x:1"}, 2, "", "want nats://HOST:PORT or tls://HOST:PORT"},
		{"serve with two kinds of credentials", []string{"serve", "--data-dir", t.TempDir(), "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--replication-source", url, "--nats-user", "u", "--nats-password-file", good, "--nats-token-file", good}, 1, "", "only one"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := natsRun(t, nil, tc.args...)
			if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errOut, tc.errIn) {
				t.Fatalf("exit %d, stdout %q, stderr %q; want exit %d, %q in stdout, %q in stderr", code, out, errOut, tc.code, tc.out, tc.errIn)
			}
		})
	}

	t.Run("a sidecar without NATS is not ready and says why", func(t *testing.T) {
		p := startWith(t, t.TempDir(), []string{"serve", "--addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--data-dir", t.TempDir()},
			[]string{"CRMAUTHZ_REPLICATION_SOURCE=nats://127.0.0.1:1", "CRMAUTHZ_NATS_STREAM=CMD"})
		deadline := time.Now().Add(time.Minute)
		for {
			code, msg := natsReady(t, p)
			if code == 503 && strings.Contains(msg, "not connected to nats://127.0.0.1:1") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("/health/ready %d %q", code, msg)
			}
			time.Sleep(20 * time.Millisecond)
		}
		_, st := call(t, http.MethodGet, p.admin+"/v1/status", nil, nil)
		src, _ := st["replication_source"].(map[string]any)
		if src["stream"] != "CMD" || src["connected"] != false || st["not_ready"] == nil {
			t.Fatalf("/v1/status: %v", st)
		}
		// Decisions go on (from the index as it is), fail closed as always.
		if a, r := decide(t, p, "u-1", "view", "contact", "c-1", nil); a || r != "unknown_subject" {
			t.Fatalf("decision = %v %s", a, r)
		}
		p.stop()
	})
}
