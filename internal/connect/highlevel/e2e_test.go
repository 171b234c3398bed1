package highlevel

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/connect/highlevel/hlfake"
	"github.com/crmauthz/crmauthz/internal/natstest"
	"github.com/crmauthz/crmauthz/internal/refmodel"
)

var allActions = []string{"view", "edit", "delete", "change_owner", "add_follower", "remove_follower"}

// refDecide is the default policy's decision without a target (docs/policies.md), over a model.
func refDecide(m *refmodel.Model, subject, action, typ, id string) (bool, string) {
	if !slices.Contains(allActions, action) {
		return false, "unknown_action"
	}
	u, ok := m.Users[subject]
	if !ok {
		return false, "unknown_subject"
	}
	r, ok := m.Records[refmodel.Key{Type: typ, ID: id}]
	switch {
	case !ok:
		return false, "record_not_found"
	case !slices.Contains(u.LocationIDs, r.LocationID):
		return false, "cross_location"
	case typ == kindContact && !u.ContactsEnabled, typ == kindOpportunity && !u.OpportunitiesEnabled:
		return false, "module_disabled"
	case u.Role == "admin":
		return true, "admin"
	case !u.AssignedDataOnly:
		return true, "unrestricted"
	case r.Owner == subject:
		return true, "owner"
	case slices.Contains(r.Followers, subject):
		switch action {
		case "view", "edit":
			return true, "follower"
		case "change_owner":
			return false, "followers_cannot_change_owner"
		}
		return false, "follower_not_permitted"
	}
	return false, "not_assigned"
}

// sameDecisions asks the sidecar n random questions over the model's users and records and
// compares each answer with refDecide.
func sameDecisions(tb testing.TB, s *sidecar, m *refmodel.Model, n int, seed uint64) {
	tb.Helper()
	rng := rand.New(rand.NewPCG(seed, 2))
	users := m.UserIDs()
	users = append(users, "u-nobody")
	keys := m.Keys()
	for range n {
		u := users[rng.IntN(len(users))]
		k := keys[rng.IntN(len(keys))]
		a := allActions[rng.IntN(len(allActions))]
		allow, reason := s.decide(tb, u, a, k.Type, k.ID)
		if wa, wr := refDecide(m, u, a, k.Type, k.ID); allow != wa || reason != wr {
			tb.Fatalf("%s %s %s: sidecar %v %s, model %v %s", u, a, k, allow, reason, wa, wr)
		}
	}
}

func metricsText(tb testing.TB, r *running) string {
	tb.Helper()
	return metricsAt(tb, r.admin.URL)
}

