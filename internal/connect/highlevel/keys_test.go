package highlevel

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"testing"
)

// TestBuiltInKeysPinned pins the SHA-256 of the built-in keys' PKIX (SubjectPublicKeyInfo) DER,
// so that an edit of keys.go that changes a key (a lost character, a pasted third-party copy
// with a typo) fails here. Where each key comes from is in docs/highlevel.md, "Where the
// built-in keys come from":
//   - RSA (X-WH-Signature): byte for byte the PEM block of docs/oauth/WebhookAuthentication.md
//     ("Webhook Authentication Guide") in GoHighLevel/highlevel-api-docs (the file is unchanged
//     since that repository's first commit, be089e5; checked at its commit 0af86a4).
//   - Ed25519 (X-GHL-Signature): HighLevel's "Webhook Integration Guide" (Marketplace developer
//     documentation). That guide is not in GoHighLevel/highlevel-api-docs, and its text could not
//     be read here; the key is the one every copy quoting that guide gives. Not verified against
//     HighLevel's own text: see docs/highlevel.md.
func TestBuiltInKeysPinned(t *testing.T) {
	ed, err := ParseEd25519PublicKey([]byte(defaultWebhookPublicKeyPEM))
	if err != nil {
		t.Fatalf("built-in Ed25519 key: %v", err)
	}
	rk, err := ParseRSAPublicKey([]byte(defaultWebhookLegacyKeyPEM))
	if err != nil {
		t.Fatalf("built-in RSA key: %v", err)
	}
	if got, want := hex.EncodeToString(ed), "8b61d1d6cacbe28d7c3bc0516bb815258ec6edbba96cddc7f40c09ac708388e8"; got != want {
		t.Errorf("Ed25519 raw key %s, want %s", got, want)
	}
	if rk.N.BitLen() != 4096 || rk.E != 65537 {
		t.Errorf("RSA key of %d bits, e=%d; want 4096 bits, e=65537", rk.N.BitLen(), rk.E)
	}
	for _, tc := range []struct {
		name string
		key  any
		want string
	}{
		{"ed25519", ed, "5a2c1b2749d3efcc233fb27d4ab43d56b8d20818c42cd226f6c9a3ff20d3097c"},
		{"rsa", rk, "2f62045d413b1b7747e26770ce7f57840cbf86288cd20ceb90d299a62501fd25"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			der, err := x509.MarshalPKIXPublicKey(tc.key)
			if err != nil {
				t.Fatal(err)
			}
			sum := sha256.Sum256(der)
			if got := hex.EncodeToString(sum[:]); got != tc.want {
				t.Fatalf("SHA-256 of the PKIX DER is %s, want %s", got, tc.want)
			}
		})
	}
}
