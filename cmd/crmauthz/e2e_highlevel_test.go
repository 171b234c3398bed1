package main

import (
	"bytes"
	"crypto/ed25519"
	crand "crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/connect/highlevel/hlfake"
	"github.com/crmauthz/crmauthz/internal/natstest"
	"github.com/crmauthz/crmauthz/internal/refmodel"
)

// connector is one running `crmauthz connect highlevel`.
type connector struct {
	*proc
	webhook string // http://addr of the webhook listener
}

func startConnector(t testing.TB, args []string) *connector {
	t.Helper()
	p, raw := spawn(t, "", args, nil, "connect highlevel", 30*time.Second)
	var line struct {
		WebhookAddr string `json:"webhook_addr"`
		AdminAddr   string `json:"admin_addr"`
	}
	if err := json.Unmarshal(raw, &line); err != nil {
		t.Fatal(err)
	}
	p.admin = "http://" + line.AdminAddr
	return &connector{proc: p, webhook: "http://" + line.WebhookAddr}
}

// TestHighLevelConnectorBinary runs the built binary: `connect highlevel` against a fake
// HighLevel (internal/connect/highlevel/hlfake) and a real `crmauthz serve`. After the first
// sync the index holds the fake's owners; then, with the fake's listings failing (so that no
// reconcile can mend anything), webhooks change owners while the connector is SIGKILLed and
// restarted three times: every change acknowledged with a 200 reaches the index. Last,
// `connect highlevel sync` exits 0, and 1 without a token.
func TestHighLevelConnectorBinary(t *testing.T) {
	side := startServer(t, t.TempDir())
	fake, priv, flags := hlSetup(t, side.admin)
	run := append([]string{"connect", "highlevel", "--webhook-addr", "127.0.0.1:0", "--reconcile-interval", "1h"}, flags...)
	tokDir := flags[3]

	fakeOwners := func() map[string]string { return hlFakeOwners(fake) }

	c := startConnector(t, run)
	eventually(t, "ready", func() bool {
		resp, err := http.Get(c.admin + "/health/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	_, m := exported(t, side)
	want := fakeOwners()
	if got := owners(m); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("after the first sync: owners %v, want %v", got, want)
	}

	fake.Set(func(f *hlfake.Fake) { f.FailListings = true })
	rng := rand.New(rand.NewPCG(21, 1))
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	// One sender posts webhooks back to back while the connector is SIGKILLed and restarted
	// three times at random moments, so some webhooks are in flight at each kill.
	var mu sync.Mutex
	url := c.webhook
	acked := map[string]bool{}
	stop := make(chan struct{})
	var accepted atomic.Int64 // webhooks answered 200
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			id := ids[rng.IntN(len(ids))]
			var loc string
			fake.Set(func(f *hlfake.Fake) {
				r := f.Records["contact"][id]
				loc = r.Location
				r.AssignedTo = fmt.Sprintf("u-%s-%02d", loc[len("loc-"):], rng.IntN(10))
			})
			body, _ := json.Marshal(map[string]any{"type": "ContactUpdate", "locationId": loc, "id": id,
				"webhookId": fmt.Sprintf("bin-%d", i), "timestamp": time.Now().UTC().Format(time.RFC3339)})
			mu.Lock()
			u := url
			mu.Unlock()
			req, _ := http.NewRequest(http.MethodPost, u+"/v1/highlevel/webhooks", bytes.NewReader(body))
			req.Header.Set("X-GHL-Signature", base64.StdEncoding.EncodeToString(ed25519.Sign(priv, body)))
			code := 0
			if resp, err := http.DefaultClient.Do(req); err == nil {
				code = resp.StatusCode
				resp.Body.Close()
			}
			mu.Lock()
			acked[id] = code == 200
			mu.Unlock()
			if code == 200 {
				accepted.Add(1)
			}
		}
	}()
	killRng := rand.New(rand.NewPCG(22, 2))
	for range 3 {
		time.Sleep(time.Duration(100+killRng.IntN(300)) * time.Millisecond)
		c.kill() // SIGKILL: webhooks and refreshes in flight
		c = startConnector(t, run)
		mu.Lock()
		url = c.webhook
		mu.Unlock()
	}
	// The sender goes on until 20 webhooks were accepted in all and one more by the last
	// connector: a count, not a time (a fixed 200 ms here accepted 14 and 19 webhooks in two runs
	// of eight at a load average of 14-18).
	last := accepted.Load()
	eventually(t, "20 webhooks accepted, the last connector's first", func() bool {
		n := accepted.Load()
		return n >= 20 && n > last
	})
	close(stop)
	<-done
	t.Logf("%d webhooks accepted across 3 SIGKILLs", accepted.Load())
	final := fakeOwners()
	eventually(t, "every acknowledged change in the index", func() bool {
		_, m := exported(t, side)
		got := owners(m)
		mu.Lock()
		defer mu.Unlock()
		for id, ok := range acked {
			if ok && got[id] != final[id] {
				return false
			}
		}
		return true
	})
	c.kill()

	fake.Set(func(f *hlfake.Fake) { f.FailListings = false })
	syncCmd := exec.Command(binPath, append([]string{"connect", "highlevel", "sync"}, flags...)...)
	if out, err := syncCmd.CombinedOutput(); err != nil {
		t.Fatalf("sync: %v\n%s", err, out)
	}
	if _, m := exported(t, side); fmt.Sprint(owners(m)) != fmt.Sprint(final) {
		t.Fatal("after sync the owners differ from the fake's")
	}
	os.Remove(filepath.Join(tokDir, "loc-1"))
	bad := exec.Command(binPath, append([]string{"connect", "highlevel", "sync"}, flags...)...)
	out, err := bad.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !bytes.Contains(out, []byte("token")) {
		t.Fatalf("sync without a token: %v\n%s", err, out)
	}
}

