package natssource

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/natsconn"
	"github.com/crmauthz/crmauthz/internal/natspub"
	"github.com/crmauthz/crmauthz/internal/natstest"
)

// TestStreamsIntoIndex: events published to the stream (with and without
// their own seq) reach the index, in batches, and the sidecar is ready and
// level once it has caught up.
func TestStreamsIntoIndex(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	js := natstest.JetStream(t, srv.URL())
	createStream(t, js, "CRM", "crm.events")
	// 2500 events before the sidecar starts: it catches up in batches.
	publish(t, js, "CRM", "crm.events", userEvents(1, 2500)...)

	sc := newSidecar(t)
	src := sc.start(t, Config{URL: srv.URL(), Stream: "CRM", Subject: "crm.events", MaxBatch: 500})
	waitApplied(t, sc, 2500)
	// The counters and the synced flag follow the commit that waitApplied saw.
	waitFor(t, time.Minute, "synced and counted", func() bool {
		st := src.Status()
		return st.Synced && st.EventsApplied == 2500
	})
	if r := src.NotReady(); r != "" {
		t.Fatalf("NotReady after catching up: %q", r)
	}
	st := src.Status()
	if st.State != StateStreaming || st.EventsApplied != 2500 || st.Batches < 5 || st.Batches >= 2500 {
		t.Fatalf("status after catch-up: %+v (want streaming, 2500 events in 5 to 2499 batches of at most 500)", st)
	}

	// Live: an event with an explicit seq equal to the stream's, one without.
	publish(t, js, "CRM", "crm.events",
		`{"seq":2501,"op":"record.upsert","record":{"type":"contact","id":"c-1","location_id":"loc-1","owner":"u-1","followers":["u-2"]}}`,
		`{"op":"follower.add","type":"contact","id":"c-1","user_id":"u-3"}`)
	waitApplied(t, sc, 2502)
	if err := sc.ix.View(func(tx *index.ReadTx) error {
		r, ok, err := tx.Record("contact", "c-1")
		if err != nil || !ok || !slices.Equal(r.Followers, []string{"u-2", "u-3"}) {
			t.Errorf("c-1 = %+v, %v, %v; want followers u-2, u-3", r, ok, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, time.Minute, "crmauthz_replication_applied_seq 2502", func() bool {
		v, _ := gauge(t, sc.m, "crmauthz_replication_applied_seq", nil)
		return v == 2502
	})
	if v, ok := gauge(t, sc.m, "crmauthz_replication_events_total", map[string]string{"op": "follower.add", "result": "applied"}); !ok || v != 1 {
		t.Errorf("events_total{follower.add, applied} = %v (%v), want 1", v, ok)
	}
	if v, ok := gauge(t, sc.m, "crmauthz_replication_lag_events", nil); !ok || v != 0 {
		t.Errorf("crmauthz_replication_lag_events = %v (%v), want 0", v, ok)
	}
	if v, ok := gauge(t, sc.m, "crmauthz_replication_source_up", nil); !ok || v != 1 {
		t.Errorf("crmauthz_replication_source_up = %v (%v), want 1", v, ok)
	}
}

// TestStreamDeleted: a sidecar whose stream disappears is not ready any
// more (it may miss anything), says why, and shows the source down; when a
// new, empty stream of that name appears, its index is ahead of it.
func TestStreamDeleted(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	js := natstest.JetStream(t, srv.URL())
	createStream(t, js, "DEL", "del.events")
	publish(t, js, "DEL", "del.events", userEvents(1, 5)...)
	sc := newSidecar(t)
	src := sc.start(t, Config{URL: srv.URL(), Stream: "DEL", Subject: "del.events"})
	waitApplied(t, sc, 5)
	waitFor(t, time.Minute, "ready", func() bool { return src.NotReady() == "" })
	if err := js.DeleteStream(context.Background(), "DEL"); err != nil {
		t.Fatal(err)
	}
	waitState(t, sc, StateNoStream)
	if r := src.NotReady(); !strings.Contains(r, `the stream "DEL" does not exist`) {
		t.Fatalf("NotReady = %q", r)
	}
	if v, _ := gauge(t, sc.m, "crmauthz_replication_source_up", nil); v != 0 {
		t.Errorf("crmauthz_replication_source_up = %v, want 0", v)
	}
	createStream(t, js, "DEL", "del.events")
	publish(t, js, "DEL", "del.events", userEvents(100, 2)...)
	waitState(t, sc, StateAheadOfStream)
	if sc.ix.AppliedSeq() != 5 || hasUser(t, sc.ix, "u-100") {
		t.Fatal("events of the new stream were applied over the old index")
	}
}

// TestInvalidEventStops: an invalid event in the stream is never skipped:
// the events before it apply, replication stops at it, says so (NotReady,
// Status, the rejected counter, the lag), and resumes after a snapshot past
// it, applying what follows.
func TestInvalidEventStops(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	js := natstest.JetStream(t, srv.URL())
	cases := []struct {
		name string
		bad  string // published as seq 4, after 3 good events
		op   string // label of the rejected counter
		want string // in the reason
	}{
		{"unknown op", `{"op":"user.rename","user_id":"u-1"}`, "unknown", "unknown op"},
		{"seq differs from the stream's", `{"seq":9,"op":"user.delete","user_id":"u-1"}`, "user.delete", "seq 9 does not match the position 4"},
		{"follower.add on a missing record", `{"op":"follower.add","type":"contact","id":"nope","user_id":"u-1"}`, "follower.add", "record not found"},
		{"missing field", `{"op":"user.upsert","user":{"id":"u-9","location_ids":[]}}`, "user.upsert", "role is missing"},
		{"unknown field", `{"op":"user.delete","user_id":"u-1","colour":"red"}`, "user.delete", "unknown field"},
		{"malformed JSON", `{"op":"user.delete",`, "unknown", "malformed JSON"},
		{"empty message", ``, "unknown", "empty"},
		{"a batch, not an event", `{"events":[]}`, "unknown", "unknown field"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stream, subject := "S"+string(rune('A'+i)), "crm."+string(rune('a'+i))
			createStream(t, js, stream, subject)
			publish(t, js, stream, subject, userEvents(1, 3)...)
			if seq := publishRaw(t, js, subject, tc.bad); seq != 4 {
				t.Fatalf("bad event at seq %d", seq)
			}
			publish(t, js, stream, subject, userEvents(10, 2)...) // seqs 5, 6

			sc := newSidecar(t)
			src := sc.start(t, Config{URL: srv.URL(), Stream: stream, Subject: subject})
			st := waitState(t, sc, StateStopped)
			if sc.ix.AppliedSeq() != 3 || st.StoppedAtSeq != 4 {
				t.Fatalf("applied_seq %d, stopped at %d; want 3 and 4", sc.ix.AppliedSeq(), st.StoppedAtSeq)
			}
			reason := src.NotReady()
			for _, w := range []string{tc.want, "event seq 4", "snapshot with seq >= 4"} {
				if !strings.Contains(reason, w) {
					t.Errorf("NotReady = %q, want it to mention %q", reason, w)
				}
			}
			if v, _ := gauge(t, sc.m, "crmauthz_replication_events_total", map[string]string{"op": tc.op, "result": "rejected"}); v < 1 {
				t.Errorf("events_total{op=%s, rejected} = %v, want >= 1", tc.op, v)
			}
			waitFor(t, time.Minute, "lag gauges", func() bool {
				ev, _ := gauge(t, sc.m, "crmauthz_replication_lag_events", nil)
				secs, _ := gauge(t, sc.m, "crmauthz_replication_lag_seconds", nil)
				return ev == 3 && secs > 0
			})
			// Nothing after it is applied, however long we wait for it.
			time.Sleep(200 * time.Millisecond)
			if hasUser(t, sc.ix, "u-10") {
				t.Fatal("an event after the invalid one was applied")
			}

			// The operator's fix: a snapshot at seq 4 (PUT /v1/replication/snapshot).
			snap := snapshotAt(t, append(userEvents(1, 3), userEvent("u-fixed")))
			if _, err := sc.repl.LoadSnapshot(strings.NewReader(snap)); err != nil {
				t.Fatal(err)
			}
			waitApplied(t, sc, 6)
			if !hasUser(t, sc.ix, "u-fixed") || !hasUser(t, sc.ix, "u-11") {
				t.Fatal("after the snapshot, the snapshot's state and the later events must be in the index")
			}
			waitFor(t, time.Minute, "ready after the fix", func() bool { return src.NotReady() == "" })
		})
	}
}

// TestGapStops: a message deleted from the middle of the stream is a gap:
// replication stops before it rather than skip it.
func TestGapStops(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	js := natstest.JetStream(t, srv.URL())
	stream := createStream(t, js, "GAP", "gap.events")
	publish(t, js, "GAP", "gap.events", userEvents(1, 5)...)
	if err := stream.DeleteMsg(context.Background(), 3); err != nil {
		t.Fatal(err)
	}
	sc := newSidecar(t)
	src := sc.start(t, Config{URL: srv.URL(), Stream: "GAP", Subject: "gap.events"})
	st := waitState(t, sc, StateStopped)
	if sc.ix.AppliedSeq() != 2 || st.StoppedAtSeq != 3 || !strings.Contains(src.NotReady(), "no event at seq 3") {
		t.Fatalf("applied_seq %d, status %+v, NotReady %q", sc.ix.AppliedSeq(), st, src.NotReady())
	}
}

// TestBootstrap: a sidecar whose applied_seq+1 is no longer in the stream
// (purged, trimmed) needs a snapshot: from the bucket when one there is
// recent enough, else it waits (not ready, saying why) for a PUT or a newer
// object.
func TestBootstrap(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	js := natstest.JetStream(t, srv.URL())
	ctx := context.Background()
	events := userEvents(1, 20)

	t.Run("waits for a PUT without a bucket", func(t *testing.T) {
		stream := createStream(t, js, "B1", "b1.events")
		publish(t, js, "B1", "b1.events", events[:10]...)
		if err := stream.Purge(ctx); err != nil { // first seq 11
			t.Fatal(err)
		}
		publish(t, js, "B1", "b1.events", events[10:12]...)
		sc := newSidecar(t)
		src := sc.start(t, Config{URL: srv.URL(), Stream: "B1", Subject: "b1.events"})
		waitState(t, sc, StateWaitingForSnapshot)
		if r := src.NotReady(); !strings.Contains(r, "no longer holds seq 1") || !strings.Contains(r, "seq >= 10") {
			t.Fatalf("NotReady = %q", r)
		}
		if _, err := sc.repl.LoadSnapshot(strings.NewReader(snapshotAt(t, events[:10]))); err != nil {
			t.Fatal(err)
		}
		waitApplied(t, sc, 12)
	})

	t.Run("loads the newest recent enough object from the bucket", func(t *testing.T) {
		stream := createStream(t, js, "B2", "b2.events")
		obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "snaps2"})
		if err != nil {
			t.Fatal(err)
		}
		publish(t, js, "B2", "b2.events", events...)
		put := func(name string, seq int) {
			if _, err := natspub.PutSnapshot(ctx, obs, name, uint64(seq), strings.NewReader(snapshotAt(t, events[:seq])), nil); err != nil {
				t.Fatal(err)
			}
		}
		put("old", 5)
		put("newer", 12)
		if err := stream.Purge(ctx, jetstream.WithPurgeSequence(16)); err != nil { // keeps 16..20
			t.Fatal(err)
		}
		sc := newSidecar(t)
		src := sc.start(t, Config{URL: srv.URL(), Stream: "B2", Subject: "b2.events", SnapshotBucket: "snaps2"})
		// 12 is too old for a stream starting at 16: wait, and say so.
		waitState(t, sc, StateWaitingForSnapshot)
		if r := src.NotReady(); !strings.Contains(r, "seq >= 15") || !strings.Contains(r, "snaps2") {
			t.Fatalf("NotReady = %q", r)
		}
		if sc.ix.AppliedSeq() != 0 {
			t.Fatalf("applied_seq %d: a snapshot too old for the stream was loaded", sc.ix.AppliedSeq())
		}
		put("latest", 15)
		waitApplied(t, sc, 20)
		if st := src.Status(); st.SnapshotsLoaded != 1 {
			t.Errorf("snapshots loaded = %d, want 1", st.SnapshotsLoaded)
		}
		if v, _ := gauge(t, sc.m, "crmauthz_snapshot_loads_total", map[string]string{"source": "nats", "result": "ok"}); v != 1 {
			t.Errorf("crmauthz_snapshot_loads_total{source=nats,result=ok} = %v, want 1", v)
		}
		// The same state as a sidecar that read every event.
		if got, want := sc.exported(t), snapshotAt(t, events); got != want {
			t.Errorf("index after bootstrap:\n%s\nwant:\n%s", got, want)
		}
	})

	t.Run("a stream trimmed by MaxMsgs", func(t *testing.T) {
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "B3", Subjects: []string{"b3.events"}, MaxMsgs: 5})
		if err != nil {
			t.Fatal(err)
		}
		obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "snaps3"})
		if err != nil {
			t.Fatal(err)
		}
		publish(t, js, "B3", "b3.events", events[:16]...) // holds 12..16
		if _, err := natspub.PutSnapshot(ctx, obs, "s", 14, strings.NewReader(snapshotAt(t, events[:14])), nil); err != nil {
			t.Fatal(err)
		}
		sc := newSidecar(t)
		sc.start(t, Config{URL: srv.URL(), Stream: "B3", Subject: "b3.events", SnapshotBucket: "snaps3"})
		waitApplied(t, sc, 16)
	})

	t.Run("a snapshot object whose metadata lies is refused", func(t *testing.T) {
		stream := createStream(t, js, "B4", "b4.events")
		obs, err := js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: "snaps4"})
		if err != nil {
			t.Fatal(err)
		}
		publish(t, js, "B4", "b4.events", events[:6]...)
		if err := stream.Purge(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := natspub.PutSnapshot(ctx, obs, "liar", 6, strings.NewReader(snapshotAt(t, events[:2])), nil); err != nil {
			t.Fatal(err)
		}
		sc := newSidecar(t)
		src := sc.start(t, Config{URL: srv.URL(), Stream: "B4", Subject: "b4.events", SnapshotBucket: "snaps4"})
		waitFor(t, time.Minute, "the error", func() bool {
			return strings.Contains(src.Status().LastError, "first line has seq 2")
		})
		if sc.ix.AppliedSeq() != 0 || src.NotReady() == "" {
			t.Fatalf("applied_seq %d, NotReady %q", sc.ix.AppliedSeq(), src.NotReady())
		}
	})
}

