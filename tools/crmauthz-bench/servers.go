package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/crmauthz/crmauthz/internal/dataset"
)

// The servers of a run: crmauthz and OPA started on a world, the index
// copied for a second crmauthz, the world loaded through the snapshot API.

// serverSide is a started server: its side, admin URL and readiness time.
type serverSide struct {
	side
	admin string
	ready time.Duration
}

func startCrmauthz(ctx context.Context, cfg runConfig, dataDir string) (*proc, serverSide, error) {
	name := cfg.procName
	if name == "" {
		name = "crmauthz"
	}
	var addr, admin, grpcAddr string
	p, ready, err := startOnFreePorts(ctx, 60*time.Second, func() (*proc, string, error) {
		var err error
		if addr, err = freeAddr(); err != nil {
			return nil, "", err
		}
		if admin, err = freeAddr(); err != nil {
			return nil, "", err
		}
		args := append([]string{"serve",
			"--addr", addr, "--admin-addr", admin, "--data-dir", dataDir, "--log-level", "error",
		}, cfg.CrmauthzArgs...)
		if cfg.Endpoint == endpointExtAuthzGRPC {
			if grpcAddr, err = freeAddr(); err != nil {
				return nil, "", err
			}
			args = append(args, "--grpc-addr", grpcAddr)
		}
		if cfg.CPUProfile != "" {
			args = append(args, "--pprof")
		}
		p, err := startProc(name, cfg.Crmauthz, args, cfg.CrmauthzEnv, cfg.ServerCPUs, cfg.ServerLogs)
		return p, "http://" + admin + "/health/ready", err
	})
	if err != nil {
		return nil, serverSide{}, err
	}
	return p, serverSide{
		side: side{name: "crmauthz", url: "http://" + addr + "/v1/decision", root: "http://" + addr, pid: p.pid(),
			metricsURL: "http://" + admin + "/metrics", endpoint: cfg.Endpoint, grpcAddr: grpcAddr},
		admin: "http://" + admin, ready: ready,
	}, nil
}

func startOPA(ctx context.Context, cfg runConfig, root, dataFile string) (*proc, serverSide, error) {
	var addr string
	p, ready, err := startOnFreePorts(ctx, 5*time.Minute, func() (*proc, string, error) {
		var err error
		if addr, err = freeAddr(); err != nil {
			return nil, "", err
		}
		args := []string{"run", "--server", "--log-level", "error", "--skip-version-check", "--addr", addr, dataFile}
		for _, f := range cfg.OPAPolicy {
			if !filepath.IsAbs(f) {
				f = filepath.Join(root, f)
			}
			args = append(args, f)
		}
		p, err := startProc("opa", cfg.OPA, args, nil, cfg.ServerCPUs, cfg.ServerLogs)
		return p, "http://" + addr + "/health", err
	})
	if err != nil {
		return nil, serverSide{}, err
	}
	return p, serverSide{
		side:  side{name: "opa", url: "http://" + addr + "/v1/data/crmauthz/decision", pid: p.pid(), opa: true},
		admin: "http://" + addr, ready: ready,
	}, nil
}

// copyIndex copies the index file src (of a running crmauthz, which does
// not write it while it only decides) to dst, creating dst's directory.
func copyIndex(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeFile(dst, func(out io.Writer) error {
		_, err := io.Copy(out, in)
		return err
	})
}

// putSnapshot streams the world to crmauthz's snapshot API.
func putSnapshot(ctx context.Context, url string, w dataset.World) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(w.WriteSnapshot(pw, 1)) }()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, pr)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("loading the snapshot: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("loading the snapshot: %d %s", resp.StatusCode, body)
	}
	var got struct {
		Users   uint64 `json:"users"`
		Records uint64 `json:"records"`
	}
	if err := json.Unmarshal(body, &got); err != nil {
		return fmt.Errorf("loading the snapshot: %w: %s", err, body)
	}
	c := w.Config()
	if got.Users != uint64(c.Users) || got.Records != uint64(c.Records) {
		return fmt.Errorf("loading the snapshot: the index holds %s, want %d users and %d records", body, c.Users, c.Records)
	}
	return nil
}

func writeFile(path string, fn func(io.Writer) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := fn(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
