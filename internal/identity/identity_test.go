package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func clock() time.Time { return now }

const secret = "0123456789abcdef0123456789abcdef-test-secret"

// keys are generated once for the package: RSA generation is slow.
var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	rsaKey2  *rsa.PrivateKey
	ecKey    *ecdsa.PrivateKey
)

func testKeys(tb testing.TB) {
	tb.Helper()
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if rsaKey2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if ecKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
	})
}

func writeFile(tb testing.TB, name, content string) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}

func rsaJWK(kid string, k *rsa.PublicKey) map[string]any {
	return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": base64.RawURLEncoding.EncodeToString(k.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(kid string, k *ecdsa.PrivateKey) map[string]any {
	b, err := k.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		panic(err)
	}
	return map[string]any{"kty": "EC", "kid": kid, "crv": "P-256",
		"x": base64.RawURLEncoding.EncodeToString(b[1:33]),
		"y": base64.RawURLEncoding.EncodeToString(b[33:])}
}

func jwksFile(tb testing.TB, keys ...map[string]any) string {
	tb.Helper()
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		tb.Fatal(err)
	}
	return writeFile(tb, "jwks.json", string(b))
}

// sign makes a token; kid "" leaves the kid out.
func sign(tb testing.TB, method jwt.SigningMethod, key any, kid string, claims jwt.MapClaims) string {
	tb.Helper()
	t := jwt.NewWithClaims(method, claims)
	if kid != "" {
		t.Header["kid"] = kid
	}
	s, err := t.SignedString(key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func claims(sub string, exp time.Time) jwt.MapClaims {
	return jwt.MapClaims{"sub": sub, "exp": exp.Unix()}
}

func bearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

func newID(tb testing.TB, cfg Config) *Identifier {
	tb.Helper()
	cfg.Now = clock
	id, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

func TestHeaderMode(t *testing.T) {
	id := newID(t, Config{})
	if id.Mode() != "header" || id.SubjectHeader() != "X-User-Id" {
		t.Fatalf("mode %s header %s", id.Mode(), id.SubjectHeader())
	}
	cases := []struct {
		name    string
		h       Headers
		want    string
		missing bool // a *Error with Missing
		invalid bool // a *Error without Missing
	}{
		{name: "set", h: http.Header{"X-User-Id": {"u-1"}}, want: "u-1"},
		{name: "spaces trimmed", h: http.Header{"X-User-Id": {"  u-1 "}}, want: "u-1"},
		{name: "Envoy map, lower case", h: MapHeaders{"x-user-id": "u-2"}, want: "u-2"},
		{name: "absent", h: http.Header{}, missing: true},
		{name: "absent from map", h: MapHeaders{"authorization": "Bearer x"}, missing: true},
		{name: "empty", h: http.Header{"X-User-Id": {""}}, missing: true},
		{name: "twice", h: http.Header{"X-User-Id": {"u-1", "u-2"}}, invalid: true},
		{name: "control character", h: http.Header{"X-User-Id": {"u-1\x00"}}, invalid: true},
		{name: "too long", h: http.Header{"X-User-Id": {strings.Repeat("u", 513)}}, invalid: true},
		{name: "not UTF-8", h: http.Header{"X-User-Id": {"u-\xff"}}, invalid: true},
		{name: "a token is not used", h: http.Header{"Authorization": {"Bearer abc"}}, missing: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := id.Subject(tc.h)
			checkResult(t, got, err, tc.want, tc.missing, tc.invalid)
		})
	}
}

func TestCustomSubjectHeader(t *testing.T) {
	id := newID(t, Config{SubjectHeader: "x-auth-request-user"})
	got, err := id.Subject(http.Header{"X-Auth-Request-User": {"u-9"}})
	if err != nil || got != "u-9" {
		t.Fatalf("got %q %v", got, err)
	}
	if _, err := id.Subject(http.Header{"X-User-Id": {"u-9"}}); err == nil {
		t.Fatal("the default header is still read")
	}
}

func checkResult(t testing.TB, got string, err error, want string, isMissing, isInvalid bool) {
	t.Helper()
	var ie *Error
	switch {
	case isMissing || isInvalid:
		if !errors.As(err, &ie) {
			t.Fatalf("got %q, %v; want an *Error", got, err)
		}
		if ie.Missing != isMissing {
			t.Fatalf("Missing = %v, want %v (%v)", ie.Missing, isMissing, err)
		}
		if got != "" {
			t.Fatalf("a subject %q with an error", got)
		}
	case err != nil:
		t.Fatalf("unexpected error %v", err)
	case got != want:
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestHS256(t *testing.T) {
	testKeys(t)
	id := newID(t, Config{HS256SecretFile: writeFile(t, "secret", secret+"\n"), Leeway: 30 * time.Second})
	if id.Mode() != "jwt" {
		t.Fatalf("mode %s", id.Mode())
	}
	hs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, []byte(secret), "", c) }
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&rsaKey.PublicKey))})
	cases := []struct {
		name             string
		h                http.Header
		want             string
		missing, invalid bool
	}{
		{name: "valid", h: bearer(hs(claims("u-1", now.Add(time.Hour)))), want: "u-1"},
		{name: "scheme in lower case", h: http.Header{"Authorization": {"bearer " + hs(claims("u-1", now.Add(time.Hour)))}}, want: "u-1"},
		{name: "expired within the leeway", h: bearer(hs(claims("u-1", now.Add(-20*time.Second)))), want: "u-1"},
		{name: "expired beyond the leeway", h: bearer(hs(claims("u-1", now.Add(-31*time.Second)))), invalid: true},
		{name: "nbf within the leeway", h: bearer(hs(jwt.MapClaims{"sub": "u-1", "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(20 * time.Second).Unix()})), want: "u-1"},
		{name: "nbf beyond the leeway", h: bearer(hs(jwt.MapClaims{"sub": "u-1", "exp": now.Add(time.Hour).Unix(), "nbf": now.Add(time.Minute).Unix()})), invalid: true},
		{name: "no exp", h: bearer(hs(jwt.MapClaims{"sub": "u-1"})), invalid: true},
		{name: "exp not a number", h: bearer(hs(jwt.MapClaims{"sub": "u-1", "exp": "tomorrow"})), invalid: true},
		{name: "wrong secret", h: bearer(sign(t, jwt.SigningMethodHS256, []byte(secret+"x"), "", claims("u-1", now.Add(time.Hour)))), invalid: true},
		{name: "HS384 is not accepted", h: bearer(sign(t, jwt.SigningMethodHS384, []byte(secret), "", claims("u-1", now.Add(time.Hour)))), invalid: true},
		{name: "alg none", h: bearer(sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "", claims("u-1", now.Add(time.Hour)))), invalid: true},
		{name: "RS256 without a JWKS", h: bearer(sign(t, jwt.SigningMethodRS256, rsaKey, "", claims("u-1", now.Add(time.Hour)))), invalid: true},
		{name: "HS256 signed with an RSA public key", h: bearer(sign(t, jwt.SigningMethodHS256, rsaPEM, "", claims("u-1", now.Add(time.Hour)))), invalid: true},
		{name: "no sub", h: bearer(hs(jwt.MapClaims{"exp": now.Add(time.Hour).Unix()})), invalid: true},
		{name: "sub not a string", h: bearer(hs(jwt.MapClaims{"sub": 42, "exp": now.Add(time.Hour).Unix()})), invalid: true},
		{name: "sub empty", h: bearer(hs(claims("", now.Add(time.Hour)))), invalid: true},
		{name: "sub with a control character", h: bearer(hs(claims("u\n1", now.Add(time.Hour)))), invalid: true},
		{name: "no Authorization", h: http.Header{}, missing: true},
		{name: "the subject header is ignored", h: http.Header{"X-User-Id": {"u-1"}}, missing: true},
		{name: "header and token: the token decides", h: http.Header{"X-User-Id": {"u-admin"}, "Authorization": {"Bearer " + hs(claims("u-1", now.Add(time.Hour)))}}, want: "u-1"},
		{name: "empty bearer", h: http.Header{"Authorization": {"Bearer "}}, missing: true},
		{name: "basic auth", h: http.Header{"Authorization": {"Basic dTpw"}}, invalid: true},
		{name: "two Authorization headers", h: http.Header{"Authorization": {"Bearer a", "Bearer b"}}, invalid: true},
		{name: "garbage", h: bearer("not.a.jwt"), invalid: true},
		{name: "too long", h: bearer(strings.Repeat("a", 17<<10)), invalid: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := id.Subject(tc.h)
			checkResult(t, got, err, tc.want, tc.missing, tc.invalid)
			if err != nil && strings.Contains(err.Error(), ".ey") {
				t.Fatalf("the error echoes the token: %v", err)
			}
		})
	}
}

func TestIssuerAudienceAndClaim(t *testing.T) {
	id := newID(t, Config{HS256SecretFile: writeFile(t, "secret", secret), Issuer: "https://idp.example",
		Audience: "crm-api", SubjectClaim: "user_id"})
	good := jwt.MapClaims{"user_id": "u-7", "sub": "ignored", "iss": "https://idp.example", "aud": []string{"other", "crm-api"}, "exp": now.Add(time.Hour).Unix()}
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for kk, vv := range good {
			c[kk] = vv
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	cases := []struct {
		name    string
		c       jwt.MapClaims
		want    string
		invalid bool
	}{
		{name: "valid", c: good, want: "u-7"},
		{name: "aud as a string", c: with("aud", "crm-api"), want: "u-7"},
		{name: "wrong issuer", c: with("iss", "https://evil.example"), invalid: true},
		{name: "no issuer", c: with("iss", nil), invalid: true},
		{name: "wrong audience", c: with("aud", "billing"), invalid: true},
		{name: "no audience", c: with("aud", nil), invalid: true},
		{name: "no subject claim", c: with("user_id", nil), invalid: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := id.Subject(bearer(sign(t, jwt.SigningMethodHS256, []byte(secret), "", tc.c)))
			checkResult(t, got, err, tc.want, false, tc.invalid)
		})
	}
}

func TestJWKS(t *testing.T) {
	testKeys(t)
	file := jwksFile(t, rsaJWK("r1", &rsaKey.PublicKey), rsaJWK("r2", &rsaKey2.PublicKey), ecJWK("e1", ecKey),
		map[string]any{"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}, // skipped: encryption
		map[string]any{"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AAAA"})           // skipped: type
	id := newID(t, Config{JWKSFile: file})
	exp := now.Add(time.Hour)
	rsaPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&rsaKey.PublicKey))})
	cases := []struct {
		name    string
		tok     string
		want    string
		invalid bool
	}{
		{name: "RS256 kid r1", tok: sign(t, jwt.SigningMethodRS256, rsaKey, "r1", claims("u-1", exp)), want: "u-1"},
		{name: "RS256 kid r2", tok: sign(t, jwt.SigningMethodRS256, rsaKey2, "r2", claims("u-2", exp)), want: "u-2"},
		{name: "ES256 kid e1", tok: sign(t, jwt.SigningMethodES256, ecKey, "e1", claims("u-3", exp)), want: "u-3"},
		{name: "ES256 without kid, one EC key", tok: sign(t, jwt.SigningMethodES256, ecKey, "", claims("u-3", exp)), want: "u-3"},
		{name: "RS256 without kid, two RSA keys", tok: sign(t, jwt.SigningMethodRS256, rsaKey, "", claims("u-1", exp)), invalid: true},
		{name: "RS256 signed by r2's key with kid r1", tok: sign(t, jwt.SigningMethodRS256, rsaKey2, "r1", claims("u-1", exp)), invalid: true},
		{name: "unknown kid", tok: sign(t, jwt.SigningMethodRS256, rsaKey, "r9", claims("u-1", exp)), invalid: true},
		{name: "kid of an EC key on an RS256 token", tok: sign(t, jwt.SigningMethodRS256, rsaKey, "e1", claims("u-1", exp)), invalid: true},
		{name: "HS256 with the RSA public key as secret", tok: sign(t, jwt.SigningMethodHS256, rsaPEM, "r1", claims("u-1", exp)), invalid: true},
		{name: "PS256 is not accepted", tok: sign(t, jwt.SigningMethodPS256, rsaKey, "r1", claims("u-1", exp)), invalid: true},
		{name: "ES384 is not accepted", tok: sign(t, jwt.SigningMethodES384, mustEC(elliptic.P384()), "e1", claims("u-1", exp)), invalid: true},
		{name: "alg none", tok: sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, "r1", claims("u-1", exp)), invalid: true},
		{name: "expired", tok: sign(t, jwt.SigningMethodES256, ecKey, "e1", claims("u-3", now.Add(-time.Second))), invalid: true},
		{name: "kid not a string", tok: func() string {
			tk := jwt.NewWithClaims(jwt.SigningMethodES256, claims("u-3", exp))
			tk.Header["kid"] = 7
			s, _ := tk.SignedString(ecKey)
			return s
		}(), invalid: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := id.Subject(bearer(tc.tok))
			checkResult(t, got, err, tc.want, false, tc.invalid)
		})
	}
}

