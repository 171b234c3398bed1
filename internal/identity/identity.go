// Package identity finds the subject (the user id) of a request that a
// gateway asks crmauthz about: from a trusted header set by an authenticating
// gateway, or from a verified JWT bearer token.
//
// Precedence: when a JWT key is configured (an HS256 secret file, a JWKS file
// or both), every request must carry `Authorization: Bearer <token>` and the
// subject header is ignored, so a client cannot choose its identity by
// sending the header. Without a key, the subject is the value of the subject
// header (default X-User-Id), which the gateway in front must set itself and
// never pass through from clients.
//
// Every failure is an *Error: the caller answers 401 and never evaluates a
// policy for the request.
//
// Tokens: the algorithm is pinned by the key (HS256 only with the secret,
// RS256 only with RSA keys of the JWKS, ES256 only with P-256 keys), so "none"
// and HS/RS confusion are impossible; exp is required; exp and nbf are checked
// with Config.Leeway; iss and aud when configured. The subject is the string
// claim Config.SubjectClaim (default "sub").
package identity

import (
	"errors"
	"fmt"
	"net/textproto"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/net/http/httpguts"
)

// maxSubjectBytes is the longest subject accepted (the index's id limit).
const maxSubjectBytes = 512

// maxTokenBytes is the longest bearer token accepted.
const maxTokenBytes = 16 << 10

// minSecretBytes is the shortest HS256 secret accepted (RFC 7518 §3.2: a key
// of at least the hash's size, 256 bits).
const minSecretBytes = 32