// metricsAt reads /metrics of the admin listener at url.
func metricsAt(tb testing.TB, url string) string {
	tb.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// restrictedUser finds a user with assigned data only, the contacts module, and a contact of
// its location it neither owns nor follows.
func restrictedUser(tb testing.TB, m *refmodel.Model) (string, refmodel.Record) {
	tb.Helper()
	for _, id := range m.UserIDs() {
		u := m.Users[id]
		if u.Role != "user" || !u.AssignedDataOnly || !u.ContactsEnabled {
			continue
		}
		for _, k := range m.Keys() {
			r := m.Records[k]
			if k.Type == kindContact && slices.Contains(u.LocationIDs, r.LocationID) && r.Owner != id && !slices.Contains(r.Followers, id) && len(r.Followers) < 10 {
				return id, r
			}
		}
	}
	tb.Fatal("no restricted user in the world")
	return "", refmodel.Record{}
}

// TestConnectorEndToEnd: the first sync (through injected 429s and 500s) makes the sidecar
// decide like the model of the fake's world; a signed webhook changes a decision; a follower
// added with no webhook, and a contact deleted with none, reach the index after a reconcile.
func TestConnectorEndToEnd(t *testing.T) {
	e := newEnv(t, 3)
	e.fake.GenWorld(1, 3, 20, 90)
	e.fake.Fail500, e.fake.Fail429 = 7, 11
	e.cfg.PageSize = 25
	e.cfg.ReconcileInterval = 1500 * time.Millisecond
	r := start(t, e.cfg)
	r.waitReady(t)

	want := e.fake.model(e.cfg.LocationIDs)
	_, got := e.side.model(t)
	if !sameModel(t, got, want) {
		t.Fatalf("after the first sync the index differs from the fake's world:\n%s", diffModels(got, want))
	}
	sameDecisions(t, e.side, want, 300, 1)
	mt := metricsText(t, r)
	for _, kind := range []string{anomalyOwnerFollower, anomalyDuplicateFollower, anomalyTooManyFollowers, anomalyUnknownRole} {
		if !strings.Contains(mt, `crmauthz_connector_source_anomalies_total{connector="highlevel",kind="`+kind+`"}`) {
			t.Errorf("no anomaly of kind %s counted", kind)
		}
	}
	for _, code := range []string{"429", "500"} {
		if !strings.Contains(mt, `code="`+code+`"`) {
			t.Errorf("no request answered %s in the metrics: the injection did not happen", code)
		}
	}
	if !strings.Contains(mt, `crmauthz_connector_last_sync_timestamp_seconds{connector="highlevel",location="loc-2"}`) {
		t.Error("no last sync time of loc-2")
	}

	t.Run("webhook changes a decision", func(t *testing.T) {
		u, rec := restrictedUser(t, want)
		if allow, reason := e.side.decide(t, u, "edit", kindContact, rec.ID); allow || reason != "not_assigned" {
			t.Fatalf("before: %v %s", allow, reason)
		}
		e.fake.Set(func(f *hlfake.Fake) { f.Records[kindContact][rec.ID].AssignedTo = u })
		body := hook("ContactUpdate", rec.LocationID, rec.ID)
		if code, out := post(t, r.webhook.URL, body, sign(body)); code != 200 || out["accepted"] != true {
			t.Fatalf("webhook: %d %v", code, out)
		}
		eventually(t, "the webhook's change", func() bool {
			allow, reason := e.side.decide(t, u, "edit", kindContact, rec.ID)
			return allow && reason == "owner"
		})
	})
	t.Run("reconcile brings a follower and a delete without webhook", func(t *testing.T) {
		m := e.fake.model(e.cfg.LocationIDs)
		u, rec := restrictedUser(t, m)
		var gone refmodel.Record
		for _, k := range m.Keys() {
			if k.Type == kindOpportunity && k.ID != rec.ID {
				gone = m.Records[k]
				break
			}
		}
		e.fake.Set(func(f *hlfake.Fake) {
			f.Records[kindContact][rec.ID].Followers = append(f.Records[kindContact][rec.ID].Followers, u)
			delete(f.Records[kindOpportunity], gone.ID)
		})
		eventually(t, "the follower added in the fake", func() bool {
			allow, reason := e.side.decide(t, u, "view", kindContact, rec.ID)
			return allow && reason == "follower"
		})
		eventually(t, "the opportunity deleted in the fake", func() bool {
			_, reason := e.side.decide(t, u, "view", kindOpportunity, gone.ID)
			return reason == "record_not_found"
		})
		want := e.fake.model(e.cfg.LocationIDs)
		eventually(t, "the index to equal the fake's world", func() bool {
			_, got := e.side.model(t)
			return sameModel(t, got, want)
		})
	})
	if len(e.fake.BadHeader) > 0 {
		t.Fatalf("requests without the right token or Version: %v", e.fake.BadHeader[:1])
	}
}

// TestWebhookReplayNotAppliedTwice: a replayed webhookId is answered {"duplicate":true} and
// reads nothing again, before and after a restart on the same state dir.
func TestWebhookReplayNotAppliedTwice(t *testing.T) {
	e := newEnv(t, 1)
	e.fake.GenWorld(2, 1, 10, 30)
	e.cfg.ReconcileInterval = time.Hour
	r := start(t, e.cfg)
	r.waitReady(t)
	m := e.fake.model(e.cfg.LocationIDs)
	u, rec := restrictedUser(t, m)
	e.fake.Set(func(f *hlfake.Fake) { f.Records[kindContact][rec.ID].AssignedTo = u })
	body := hook("ContactUpdate", rec.LocationID, rec.ID)
	if code, out := post(t, r.webhook.URL, body, sign(body)); code != 200 || out["accepted"] != true {
		t.Fatalf("webhook: %d %v", code, out)
	}
	eventually(t, "the webhook's change", func() bool { ok, _ := e.side.decide(t, u, "edit", kindContact, rec.ID); return ok })
	eventually(t, "no pending work", func() bool { return r.c.st.pending() == 0 })
	// The fake changes again; a replay must not read it.
	e.fake.Set(func(f *hlfake.Fake) { f.Records[kindContact][rec.ID].AssignedTo = "" })
	requests := e.fake.Total()
	seq, _ := e.side.model(t)
	for i := range 2 {
		if i == 1 { // and across a restart
			r.stop()
			cfg := e.cfg
			cfg.SkipReconcileAtStart = true
			r = start(t, cfg)
			r.waitReady(t)
		}
		if code, out := post(t, r.webhook.URL, body, sign(body)); code != 200 || out["duplicate"] != true {
			t.Fatalf("replay %d: %d %v", i, code, out)
		}
	}
	time.Sleep(300 * time.Millisecond)
	if n := e.fake.Total(); n != requests {
		t.Fatalf("a replayed webhook read the API again (%d requests, was %d)", n, requests)
	}
	if s, _ := e.side.model(t); s != seq {
		t.Fatalf("a replayed webhook wrote events: seq %d, was %d", s, seq)
	}
	if ok, _ := e.side.decide(t, u, "edit", kindContact, rec.ID); !ok {
		t.Fatal("the decision changed without a new webhook")
	}
}

// TestKillLosesNoAcceptedWebhook: webhooks arrive while the connector is stopped abruptly and
// restarted on the same state dir, several times; every contact whose last change got a 200
// ends up as the fake holds it (the restarts do not reconcile, so only the webhook work can
// have carried it).
func TestKillLosesNoAcceptedWebhook(t *testing.T) {
	e := newEnv(t, 2)
	e.fake.GenWorld(3, 2, 10, 60)
	e.cfg.ReconcileInterval = time.Hour
	e.cfg.SkipReconcileAtStart = true
	r := start(t, e.cfg)
	r.waitReady(t)
	m := e.fake.model(e.cfg.LocationIDs)
	var contacts []refmodel.Record
	for _, k := range m.Keys() {
		if k.Type == kindContact {
			contacts = append(contacts, m.Records[k])
		}
	}
	rng := rand.New(rand.NewPCG(4, 4))
	acked := map[string]bool{} // contact id → its last change was acknowledged with a 200
	url := r.webhook.URL
	restarts := 0
	for i := range 400 {
		if i%100 == 50 {
			e.sink.failNext(2) // sink writes fail after the outbox commit
		}
		if i > 0 && i%90 == 0 {
			// a stop at an arbitrary point of the work loop: refreshes in flight, commits pending
			time.Sleep(time.Duration(rng.IntN(30)) * time.Millisecond)
			r.stop()
			r = start(t, e.cfg)
			url = r.webhook.URL
			restarts++
		}
		c := contacts[rng.IntN(len(contacts))]
		owner := fmt.Sprintf("u-%s-%02d", strings.TrimPrefix(c.LocationID, "loc-"), rng.IntN(10))
		e.fake.Set(func(f *hlfake.Fake) { f.Records[kindContact][c.ID].AssignedTo = owner })
		body := hook("ContactUpdate", c.LocationID, c.ID)
		code := 0
		req, _ := http.NewRequest(http.MethodPost, url+WebhookPath, strings.NewReader(string(body)))
		req.Header.Set("X-GHL-Signature", sign(body)["X-GHL-Signature"])
		if resp, err := http.DefaultClient.Do(req); err == nil {
			code = resp.StatusCode
			resp.Body.Close()
		}
		acked[c.ID] = code == 200
	}
	eventually(t, "the work to drain", func() bool { return r.c.st.pending() == 0 })
	final := e.fake.model(e.cfg.LocationIDs)
	eventually(t, "every acknowledged change in the index", func() bool {
		_, got := e.side.model(t)
		for id, ok := range acked {
			k := refmodel.Key{Type: kindContact, ID: id}
			if ok && got.Records[k].Owner != final.Records[k].Owner {
				return false
			}
		}
		return true
	})
	if restarts < 3 {
		t.Fatalf("only %d restarts", restarts)
	}
}

// TestRequestWindow: a sync of 1 location needing over 100 requests never sends more than 100
// in any 10-second window (the fake counts arrivals), and still copies everything.
func TestRequestWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("takes over 10 s")
	}
	e := newEnv(t, 1)
	e.fake.GenWorld(5, 1, 10, 240)
	e.cfg.PageSize = 2
	c, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	n, res := e.fake.MaxInWindow(10 * time.Second)
	if total := e.fake.Total(); total <= 100 || n > 100 {
		t.Fatalf("%d requests in all, at most %d in 10 s (%s): want > 100 in all and ≤ 100 per window", total, n, res)
	}
	_, got := e.side.model(t)
	if want := e.fake.model(e.cfg.LocationIDs); !sameModel(t, got, want) {
		t.Fatalf("index differs:\n%s", diffModels(got, want))
	}
}