// hlSetup starts a fake HighLevel with a generated world of 2 locations, writes its tokens and
// a webhook key, and returns the connector's flags for sinkURL (with the replication token).
func hlSetup(t testing.TB, sinkURL string) (*hlfake.Fake, ed25519.PrivateKey, []string) {
	t.Helper()
	fake := hlfake.New()
	fake.GenWorld(21, 2, 10, 60)
	api := httptest.NewServer(fake)
	t.Cleanup(api.Close)
	dir := t.TempDir()
	tokDir := filepath.Join(dir, "tokens")
	os.Mkdir(tokDir, 0o700)
	for _, loc := range []string{"loc-0", "loc-1"} {
		fake.Set(func(f *hlfake.Fake) { f.Tokens["tok-"+loc] = loc })
		os.WriteFile(filepath.Join(tokDir, loc), []byte("tok-"+loc+"\n"), 0o600)
	}
	pub, priv, _ := ed25519.GenerateKey(crand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(pub)
	keyFile := filepath.Join(dir, "key.pem")
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600)
	sinkTok := filepath.Join(dir, "sink-token")
	os.WriteFile(sinkTok, []byte(testToken), 0o600)
	return fake, priv, []string{"--api-url", api.URL, "--token-dir", tokDir, "--location-ids", "loc-0,loc-1",
		"--webhook-public-key-file", keyFile, "--sink", sinkURL, "--sink-token-file", sinkTok,
		"--state-dir", filepath.Join(dir, "state"), "--admin-addr", "127.0.0.1:0"}
}

// owners are the contacts' owners of a model.
func owners(m *refmodel.Model) map[string]string {
	out := map[string]string{}
	for k, r := range m.Records {
		if k.Type == "contact" {
			out[k.ID] = r.Owner
		}
	}
	return out
}

func hlFakeOwners(fake *hlfake.Fake) map[string]string {
	out := map[string]string{}
	fake.Set(func(f *hlfake.Fake) {
		for id, r := range f.Records["contact"] {
			out[id] = r.AssignedTo
		}
	})
	return out
}

func signedWebhook(priv ed25519.PrivateKey, url, typ, loc, id, webhookID string) int {
	body, _ := json.Marshal(map[string]any{"type": typ, "locationId": loc, "id": id,
		"webhookId": webhookID, "timestamp": time.Now().UTC().Format(time.RFC3339)})
	req, _ := http.NewRequest(http.MethodPost, url+"/v1/highlevel/webhooks", bytes.NewReader(body))
	req.Header.Set("X-GHL-Signature", base64.StdEncoding.EncodeToString(ed25519.Sign(priv, body)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestHighLevelConnectorBinaryNATS: the binary with a NATS sink (a real nats-server); two
// `crmauthz serve` reading the stream, one started before the connector and one after, hold the
// fake's owners after the first copy, and both see a signed webhook's change.
func TestHighLevelConnectorBinaryNATS(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	natsArgs := []string{"--replication-source", srv.URL(), "--nats-snapshot-bucket", "CRMAUTHZ_SNAPSHOTS"}
	early := startServer(t, t.TempDir(), natsArgs...)
	fake, priv, flags := hlSetup(t, srv.URL())
	c := startConnector(t, append([]string{"connect", "highlevel", "--webhook-addr", "127.0.0.1:0", "--reconcile-interval", "1h"}, flags...))
	late := startServer(t, t.TempDir(), natsArgs...)
	want := hlFakeOwners(fake)
	for name, p := range map[string]*proc{"early": early, "late": late} {
		eventually(t, name+" sidecar to hold the fake's owners", func() bool {
			_, m := exported(t, p)
			return fmt.Sprint(owners(m)) == fmt.Sprint(want)
		})
	}
	var id, loc string
	fake.Set(func(f *hlfake.Fake) {
		r := f.Records["contact"]["c-0-000"]
		id, loc = r.ID, r.Location
		r.AssignedTo = "u-0-09"
	})
	if code := signedWebhook(priv, c.webhook, "ContactUpdate", loc, id, "nats-1"); code != 200 {
		t.Fatalf("webhook: %d", code)
	}
	for name, p := range map[string]*proc{"early": early, "late": late} {
		eventually(t, "the webhook's change on the "+name+" sidecar", func() bool {
			_, m := exported(t, p)
			return owners(m)[id] == "u-0-09"
		})
	}
}