// TestAheadOfStream: an index beyond the stream's end (the stream was
// recreated) applies nothing and is not ready until a snapshot fixes it.
func TestAheadOfStream(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	js := natstest.JetStream(t, srv.URL())
	createStream(t, js, "AH", "ah.events")
	events := userEvents(1, 50)
	publish(t, js, "AH", "ah.events", events[:10]...)
	sc := newSidecar(t)
	if _, err := sc.repl.LoadSnapshot(strings.NewReader(snapshotAt(t, events))); err != nil { // seq 50
		t.Fatal(err)
	}
	src := sc.start(t, Config{URL: srv.URL(), Stream: "AH", Subject: "ah.events"})
	waitState(t, sc, StateAheadOfStream)
	if r := src.NotReady(); !strings.Contains(r, "applied_seq 50 is beyond the last seq 10") {
		t.Fatalf("NotReady = %q", r)
	}
	if _, err := sc.repl.LoadSnapshot(strings.NewReader(snapshotAt(t, events[:4]))); err != nil {
		t.Fatal(err)
	}
	waitApplied(t, sc, 10)
	waitFor(t, time.Minute, "ready", func() bool { return src.NotReady() == "" })
}

// TestIndexFedOverHTTPToo: events applied over the HTTP API (same seqs) are
// skipped by the source, and the source goes on after them.
func TestIndexFedOverHTTPToo(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	js := natstest.JetStream(t, srv.URL())
	createStream(t, js, "MIX", "mix.events")
	events := userEvents(1, 8)
	publish(t, js, "MIX", "mix.events", events...)
	sc := newSidecar(t)
	if _, err := sc.repl.LoadSnapshot(strings.NewReader(snapshotAt(t, events[:5]))); err != nil {
		t.Fatal(err)
	}
	sc.start(t, Config{URL: srv.URL(), Stream: "MIX", Subject: "mix.events"})
	waitApplied(t, sc, 8)
	if got, want := sc.exported(t), snapshotAt(t, events); got != want {
		t.Fatalf("index:\n%s\nwant:\n%s", got, want)
	}
}

