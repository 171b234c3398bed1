// Package natsconn is what every NATS client of crmauthz shares: the URL check and its
// redaction, the credentials and TLS files (Auth), and the reconnection backoff. The reader
// (internal/natssource), the publisher (cmd/crmauthz publish) and the connectors' NATS sink
// (internal/connect/sink) import it; it imports no package of this module.
package natsconn

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Auth and TLS of a NATS connection. At most one of CredsFile, User (with
// PasswordFile) and TokenFile. Secrets are read from files, never flags, so
// they stay out of process listings.
type Auth struct {
	// CredsFile is a NATS credentials file (user JWT and NKey seed).
	CredsFile string
	// User and PasswordFile: user/password authentication.
	User, PasswordFile string
	// TokenFile holds a token (authorization token).
	TokenFile string
	// TLSCA is a PEM file of the CAs that sign the server's certificate
	// (default: the system's roots, when the URL is tls:// or the server
	// requires TLS).
	TLSCA string
	// TLSCert and TLSKey are the client certificate and key, for servers
	// that verify clients (mutual TLS).
	TLSCert, TLSKey string
}

// CheckURL checks a server URL list (comma-separated, as nats.Connect
// takes it): every URL must be nats:// or tls:// with a host.
func CheckURL(raw string) error {
	if strings.TrimSpace(raw) == "" {
		return errors.New("the NATS URL is empty")
	}
	for _, one := range strings.Split(raw, ",") {
		u, err := url.Parse(strings.TrimSpace(one))
		if err != nil {
			return fmt.Errorf("NATS URL %q: %w", Redact(one), err)
		}
		if u.Scheme != "nats" && u.Scheme != "tls" {
			return fmt.Errorf("NATS URL %q: the scheme must be nats:// or tls://", Redact(one))
		}
		if u.Host == "" {
			return fmt.Errorf("NATS URL %q: no host", Redact(one))
		}
	}
	return nil
}

// Redact removes the user information (credentials) from a URL list, for
// logs and status replies.
func Redact(raw string) string {
	parts := strings.Split(raw, ",")
	for i, one := range parts {
		u, err := url.Parse(strings.TrimSpace(one))
		if err != nil {
			parts[i] = "(unparsable URL)"
			continue
		}
		if u.User != nil {
			u.User = url.User("REDACTED")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// Options turns a into nats.Connect options: credentials, TLS, and
// reconnects forever with backoff (100ms doubling to 10s, with jitter).
func (a Auth) Options() ([]nats.Option, error) {
	n := 0
	for _, set := range []bool{a.CredsFile != "", a.User != "" || a.PasswordFile != "", a.TokenFile != ""} {
		if set {
			n++
		}
	}
	if n > 1 {
		return nil, errors.New("give only one of a credentials file, a user and password file, or a token file")
	}
	opts := []nats.Option{
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(func(attempts int) time.Duration { return Backoff(attempts, 100*time.Millisecond, 10*time.Second) }),
		nats.Timeout(5 * time.Second),
	}
	switch {
	case a.CredsFile != "":
		if _, err := os.Stat(a.CredsFile); err != nil {
			return nil, fmt.Errorf("credentials file: %w", err)
		}
		opts = append(opts, nats.UserCredentials(a.CredsFile))
	case a.User != "" || a.PasswordFile != "":
		if a.User == "" || a.PasswordFile == "" {
			return nil, errors.New("a user needs a password file, and a password file a user")
		}
		pw, err := readSecret(a.PasswordFile, "password file")
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserInfo(a.User, pw))
	case a.TokenFile != "":
		tok, err := readSecret(a.TokenFile, "token file")
		if err != nil {
			return nil, err
		}
		opts = append(opts, nats.Token(tok))
	}
	if a.TLSCA != "" {
		if _, err := os.Stat(a.TLSCA); err != nil {
			return nil, fmt.Errorf("TLS CA file: %w", err)
		}
		opts = append(opts, nats.RootCAs(a.TLSCA))
	}
	if (a.TLSCert == "") != (a.TLSKey == "") {
		return nil, errors.New("a TLS client certificate needs its key, and a key its certificate")
	}
	if a.TLSCert != "" {
		for _, f := range []string{a.TLSCert, a.TLSKey} {
			if _, err := os.Stat(f); err != nil {
				return nil, fmt.Errorf("TLS client certificate: %w", err)
			}
		}
		opts = append(opts, nats.ClientCert(a.TLSCert, a.TLSKey))
	}
	return opts, nil
}

func readSecret(file, what string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s %s is empty", what, file)
	}
	return s, nil
}

// Backoff is the wait before retry number attempt (1-based): min doubled
// per attempt up to max, with ±20% jitter so a fleet does not retry in step.
func Backoff(attempt int, min, max time.Duration) time.Duration {
	d := min
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	d = time.Duration(float64(d) * (0.8 + 0.4*rand.Float64()))
	if d > max {
		d = max
	}
	return d
}
