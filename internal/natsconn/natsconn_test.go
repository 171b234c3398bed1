package natsconn

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCheckURL(t *testing.T) {
	for _, tc := range []struct {
		url, err string
	}{
		{"nats://127.0.0.1:4222", ""},
		{"tls://a:4222, nats://b:4222", ""},
		{"", "empty"},
		{"http://127.0.0.1:4222", "nats:// or tls://"},
		{"nats://", "no host"},
		{"nats://u:secret@", "no host"},
	} {
		t.Run(tc.url, func(t *testing.T) {
			err := CheckURL(tc.url)
			if tc.err == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one saying %q", err, tc.err)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("the error shows the password: %v", err)
			}
		})
	}
}

func TestRedact(t *testing.T) {
	got := Redact("nats://crm:secret@a:4222,tls://b:4222")
	if strings.Contains(got, "secret") || strings.Contains(got, "crm:") || !strings.Contains(got, "tls://b:4222") {
		t.Errorf("Redact = %q", got)
	}
}

// TestBackoff: doubling from min, capped at max, within ±20% jitter.
func TestBackoff(t *testing.T) {
	min, max := 100*time.Millisecond, time.Second
	for attempt, want := range map[int]time.Duration{1: min, 2: 2 * min, 4: 8 * min, 10: max} {
		for range 50 {
			d := Backoff(attempt, min, max)
			if d < want*8/10 || d > want*12/10 || d > max {
				t.Fatalf("Backoff(%d) = %s, want %s ±20%% and at most %s", attempt, d, want, max)
			}
		}
	}
}

func TestAuthOptions(t *testing.T) {
	dir := t.TempDir()
	file := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name string
		auth Auth
		err  string
	}{
		{"none", Auth{}, ""},
		{"token", Auth{TokenFile: file("tok", "s3cret\n")}, ""},
		{"blank token", Auth{TokenFile: file("blank", " \n")}, "is empty"},
		{"two ways", Auth{TokenFile: "t", User: "u", PasswordFile: "p"}, "only one"},
		{"user without password", Auth{User: "u"}, "password file"},
		{"certificate without key", Auth{TLSCert: "c.pem"}, "its key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := tc.auth.Options()
			if tc.err == "" {
				if err != nil || len(opts) == 0 {
					t.Fatalf("Options() = %d options, %v", len(opts), err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("error %v, want one saying %q", err, tc.err)
			}
		})
	}
}
