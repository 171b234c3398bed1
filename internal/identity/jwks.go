package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
)

// minRSABits is the smallest RSA key accepted.
const minRSABits = 2048

// jwk is one key of a JSON Web Key Set (RFC 7517), the public fields crmauthz uses.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	// RSA
	N string `json:"n"`
	E string `json:"e"`
	// EC
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	// private parts: refused (a sidecar needs only public keys)
	D string `json:"d"`
}

// verifyKey is one usable key: its id and algorithm and the public key.
type verifyKey struct {
	kid string
	alg string // RS256 or ES256
	key any    // *rsa.PublicKey or *ecdsa.PublicKey
}

type keySet struct {
	keys []verifyKey
}

// parseJWKS reads {"keys": [...]}. Keys for encryption (use "enc") and of
// other types or curves are skipped; a key crmauthz could use but that is
// malformed, too small, private or a duplicate kid is an error, and so is a
// set without any usable key.
func parseJWKS(b []byte) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`not a JSON Web Key Set: no "keys" array`)
	}
	ks := &keySet{}
	seen := map[string]bool{}
	for i, raw := range doc.Keys {
		var k jwk
		if err := json.Unmarshal(raw, &k); err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		name := fmt.Sprintf("key %d", i)
		if k.Kid != "" {
			name = fmt.Sprintf("key %d (kid %q)", i, k.Kid)
		}
		if k.Use != "" && k.Use != "sig" {
			continue // an encryption key
		}
		vk, ok, err := k.verifyKey()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if !ok {
			continue // a type or curve crmauthz does not verify with
		}
		if seen[k.Kid] {
			return nil, fmt.Errorf("%s: the kid is used twice", name)
		}
		seen[k.Kid] = true
		ks.keys = append(ks.keys, vk)
	}
	if len(ks.keys) == 0 {
		return nil, errors.New("no RS256 (RSA) or ES256 (EC P-256) signing key in the set")
	}
	return ks, nil
}

// verifyKey converts k; ok is false for a key of a type crmauthz does not use.
func (k jwk) verifyKey() (verifyKey, bool, error) {
	switch {
	case k.Kty == "RSA":
		if k.Alg != "" && k.Alg != "RS256" {
			return verifyKey{}, false, nil
		}
		if k.D != "" {
			return verifyKey{}, false, errors.New(`holds a private key ("d"); give the public keys only`)
		}
		n, err := b64(k.N, "n")
		if err != nil {
			return verifyKey{}, false, err
		}
		e, err := b64(k.E, "e")
		if err != nil {
			return verifyKey{}, false, err
		}
		if len(e) == 0 || len(e) > 4 {
			return verifyKey{}, false, errors.New(`"e" is not a valid RSA exponent`)
		}
		exp := new(big.Int).SetBytes(e)
		if !exp.IsInt64() || exp.Int64() < 3 || exp.Int64()%2 == 0 || exp.Int64() > 1<<31-1 {
			return verifyKey{}, false, errors.New(`"e" is not a valid RSA exponent`)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp.Int64())}
		if pub.N.BitLen() < minRSABits {
			return verifyKey{}, false, fmt.Errorf("the RSA key has %d bits; at least %d are required", pub.N.BitLen(), minRSABits)
		}
		return verifyKey{kid: k.Kid, alg: "RS256", key: pub}, true, nil
	case k.Kty == "EC" && k.Crv == "P-256":
		if k.Alg != "" && k.Alg != "ES256" {
			return verifyKey{}, false, nil
		}
		if k.D != "" {
			return verifyKey{}, false, errors.New(`holds a private key ("d"); give the public keys only`)
		}
		x, err := b64(k.X, "x")
		if err != nil {
			return verifyKey{}, false, err
		}
		y, err := b64(k.Y, "y")
		if err != nil {
			return verifyKey{}, false, err
		}
		if len(x) != 32 || len(y) != 32 {
			return verifyKey{}, false, errors.New(`"x" and "y" of a P-256 key must be 32 bytes each`)
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
		if err != nil {
			return verifyKey{}, false, fmt.Errorf("not a P-256 public key: %w", err)
		}
		return verifyKey{kid: k.Kid, alg: "ES256", key: pub}, true, nil
	}
	return verifyKey{}, false, nil
}

func b64(s, field string) ([]byte, error) {
	if s == "" {
		return nil, fmt.Errorf("%q is missing", field)
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil {
		return nil, fmt.Errorf("%q is not base64url: %w", field, err)
	}
	return b, nil
}

// algs lists the algorithms the set has keys for.
func (ks *keySet) algs() []string {
	var out []string
	for _, alg := range []string{"RS256", "ES256"} {
		for _, k := range ks.keys {
			if k.alg == alg {
				out = append(out, alg)
				break
			}
		}
	}
	return out
}

// lookup returns the key of alg with kid. A token without a kid is accepted
// only when the set has exactly one key for alg.
func (ks *keySet) lookup(alg, kid string) (any, error) {
	var only *verifyKey
	n := 0
	for i := range ks.keys {
		k := &ks.keys[i]
		if k.alg != alg {
			continue
		}
		if kid != "" && k.kid == kid {
			return k.key, nil
		}
		only = k
		n++
	}
	switch {
	case kid != "":
		return nil, fmt.Errorf("no %s key with kid %q", alg, kid)
	case n == 1:
		return only.key, nil
	case n == 0:
		return nil, fmt.Errorf("no %s key", alg)
	}
	return nil, fmt.Errorf("the token has no kid and the JWKS has %d %s keys", n, alg)
}