// TestSinkBehindGetsSnapshot: a replica that lost its data (a fresh sidecar at seq 0) gets a
// snapshot of the connector's copy when the connector restarts.
func TestSinkBehindGetsSnapshot(t *testing.T) {
	e := newEnv(t, 1)
	e.fake.GenWorld(6, 1, 8, 30)
	e.cfg.ReconcileInterval = time.Hour
	r := start(t, e.cfg)
	r.waitReady(t)
	// some events after the snapshot
	m := e.fake.model(e.cfg.LocationIDs)
	u, rec := restrictedUser(t, m)
	e.fake.Set(func(f *hlfake.Fake) { f.Records[kindContact][rec.ID].AssignedTo = u })
	body := hook("ContactUpdate", rec.LocationID, rec.ID)
	post(t, r.webhook.URL, body, sign(body))
	eventually(t, "the change", func() bool { ok, _ := e.side.decide(t, u, "edit", kindContact, rec.ID); return ok })
	r.stop()
	fresh := newSidecar(t)
	e.sink.point(t, fresh.admin.URL)
	cfg := e.cfg
	cfg.SkipReconcileAtStart = true
	r = start(t, cfg)
	r.waitReady(t)
	want := e.fake.model(e.cfg.LocationIDs)
	eventually(t, "the fresh replica to hold the copy", func() bool {
		_, got := fresh.model(t)
		return sameModel(t, got, want)
	})
}