// TestReconnects: the source waits for a server that is down (not ready,
// saying so), and resumes where it was after the server restarts.
func TestReconnects(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	url := srv.URL()
	srv.Shutdown()

	sc := newSidecar(t)
	src := sc.start(t, Config{URL: url, Stream: "RC", Subject: "rc.events"})
	waitFor(t, time.Minute, "a connection error", func() bool { return src.Status().LastError != "" })
	if r := src.NotReady(); !strings.Contains(r, "not connected") {
		t.Fatalf("NotReady while the server is down = %q", r)
	}
	if v, ok := gauge(t, sc.m, "crmauthz_replication_source_up", nil); !ok || v != 0 {
		t.Errorf("crmauthz_replication_source_up = %v (%v) while the server is down, want 0", v, ok)
	}

	srv.Restart()
	js := natstest.JetStream(t, url)
	createStream(t, js, "RC", "rc.events")
	publish(t, js, "RC", "rc.events", userEvents(1, 100)...)
	waitApplied(t, sc, 100)

	srv.Restart() // the stream and its messages survive on disk
	js = natstest.JetStream(t, url, nats.MaxReconnects(-1))
	publish(t, js, "RC", "rc.events", userEvents(101, 100)...)
	waitApplied(t, sc, 200)
	if !strings.Contains(sc.logs.String(), "reconnected to NATS") && !strings.Contains(sc.logs.String(), "retrying") {
		t.Errorf("no reconnection in the logs:\n%s", sc.logs.String())
	}
}

