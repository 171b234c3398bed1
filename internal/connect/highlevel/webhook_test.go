package highlevel

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"
)

func body(fields map[string]any) []byte {
	b, _ := json.Marshal(fields)
	return b
}

func fields(typ string, age time.Duration) map[string]any {
	return map[string]any{"type": typ, "locationId": "loc-0", "id": "c-1", "webhookId": "wh-" + typ + age.String(),
		"timestamp": time.Now().Add(-age).UTC().Format(time.RFC3339)}
}

func without(m map[string]any, k string) map[string]any {
	delete(m, k)
	return m
}

func with(m map[string]any, k string, v any) map[string]any {
	m[k] = v
	return m
}

// TestBadWebhooks: every webhook of docs/highlevel.md's table gets its status and code, and
// the rejected ones leave no work behind.
func TestBadWebhooks(t *testing.T) {
	e := newEnv(t, 1)
	c, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := httptest.NewServer(c.WebhookHandler())
	defer srv.Close()
	_, otherKey, _ := ed25519.GenerateKey(nil)
	good := body(fields("ContactUpdate", 0))
	big := body(with(fields("ContactUpdate", 0), "pad", strings.Repeat("x", 1<<20)))
	cases := []struct {
		name    string
		body    []byte
		hdr     map[string]string
		code    int
		errCode string
		reply   string // the key of a 200's {"…": true}
		queued  bool
	}{
		{"no signature", good, map[string]string{}, 401, "invalid_signature", "", false},
		{"signature of another key", good, map[string]string{"X-GHL-Signature": base64.StdEncoding.EncodeToString(ed25519.Sign(otherKey, good))}, 401, "invalid_signature", "", false},
		{"signature of another body", good, sign(append([]byte(" "), good...)), 401, "invalid_signature", "", false},
		{"signature not base64", good, map[string]string{"X-GHL-Signature": "%%%"}, 401, "invalid_signature", "", false},
		{"bad Ed25519 beside a good RSA", good, map[string]string{"X-GHL-Signature": "AAAA", "X-WH-Signature": signRSA(t, good)["X-WH-Signature"]}, 401, "invalid_signature", "", false},
		{"RSA of another body", good, signRSA(t, []byte("{}")), 401, "invalid_signature", "", false},
		{"over 1 MiB", big, sign(big), 400, "invalid_webhook", "", false},
		{"not JSON", []byte("not json"), sign([]byte("not json")), 400, "invalid_webhook", "", false},
		{"a JSON array", []byte("[1]"), sign([]byte("[1]")), 400, "invalid_webhook", "", false},
		{"no webhookId", body(without(fields("ContactUpdate", 0), "webhookId")), nil, 400, "invalid_webhook", "", false},
		{"webhookId over 512 bytes", body(with(fields("ContactUpdate", 0), "webhookId", strings.Repeat("w", 513))), nil, 400, "invalid_webhook", "", false},
		{"no type", body(without(fields("ContactUpdate", 0), "type")), nil, 400, "invalid_webhook", "", false},
		{"no timestamp", body(without(fields("ContactUpdate", 0), "timestamp")), nil, 400, "invalid_webhook", "", false},
		{"timestamp not RFC 3339", body(with(fields("ContactUpdate", 0), "timestamp", "yesterday")), nil, 400, "invalid_webhook", "", false},
		{"no locationId nor companyId", body(without(fields("ContactUpdate", 0), "locationId")), nil, 400, "invalid_webhook", "", false},
		{"no id", body(without(fields("ContactUpdate", time.Second), "id")), nil, 400, "invalid_webhook", "", false},
		{"6 minutes old", body(fields("ContactUpdate", 6*time.Minute)), nil, 400, "stale_webhook", "", false},
		{"2 minutes ahead", body(fields("ContactUpdate", -2*time.Minute)), nil, 400, "stale_webhook", "", false},
		{"another location", body(with(fields("ContactUpdate", 2*time.Second), "locationId", "loc-9")), nil, 200, "", "ignored", false},
		{"a type it does not use", body(fields("NoteCreate", 0)), nil, 200, "", "ignored", false},
		{"an agency user of another company", body(with(without(fields("UserCreate", 0), "locationId"), "companyId", "co-2")), nil, 200, "", "ignored", false},
		{"good", good, nil, 200, "", "accepted", true},
		{"good again", good, nil, 200, "", "duplicate", false},
		{"legacy RSA", body(fields("OpportunityDelete", 0)), map[string]string{"rsa": "1"}, 200, "", "accepted", true},
		{"an agency user", body(with(without(fields("UserCreate", 3*time.Second), "locationId"), "companyId", "co-1")), nil, 200, "", "accepted", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hdr := tc.hdr
			switch {
			case hdr == nil:
				hdr = sign(tc.body)
			case hdr["rsa"] == "1":
				hdr = signRSA(t, tc.body)
			}
			before := c.st.pending()
			code, out := post(t, srv.URL, tc.body, hdr)
			if code != tc.code || errCode(out) != tc.errCode || (tc.reply != "" && out[tc.reply] != true) {
				t.Fatalf("got %d %v, want %d %q %q", code, out, tc.code, tc.errCode, tc.reply)
			}
			if tc.errCode != "" {
				if msg, _ := out["error"].(map[string]any)["message"].(string); msg == "" {
					t.Fatal("an error without a message")
				}
			}
			if queued := c.st.pending() > before; queued != tc.queued {
				t.Fatalf("queued %v, want %v", queued, tc.queued)
			}
		})
	}
	t.Run("GET", func(t *testing.T) {
		resp, err := http.Get(srv.URL + WebhookPath)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 405 {
			t.Fatalf("GET: %d", resp.StatusCode)
		}
	})
}

