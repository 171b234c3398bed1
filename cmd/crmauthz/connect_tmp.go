package main

// TEMPORARY (issue 11): the `connect` parent command and the sink constructor belong to the
// PostgreSQL connector's branch (cmd/crmauthz/connect.go, internal/connect/sink). Until that
// lands, this file registers `connect highlevel` and gives it a minimal HTTP sink, so that the
// command runs. Delete this file when merging with the shared connect.go and sink package, and
// call the shared sink constructor from connect_highlevel.go's config().

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/crmauthz/crmauthz/internal/connect/sink"
	"github.com/crmauthz/crmauthz/internal/replication"
)

func newConnectCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "connect", Short: "Feed the index from a system of record (connectors)"}
	cmd.AddCommand(newConnectHighLevelCmd())
	return cmd
}

type sinkOptions struct{ url, tokenFile, stream, snapshotBucket string }

func openSink(o sinkOptions) (sink.Sink, error) {
	u, err := url.Parse(o.url)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--sink %q: want http://HOST:PORT or nats://HOST:PORT", o.url)
	}
	switch u.Scheme {
	case "http", "https":
	case "nats":
		return nil, errors.New("--sink nats://: not in this build yet (the shared sink package brings it)")
	default:
		return nil, fmt.Errorf("--sink %q: want http://HOST:PORT or nats://HOST:PORT", o.url)
	}
	s := &tmpHTTPSink{base: strings.TrimSuffix(o.url, "/"), hc: &http.Client{Timeout: 15 * time.Minute}}
	if o.tokenFile != "" {
		raw, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("--sink-token-file: %w", err)
		}
		s.token = strings.TrimSpace(string(raw))
	}
	return s, nil
}

type tmpHTTPSink struct {
	base, token string
	hc          *http.Client
}

func (s *tmpHTTPSink) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, path, resp.StatusCode, raw)
	}
	if out != nil {
		return json.Unmarshal(raw, out)
	}
	return nil
}

func (s *tmpHTTPSink) Head(ctx context.Context) (uint64, error) {
	var st struct {
		AppliedSeq uint64 `json:"applied_seq"`
	}
	err := s.do(ctx, http.MethodGet, "/v1/replication/status", nil, &st)
	return st.AppliedSeq, err
}

func (s *tmpHTTPSink) Write(ctx context.Context, evs []replication.Event) error {
	raw, err := json.Marshal(map[string]any{"events": evs})
	if err != nil {
		return err
	}
	return s.do(ctx, http.MethodPost, "/v1/replication/events", bytes.NewReader(raw), nil)
}

func (s *tmpHTTPSink) Snapshot(ctx context.Context, seq uint64, write func(io.Writer) error) error {
	pr, pw := io.Pipe()
	go func() {
		_, err := fmt.Fprintf(pw, "{\"seq\":%d}\n", seq)
		if err == nil {
			err = write(pw)
		}
		pw.CloseWithError(err)
	}()
	err := s.do(ctx, http.MethodPut, "/v1/replication/snapshot", pr, nil)
	pr.CloseWithError(errors.New("snapshot request ended"))
	return err
}

func (s *tmpHTTPSink) Close() error { return nil }