// Config configures New.
type Config struct {
	// SubjectHeader is the trusted header that names the subject when no JWT
	// key is configured; default X-User-Id.
	SubjectHeader string
	// HS256SecretFile holds the HS256 secret (surrounding white space is
	// trimmed; at least 32 bytes).
	HS256SecretFile string
	// JWKSFile holds a JSON Web Key Set ({"keys": [...]}) with RSA (RS256,
	// at least 2048 bits) and EC P-256 (ES256) public keys.
	JWKSFile string
	// Leeway is the clock skew allowed when checking exp and nbf. Zero means
	// none (DefaultConfig's is 30s); negative is an error.
	Leeway time.Duration
	// Issuer, if set, must be the token's iss.
	Issuer string
	// Audience, if set, must be in the token's aud.
	Audience string
	// SubjectClaim names the string claim holding the subject; default "sub".
	SubjectClaim string
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// DefaultConfig returns the defaults: the X-User-Id header, the sub claim, a
// leeway of 30s. New fills in the header, claim and clock for zero fields
// (a zero Leeway stays none).
func DefaultConfig() Config {
	return Config{SubjectHeader: "X-User-Id", SubjectClaim: "sub",
		Leeway: 30 * time.Second, Now: time.Now}
}

// Headers gives the headers of the request being authorized.
type Headers interface {
	// Values returns every value of the header name (case-insensitive).
	Values(name string) []string
}

// MapHeaders adapts a map of lower-case header names to values (Envoy's
// attributes.request.http.headers) to Headers.
type MapHeaders map[string]string

// Values returns the value of name, looked up in lower case.
func (m MapHeaders) Values(name string) []string {
	if v, ok := m[strings.ToLower(name)]; ok {
		return []string{v}
	}
	return nil
}

// Error is a request without a usable identity: answer 401.
type Error struct {
	// Missing is true when no identity was given at all (no header, no token),
	// false when one was given but is not acceptable.
	Missing bool
	// Msg says what is wrong, for a person. It never contains the token.
	Msg string
}

func (e *Error) Error() string { return e.Msg }

func missing(format string, args ...any) *Error {
	return &Error{Missing: true, Msg: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) *Error {
	return &Error{Msg: fmt.Sprintf(format, args...)}
}

// Identifier finds the subject of requests. It is safe for concurrent use.
type Identifier struct {
	header string // canonical MIME header name
	claim  string
	jwt    *jwt.Parser // nil: header mode
	secret []byte      // HS256 key; nil when not configured
	keys   *keySet     // RS256/ES256 keys; nil when not configured
}

// New reads the key files and returns an Identifier. Without a key file it
// uses the subject header.
func New(cfg Config) (*Identifier, error) {
	d := DefaultConfig()
	if cfg.SubjectHeader == "" {
		cfg.SubjectHeader = d.SubjectHeader
	}
	if cfg.SubjectClaim == "" {
		cfg.SubjectClaim = d.SubjectClaim
	}
	if cfg.Now == nil {
		cfg.Now = d.Now
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("identity: the JWT leeway %s is negative", cfg.Leeway)
	}
	if !httpguts.ValidHeaderFieldName(cfg.SubjectHeader) {
		return nil, fmt.Errorf("identity: %q is not a valid header name", cfg.SubjectHeader)
	}
	id := &Identifier{header: textproto.CanonicalMIMEHeaderKey(cfg.SubjectHeader), claim: cfg.SubjectClaim}

	var methods []string
	if cfg.HS256SecretFile != "" {
		b, err := os.ReadFile(cfg.HS256SecretFile)
		if err != nil {
			return nil, fmt.Errorf("identity: HS256 secret: %w", err)
		}
		secret := []byte(strings.TrimSpace(string(b)))
		if len(secret) < minSecretBytes {
			return nil, fmt.Errorf("identity: the HS256 secret in %s has %d bytes; at least %d are required", cfg.HS256SecretFile, len(secret), minSecretBytes)
		}
		id.secret = secret
		methods = append(methods, "HS256")
	}
	if cfg.JWKSFile != "" {
		b, err := os.ReadFile(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("identity: JWKS: %w", err)
		}
		ks, err := parseJWKS(b)
		if err != nil {
			return nil, fmt.Errorf("identity: JWKS %s: %w", cfg.JWKSFile, err)
		}
		id.keys = ks
		methods = append(methods, ks.algs()...)
	}
	if id.secret == nil && id.keys == nil {
		if cfg.Issuer != "" || cfg.Audience != "" {
			return nil, errors.New("identity: a JWT issuer or audience is set, but no JWT key (HS256 secret file or JWKS file)")
		}
		return id, nil
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(cfg.Now),
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	id.jwt = jwt.NewParser(opts...)
	return id, nil
}

// Mode is "jwt" when a JWT key is configured, else "header".
func (id *Identifier) Mode() string {
	if id.jwt != nil {
		return "jwt"
	}
	return "header"
}

// SubjectHeader is the canonical name of the subject header (used only in
// header mode).
func (id *Identifier) SubjectHeader() string { return id.header }

// Subject returns the subject of a request with headers h, or an *Error.
func (id *Identifier) Subject(h Headers) (string, error) {
	if id.jwt != nil {
		return id.fromToken(h)
	}
	vals := h.Values(id.header)
	switch {
	case len(vals) == 0:
		return "", missing("no %s header", id.header)
	case len(vals) > 1:
		return "", invalid("the %s header is given %d times", id.header, len(vals))
	}
	s := strings.TrimSpace(vals[0])
	if s == "" {
		return "", missing("the %s header is empty", id.header)
	}
	if err := checkSubject(s); err != nil {
		return "", invalid("the %s header %v", id.header, err)
	}
	return s, nil
}

func (id *Identifier) fromToken(h Headers) (string, error) {
	vals := h.Values("Authorization")
	switch {
	case len(vals) == 0:
		return "", missing("no bearer token (Authorization: Bearer <JWT>)")
	case len(vals) > 1:
		return "", invalid("the Authorization header is given %d times", len(vals))
	}
	scheme, tok, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", invalid("the Authorization header is not a bearer token")
	}
	tok = strings.TrimSpace(tok)
	switch {
	case tok == "":
		return "", missing("the bearer token is empty")
	case len(tok) > maxTokenBytes:
		return "", invalid("the bearer token is longer than %d bytes", maxTokenBytes)
	}
	claims := jwt.MapClaims{}
	if _, err := id.jwt.ParseWithClaims(tok, claims, id.key); err != nil {
		return "", invalid("invalid bearer token: %s", tokenProblem(err))
	}
	v, ok := claims[id.claim]
	if !ok {
		return "", invalid("the token has no %q claim", id.claim)
	}
	s, ok := v.(string)
	if !ok {
		return "", invalid("the token's %q claim is not a string", id.claim)
	}
	if s == "" {
		return "", invalid("the token's %q claim is empty", id.claim)
	}
	if err := checkSubject(s); err != nil {
		return "", invalid("the token's %q claim %v", id.claim, err)
	}
	return s, nil
}

// key returns the verification key of t, pinned to t's algorithm: the HS256
// secret only for HS256, an RSA key only for RS256, a P-256 key only for
// ES256. The parser has already refused algorithms without keys.
func (id *Identifier) key(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	if alg == "HS256" {
		if id.secret == nil {
			return nil, errors.New("no HS256 secret is configured")
		}
		return id.secret, nil
	}
	if id.keys == nil {
		return nil, fmt.Errorf("no key for %s", alg)
	}
	var kid string
	if v, ok := t.Header["kid"]; ok {
		s, ok := v.(string)
		if !ok {
			return nil, errors.New("kid is not a string")
		}
		kid = s
	}
	return id.keys.lookup(alg, kid)
}

// tokenProblem names the problem of a rejected token without echoing it.
func tokenProblem(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "malformed"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "not valid yet (nbf)"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "a required claim is missing (" + err.Error() + ")"
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return "wrong issuer"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return "wrong audience"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return "bad signature or algorithm"
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return "no key to verify it (" + err.Error() + ")"
	case errors.Is(err, jwt.ErrTokenInvalidClaims):
		return "invalid claims"
	}
	return "rejected"
}

// checkSubject refuses subjects the index cannot hold and that would be
// unsafe to log: too long, not UTF-8, control characters.
func checkSubject(s string) error {
	if len(s) > maxSubjectBytes {
		return fmt.Errorf("is longer than %d bytes", maxSubjectBytes)
	}
	if !utf8.ValidString(s) {
		return errors.New("is not UTF-8")
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return errors.New("holds a control character")
		}
	}
	return nil
}