// TestAuthAndTLS: the credentials and TLS options reach the server; wrong
// ones keep the sidecar not ready with the server's error.
func TestAuthAndTLS(t *testing.T) {
	dir := t.TempDir()
	file := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tlsFiles := natstest.NewTLSFiles(t)
	trust := natstest.NewTrust(t)
	publisherCreds, sidecarCreds := trust.CredsFile(t, "publisher"), trust.CredsFile(t, "sidecar")
	strangerCreds := natstest.NewTrust(t).CredsFile(t, "stranger") // of another operator
	mtls := *tlsFiles
	mtls.Verify = true
	cases := []struct {
		name   string
		server natstest.Options
		client []nats.Option // the test's publisher
		auth   natsconn.Auth
		scheme string
		ok     bool
		err    string
	}{
		{name: "token", server: natstest.Options{Token: "s3cret"}, client: []nats.Option{nats.Token("s3cret")},
			auth: natsconn.Auth{TokenFile: file("token", "s3cret")}, ok: true},
		{name: "wrong token", server: natstest.Options{Token: "s3cret"}, client: []nats.Option{nats.Token("s3cret")},
			auth: natsconn.Auth{TokenFile: file("badtoken", "nope")}, err: "authorization"},
		{name: "user and password", server: natstest.Options{User: "crm", Password: "pw"}, client: []nats.Option{nats.UserInfo("crm", "pw")},
			auth: natsconn.Auth{User: "crm", PasswordFile: file("pw", "pw")}, ok: true},
		{name: "credentials file", server: natstest.Options{Trust: trust}, client: []nats.Option{nats.UserCredentials(publisherCreds)},
			auth: natsconn.Auth{CredsFile: sidecarCreds}, ok: true},
		{name: "credentials of another operator", server: natstest.Options{Trust: trust}, client: []nats.Option{nats.UserCredentials(publisherCreds)},
			auth: natsconn.Auth{CredsFile: strangerCreds}, err: "authorization"},
		{name: "TLS with a private CA", server: natstest.Options{TLS: tlsFiles}, client: []nats.Option{nats.RootCAs(tlsFiles.CA)},
			auth: natsconn.Auth{TLSCA: tlsFiles.CA}, scheme: "tls", ok: true},
		{name: "TLS without the CA", server: natstest.Options{TLS: tlsFiles}, client: []nats.Option{nats.RootCAs(tlsFiles.CA)},
			scheme: "tls", err: "certificate"},
		{name: "mutual TLS", server: natstest.Options{TLS: &mtls},
			client: []nats.Option{nats.RootCAs(tlsFiles.CA), nats.ClientCert(tlsFiles.ClientCert, tlsFiles.ClientKey)},
			auth:   natsconn.Auth{TLSCA: tlsFiles.CA, TLSCert: tlsFiles.ClientCert, TLSKey: tlsFiles.ClientKey}, scheme: "tls", ok: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := natstest.Start(t, tc.server)
			url := srv.URL()
			if tc.scheme != "" {
				url = strings.Replace(url, "nats://", tc.scheme+"://", 1)
			}
			js := natstest.JetStream(t, url, tc.client...)
			createStream(t, js, "AU", "au.events")
			publish(t, js, "AU", "au.events", userEvents(1, 3)...)
			sc := newSidecar(t)
			src := sc.start(t, Config{URL: url, Stream: "AU", Subject: "au.events", Auth: tc.auth})
			if tc.ok {
				waitApplied(t, sc, 3)
				return
			}
			waitFor(t, time.Minute, "a connection error", func() bool {
				return strings.Contains(strings.ToLower(src.Status().LastError), tc.err)
			})
			if r := src.NotReady(); !strings.Contains(r, "not connected") || sc.ix.AppliedSeq() != 0 {
				t.Fatalf("NotReady %q, applied_seq %d", r, sc.ix.AppliedSeq())
			}
		})
	}
}