func TestSecretAndJWKSTogether(t *testing.T) {
	testKeys(t)
	id := newID(t, Config{HS256SecretFile: writeFile(t, "secret", secret), JWKSFile: jwksFile(t, rsaJWK("r1", &rsaKey.PublicKey))})
	exp := now.Add(time.Hour)
	for _, tc := range []struct {
		name string
		tok  string
		ok   bool
	}{
		{"HS256", sign(t, jwt.SigningMethodHS256, []byte(secret), "", claims("u-1", exp)), true},
		{"RS256", sign(t, jwt.SigningMethodRS256, rsaKey, "r1", claims("u-1", exp)), true},
		{"HS256 signed with the RSA key's PEM", sign(t, jwt.SigningMethodHS256,
			pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: must(x509.MarshalPKIXPublicKey(&rsaKey.PublicKey))}), "r1", claims("u-1", exp)), false},
		{"ES256 without EC keys", sign(t, jwt.SigningMethodES256, mustEC(elliptic.P256()), "", claims("u-1", exp)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := id.Subject(bearer(tc.tok))
			if (err == nil) != tc.ok {
				t.Fatalf("got %q %v, want ok=%v", got, err, tc.ok)
			}
		})
	}
}

func TestNewErrors(t *testing.T) {
	testKeys(t)
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	priv := ecJWK("p", ecKey)
	priv["d"] = "AAAA"
	bad := ecJWK("b", ecKey)
	bad["x"] = "!!"
	offCurve := ecJWK("o", ecKey)
	offCurve["y"] = base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	evenE := rsaJWK("e", &rsaKey.PublicKey)
	evenE["e"] = "Ag"
	cases := []struct {
		name string
		cfg  Config
		want string
	}{
		{"negative leeway", Config{Leeway: -time.Second}, "negative"},
		{"bad header name", Config{SubjectHeader: "X User"}, "not a valid header name"},
		{"issuer without a key", Config{Issuer: "x"}, "no JWT key"},
		{"missing secret file", Config{HS256SecretFile: filepath.Join(t.TempDir(), "nope")}, "HS256 secret"},
		{"short secret", Config{HS256SecretFile: writeFile(t, "s", "short\n")}, "at least 32"},
		{"missing JWKS", Config{JWKSFile: filepath.Join(t.TempDir(), "nope")}, "JWKS"},
		{"JWKS not JSON", Config{JWKSFile: writeFile(t, "j", "{")}, "not a JSON Web Key Set"},
		{"JWKS without keys", Config{JWKSFile: writeFile(t, "j", `{"kty":"RSA"}`)}, `no "keys"`},
		{"JWKS without usable keys", Config{JWKSFile: jwksFile(t, map[string]any{"kty": "oct", "k": "AAAA"})}, "no RS256"},
		{"small RSA key", Config{JWKSFile: jwksFile(t, rsaJWK("s", &small.PublicKey))}, "at least 2048"},
		{"private key", Config{JWKSFile: jwksFile(t, priv)}, "private key"},
		{"bad base64", Config{JWKSFile: jwksFile(t, bad)}, "base64url"},
		{"point off the curve", Config{JWKSFile: jwksFile(t, offCurve)}, "P-256"},
		{"even exponent", Config{JWKSFile: jwksFile(t, evenE)}, "exponent"},
		{"duplicate kid", Config{JWKSFile: jwksFile(t, rsaJWK("k", &rsaKey.PublicKey), ecJWK("k", ecKey))}, "twice"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func mustEC(c elliptic.Curve) *ecdsa.PrivateKey {
	return must(ecdsa.GenerateKey(c, rand.Reader))
}
