package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"

	"github.com/crmauthz/crmauthz/internal/identity"
	"github.com/crmauthz/crmauthz/internal/server"
	"github.com/crmauthz/crmauthz/internal/server/gateway"
)

// gatewayOptions are the flags of the gateway endpoints: the Envoy ext_authz
// gRPC listener and how the subject of a request is found.
type gatewayOptions struct {
	grpcAddr      string
	subjectHeader string
	subjectClaim  string
	hs256File     string
	jwksFile      string
	leeway        time.Duration
	issuer        string
	audience      string
}

func (g *gatewayOptions) addFlags(f *pflag.FlagSet) {
	d := identity.DefaultConfig()
	f.StringVar(&g.grpcAddr, "grpc-addr", server.DefaultConfig().Listeners.GRPCAddr, "listen address of Envoy's ext_authz v3 gRPC service (Authorization/Check), e.g. 127.0.0.1:9191; empty: off")
	f.StringVar(&g.subjectHeader, "subject-header", d.SubjectHeader, "trusted header naming the subject of forward-auth and ext_authz requests (ignored when a JWT key is set)")
	f.StringVar(&g.hs256File, "jwt-hs256-secret-file", "", "file with the HS256 secret (at least 32 bytes) verifying bearer JWTs; with it a token is required")
	f.StringVar(&g.jwksFile, "jwt-jwks-file", "", "JWKS file with the RS256 (RSA) and ES256 (P-256) public keys verifying bearer JWTs; with it a token is required")
	f.DurationVar(&g.leeway, "jwt-leeway", d.Leeway, "clock skew allowed when checking a JWT's exp and nbf")
	f.StringVar(&g.issuer, "jwt-issuer", "", "required iss of the JWTs (empty: not checked)")
	f.StringVar(&g.audience, "jwt-audience", "", "required aud of the JWTs (empty: not checked)")
	f.StringVar(&g.subjectClaim, "subject-claim", d.SubjectClaim, "JWT claim (a string) naming the subject")
}

// identityConfig is the identity's configuration from the flags.
func (g *gatewayOptions) identityConfig() identity.Config {
	return identity.Config{
		SubjectHeader: g.subjectHeader, SubjectClaim: g.subjectClaim,
		HS256SecretFile: g.hs256File, JWKSFile: g.jwksFile, Leeway: g.leeway,
		Issuer: g.issuer, Audience: g.audience,
	}
}

func (g *gatewayOptions) identity() (*identity.Identifier, error) {
	id, err := identity.New(g.identityConfig())
	if err != nil {
		return nil, fmt.Errorf("gateway identity (--subject-header, --jwt-*): %w", err)
	}
	return id, nil
}

// grpcListener is the ext_authz gRPC listener; its zero value (off) does nothing.
type grpcListener struct {
	gs *gateway.GRPC
	ln net.Listener
}

// listenGRPC binds --grpc-addr; off when it is empty.
func listenGRPC(srv *server.Server, addr string) (grpcListener, error) {
	if addr == "" {
		return grpcListener{}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return grpcListener{}, fmt.Errorf("listen %s (--grpc-addr): %w", addr, err)
	}
	return grpcListener{gs: srv.NewGRPC(), ln: ln}, nil
}

// addr is the bound address, "" when off.
func (g grpcListener) addr() string {
	if g.ln == nil {
		return ""
	}
	return g.ln.Addr().String()
}

// serve serves until stop; a failure goes to errc.
func (g grpcListener) serve(errc chan<- error) {
	if g.gs == nil {
		return
	}
	go func() {
		if err := g.gs.Serve(g.ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errc <- fmt.Errorf("serve %s (gRPC): %w", g.addr(), err)
		}
	}()
}

// stop lets the checks in flight finish until ctx is done, then closes.
func (g grpcListener) stop(ctx context.Context) {
	if g.gs != nil {
		g.gs.Stop(ctx)
	}
}
