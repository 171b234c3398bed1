package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"
)

// floorReply is the floor server's one answer: the shape of crmauthz's
// decision reply (internal/server/decision.go) and about its size, constant.
const floorReply = `{"allow":true,"reason":"owner","decision_id":"floor-00000000000000000000","policy_revision":"floor","applied_seq":0}`

// floorMaxBody bounds a request body the floor reads (crmauthz's own limit
// is of the same order).
const floorMaxBody = 1 << 20

// floorHandler is the physical floor of a decision over HTTP on these cores
// (see BENCHMARKS.md, "Method"): it reads the whole request body and answers
// floorReply with 200, whatever the method and path (POST /v1/decision, or a
// gateway's request with --endpoint: GET /v1/forward-auth, PUT
// /v1/ext-authz/…). No parsing, no facts, no policy. GET /health is its
// readiness.
func floorHandler() http.Handler {
	reply := []byte(floorReply)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.URL.Path == "/health" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"status":"ok"}`)
			return
		}
		if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, floorMaxBody)); err != nil {
			writeFloorError(w, http.StatusRequestEntityTooLarge, "body_too_large", "the request body is larger than 1 MiB or unreadable")
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(reply)
	})
}

func writeFloorError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":%q}}`, code, msg)
}

// checkLoopback accepts host:port with a loopback IP or "localhost".
func checkLoopback(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--addr %q: %w", addr, err)
	}
	if port == "" {
		return fmt.Errorf("--addr %q: no port", addr)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--addr %q: the floor server binds loopback addresses only", addr)
	}
	return nil
}

// serveFloor serves floorHandler on addr (loopback only) until ctx ends,
// and with grpcAddr floorAuthz on it (grpc.go).
func serveFloor(ctx context.Context, addr, grpcAddr string) error {
	if err := checkLoopback(addr); err != nil {
		return err
	}
	if grpcAddr != "" {
		wait, err := serveFloorGRPC(ctx, grpcAddr)
		if err != nil {
			return err
		}
		defer wait()
	}
	stopTrace, err := startFlightRecorder()
	if err != nil {
		return err
	}
	defer stopTrace()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           floorHandler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
	}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	defer stop()
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// startFloor starts the floor server as its own process named name ("floor",
// or "floor-b" with --vs-floor): bin (the tool itself, "" = os.Executable())
// with the hidden subcommand `floor`, on cpus ("": any), its output kept in
// logDir ("": not kept, startProc).
func startFloor(ctx context.Context, name, bin, cpus, logDir string, withGRPC bool) (*proc, serverSide, error) {
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return nil, serverSide{}, fmt.Errorf("the floor server: %w", err)
		}
	}
	var addr, grpcAddr string
	p, ready, err := startOnFreePorts(ctx, 30*time.Second, func() (*proc, string, error) {
		var err error
		if addr, err = freeAddr(); err != nil {
			return nil, "", err
		}
		args := []string{"floor", "--addr", addr}
		if withGRPC {
			if grpcAddr, err = freeAddr(); err != nil {
				return nil, "", err
			}
			args = append(args, "--grpc-addr", grpcAddr)
		}
		p, err := startProc(name, bin, args, nil, cpus, logDir)
		return p, "http://" + addr + "/health", err
	})
	if err != nil {
		return nil, serverSide{}, err
	}
	return p, serverSide{
		side:  side{name: name, url: "http://" + addr + "/v1/decision", root: "http://" + addr, pid: p.pid(), grpcAddr: grpcAddr},
		admin: "http://" + addr, ready: ready,
	}, nil
}