// TestConfigErrors: New refuses what cannot work, before connecting.
func TestConfigErrors(t *testing.T) {
	sc := newSidecar(t)
	base := Config{URL: "nats://127.0.0.1:4222", Stream: "S", Subject: "s", Index: sc.ix, Replicator: sc.repl, Metrics: sc.m}
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no URL", func(c *Config) { c.URL = "" }, "empty"},
		{"http URL", func(c *Config) { c.URL = "http://127.0.0.1:4222" }, "nats:// or tls://"},
		{"credentials in the URL are not logged", func(c *Config) { c.URL = "http://u:secret@h:1" }, "REDACTED"},
		{"no stream", func(c *Config) { c.Stream = "" }, "stream"},
		{"no subject", func(c *Config) { c.Subject = "" }, "subject"},
		{"token and user", func(c *Config) { c.Auth = natsconn.Auth{TokenFile: "t", User: "u", PasswordFile: "p"} }, "only one"},
		{"user without a password", func(c *Config) { c.Auth = natsconn.Auth{User: "u"} }, "password file"},
		{"missing token file", func(c *Config) { c.Auth = natsconn.Auth{TokenFile: "/nonexistent"} }, "token file"},
		{"certificate without a key", func(c *Config) { c.Auth = natsconn.Auth{TLSCert: "c.pem"} }, "key"},
		{"no index", func(c *Config) { c.Index = nil }, "required"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := base
			tc.edit(&cfg)
			_, err := New(cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "secret") {
				t.Fatalf("New: %v, want an error mentioning %q (and no secret)", err, tc.want)
			}
		})
	}
}
