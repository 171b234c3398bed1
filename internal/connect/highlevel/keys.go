package highlevel

import (
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// defaultWebhookPublicKeyPEM is the Ed25519 key for X-GHL-Signature that HighLevel publishes in
// its "Webhook Integration Guide" (Marketplace developer documentation). That guide is not in
// GoHighLevel/highlevel-api-docs, and this key could not be checked against its text: it is the
// key every copy quoting the guide gives. See docs/highlevel.md, "Where the built-in keys come
// from"; keys_test.go pins its fingerprint.
const defaultWebhookPublicKeyPEM = `-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAi2HR1srL4o18O8BRa7gVJY7G7bupbN3H9AwJrHCDiOg=
-----END PUBLIC KEY-----
`

// defaultWebhookLegacyKeyPEM is HighLevel's published RSA key for the deprecated X-WH-Signature:
// byte for byte the PEM block of the "Webhook Authentication Guide",
// docs/oauth/WebhookAuthentication.md in GoHighLevel/highlevel-api-docs. See docs/highlevel.md;
// keys_test.go pins its fingerprint.
const defaultWebhookLegacyKeyPEM = `-----BEGIN PUBLIC KEY-----
MIICIjANBgkqhkiG9w0BAQEFAAOCAg8AMIICCgKCAgEAokvo/r9tVgcfZ5DysOSC
Frm602qYV0MaAiNnX9O8KxMbiyRKWeL9JpCpVpt4XHIcBOK4u3cLSqJGOLaPuXw6
dO0t6Q/ZVdAV5Phz+ZtzPL16iCGeK9po6D6JHBpbi989mmzMryUnQJezlYJ3DVfB
csedpinheNnyYeFXolrJvcsjDtfAeRx5ByHQmTnSdFUzuAnC9/GepgLT9SM4nCpv
uxmZMxrJt5Rw+VUaQ9B8JSvbMPpez4peKaJPZHBbU3OdeCVx5klVXXZQGNHOs8gF
3kvoV5rTnXV0IknLBXlcKKAQLZcY/Q9rG6Ifi9c+5vqlvHPCUJFT5XUGG5RKgOKU
J062fRtN+rLYZUV+BjafxQauvC8wSWeYja63VSUruvmNj8xkx2zE/Juc+yjLjTXp
IocmaiFeAO6fUtNjDeFVkhf5LNb59vECyrHD2SQIrhgXpO4Q3dVNA5rw576PwTzN
h/AMfHKIjE4xQA1SZuYJmNnmVZLIZBlQAF9Ntd03rfadZ+yDiOXCCs9FkHibELhC
HULgCsnuDJHcrGNd5/Ddm5hxGQ0ASitgHeMZ0kcIOwKDOzOU53lDza6/Y09T7sYJ
PQe7z0cvj7aE4B+Ax1ZoZGPzpJlZtGXCsu9aTEGEnKzmsFqwcSsnw3JB31IGKAyk
T1hhTiaCeIY/OwwwNUY2yvcCAwEAAQ==
-----END PUBLIC KEY-----
`

func pemBlock(raw []byte) ([]byte, error) {
	b, rest := pem.Decode(raw)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	if b.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("PEM block %q, want PUBLIC KEY", b.Type)
	}
	if len(rest) > 0 {
		if b2, _ := pem.Decode(rest); b2 != nil {
			return nil, errors.New("more than one PEM block")
		}
	}
	return b.Bytes, nil
}

// ParseEd25519PublicKey reads a PEM "PUBLIC KEY" (PKIX) holding an Ed25519 key.
func ParseEd25519PublicKey(raw []byte) (ed25519.PublicKey, error) {
	der, err := pemBlock(raw)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, err
	}
	ek, ok := k.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an Ed25519 key", k)
	}
	return ek, nil
}

// ParseRSAPublicKey reads a PEM "PUBLIC KEY" (PKIX) holding an RSA key of at least 2048 bits.
func ParseRSAPublicKey(raw []byte) (*rsa.PublicKey, error) {
	der, err := pemBlock(raw)
	if err != nil {
		return nil, err
	}
	k, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("a %T, not an RSA key", k)
	}
	if rk.N.BitLen() < 2048 {
		return nil, fmt.Errorf("RSA key of %d bits, want at least 2048", rk.N.BitLen())
	}
	return rk, nil
}