// TestSyncFails: a sync that cannot read the API returns the error (the command exits 1).
func TestSyncFails(t *testing.T) {
	e := newEnv(t, 1)
	e.fake.Fail500 = 1
	e.cfg.MaxAttempts = 2
	c, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Sync(context.Background()); err == nil || !strings.Contains(err.Error(), "giving up after 2 attempts") {
		t.Fatalf("Sync: %v", err)
	}
	if c.Ready() {
		t.Fatal("ready after a failed sync")
	}
}

// TestConnectorNATS: with a NATS sink the first copy reaches sidecars that read the stream
// (one started before, one after) as a snapshot object; a signed webhook then changes a
// decision on both.
func TestConnectorNATS(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	e := newEnv(t, 2)
	e.fake.GenWorld(12, 2, 10, 40)
	e.sink.point(t, srv.URL())
	e.cfg.ReconcileInterval = time.Hour
	early := newSidecarFrom(t, srv.URL())
	r := start(t, e.cfg)
	r.waitReady(t)
	late := newSidecarFrom(t, srv.URL())
	want := e.fake.model(e.cfg.LocationIDs)
	for name, s := range map[string]*sidecar{"early": early, "late": late} {
		eventually(t, name+" sidecar to hold the fake's world", func() bool {
			_, got := s.model(t)
			return sameModel(t, got, want)
		})
	}
	sameDecisions(t, late, want, 100, 3)
	u, rec := restrictedUser(t, want)
	e.fake.Set(func(f *hlfake.Fake) { f.Records[kindContact][rec.ID].AssignedTo = u })
	body := hook("ContactUpdate", rec.LocationID, rec.ID)
	if code, out := post(t, r.webhook.URL, body, sign(body)); code != 200 || out["accepted"] != true {
		t.Fatalf("webhook: %d %v", code, out)
	}
	for name, s := range map[string]*sidecar{"early": early, "late": late} {
		eventually(t, "the webhook's change on the "+name+" sidecar", func() bool {
			allow, reason := s.decide(t, u, "edit", kindContact, rec.ID)
			return allow && reason == "owner"
		})
	}
}