// TestLegacyRSAOff: with --webhook-legacy-rsa=false an X-WH-Signature alone is refused.
func TestLegacyRSAOff(t *testing.T) {
	e := newEnv(t, 1)
	e.cfg.LegacyRSA = false
	c, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := httptest.NewServer(c.WebhookHandler())
	defer srv.Close()
	b := body(fields("ContactUpdate", 0))
	if code, out := post(t, srv.URL, b, signRSA(t, b)); code != 401 || errCode(out) != "invalid_signature" {
		t.Fatalf("%d %v", code, out)
	}
	if code, out := post(t, srv.URL, b, sign(b)); code != 200 || out["accepted"] != true {
		t.Fatalf("%d %v", code, out)
	}
}

// TestBackedUp: past --max-pending refreshes a webhook is a 429 with Retry-After, and a newer
// webhook for an object already waiting still replaces it.
func TestBackedUp(t *testing.T) {
	e := newEnv(t, 1)
	e.cfg.MaxPending = 2
	c, err := New(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := httptest.NewServer(c.WebhookHandler())
	defer srv.Close()
	for i, id := range []string{"c-1", "c-2", "c-3", "c-1"} {
		b := hook("ContactUpdate", "loc-0", id)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+WebhookPath, strings.NewReader(string(b)))
		req.Header.Set("X-GHL-Signature", sign(b)["X-GHL-Signature"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := 200
		if i == 2 {
			want = 429
			if resp.Header.Get("Retry-After") == "" {
				t.Fatal("429 without Retry-After")
			}
		}
		if resp.StatusCode != want {
			t.Fatalf("webhook %d (%s): %d, want %d", i, id, resp.StatusCode, want)
		}
	}
	if n := c.st.pending(); n != 2 {
		t.Fatalf("pending %d, want 2", n)
	}
}

// TestTokenFileReread: a token file that changes is read again.
func TestTokenFileReread(t *testing.T) {
	dir := t.TempDir()
	tk := &tokens{file: dir + "/tok"}
	for _, want := range []string{"one", "second-token"} {
		if err := writeFile(dir+"/tok", want+"\n"); err != nil {
			t.Fatal(err)
		}
		got, err := tk.get("loc-0")
		if err != nil || got != want {
			t.Fatalf("got %q %v, want %q", got, err, want)
		}
	}
	if err := writeFile(dir+"/tok", "two tokens\n"); err != nil {
		t.Fatal(err)
	}
	if _, err := tk.get("loc-0"); err == nil {
		t.Fatal("a file of two words taken as a token")
	}
	td := &tokens{dir: dir}
	if _, err := td.get("../etc"); err == nil {
		t.Fatal("a location id with a slash read a file outside the token dir")
	}
}

func writeFile(path, s string) error { return os.WriteFile(path, []byte(s), 0o600) }
