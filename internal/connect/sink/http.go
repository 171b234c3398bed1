package sink

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/tracing"
)

// httpSink writes to one crmauthz's replication API (docs/connectors.md).
type httpSink struct {
	cfg   Config
	base  string // without a trailing slash
	token string
	hc    *http.Client
}

func newHTTP(cfg Config) (*httpSink, error) {
	u, err := url.Parse(strings.TrimSpace(cfg.URL))
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("sink: %q must be http(s)://HOST:PORT (no credentials, query or fragment: the token comes from --sink-token-file)", u.Redacted())
	}
	s := &httpSink{cfg: cfg, base: strings.TrimRight(u.String(), "/"), hc: cfg.HTTPClient}
	if cfg.TokenFile != "" {
		b, err := os.ReadFile(cfg.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("sink: the token file: %w", err)
		}
		s.token = strings.TrimSpace(string(b))
		if s.token == "" {
			return nil, fmt.Errorf("sink: the token file %s is empty", cfg.TokenFile)
		}
	}
	if s.hc == nil {
		s.hc = &http.Client{
			Timeout: 10 * time.Minute, // a big snapshot; batches are small
			Transport: &http.Transport{
				DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
				TLSHandshakeTimeout:   5 * time.Second,
				ResponseHeaderTimeout: 2 * time.Minute,
				MaxIdleConnsPerHost:   2,
				IdleConnTimeout:       time.Minute,
			},
		}
	}
	return s, nil
}

// apiError is the replica's error body.
type apiError struct {
	Status int
	Code   string `json:"code"`
	Msg    string `json:"message"`
	// AppliedSeq: the replica's applied_seq (409 sequence_gap).
	AppliedSeq *uint64 `json:"applied_seq"`
}

func (e *apiError) Error() string {
	return fmt.Sprintf("the replica answered %d %s: %s", e.Status, e.Code, e.Msg)
}

// do sends one request and decodes a 200's JSON into out. permanent tells a 4xx (other than 408
// and 429) from what is worth retrying.
func (s *httpSink) do(ctx context.Context, method, path, ctype string, body func() io.Reader, out any) (bool, error) {
	var rd io.Reader
	if body != nil {
		rd = body()
	}
	req, err := http.NewRequestWithContext(ctx, method, s.base+path, rd)
	if err != nil {
		return true, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("User-Agent", s.cfg.Name)
	if s.cfg.Tracer != nil {
		s.cfg.Tracer.Inject(ctx, req.Header)
	}
	if s.token != "" {
		req.Header.Set("Authorization", "Bearer "+s.token)
	}
	resp, err := s.hc.Do(req)
	if err != nil {
		return false, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return false, fmt.Errorf("%s %s: reading the reply: %w", method, path, err)
	}
	if resp.StatusCode == http.StatusOK {
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				return false, fmt.Errorf("%s %s: the reply is not the JSON of the replication API: %w", method, path, err)
			}
		}
		return false, nil
	}
	e := &apiError{Status: resp.StatusCode, Code: "http_" + fmt.Sprint(resp.StatusCode), Msg: strings.TrimSpace(string(b))}
	var env struct {
		Error *apiError `json:"error"`
	}
	if json.Unmarshal(b, &env) == nil && env.Error != nil {
		env.Error.Status = resp.StatusCode
		e = env.Error
	}
	permanent := resp.StatusCode < 500 && resp.StatusCode != http.StatusRequestTimeout && resp.StatusCode != http.StatusTooManyRequests
	return permanent, fmt.Errorf("%s %s: %w", method, path, e)
}

func (s *httpSink) Head(ctx context.Context) (uint64, error) {
	var st struct {
		AppliedSeq *uint64 `json:"applied_seq"`
	}
	err := retry(ctx, &s.cfg, "reading the replica's applied_seq", func() (bool, error) {
		return s.do(ctx, http.MethodGet, "/v1/replication/status", "", nil, &st)
	})
	if err != nil {
		return 0, err
	}
	if st.AppliedSeq == nil {
		return 0, fmt.Errorf("GET /v1/replication/status: no applied_seq in the reply")
	}
	return *st.AppliedSeq, nil
}

// Write posts events in batches of whole transactions (a transaction larger than one batch is
// split, and logged: the replica then applies it in parts).
func (s *httpSink) Write(ctx context.Context, events []replication.Event) error {
	var batch []json.RawMessage
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := s.post(ctx, batch)
		batch, size = batch[:0], 0
		return err
	}
	for _, g := range txGroups(events) {
		raws := make([]json.RawMessage, len(g))
		gsize := 0
		for i := range g {
			b, err := json.Marshal(&g[i])
			if err != nil {
				return err
			}
			raws[i] = b
			gsize += len(b) + 1
		}
		if len(batch)+len(raws) > s.cfg.MaxBatchEvents || size+gsize > s.cfg.MaxBatchBytes {
			if err := flush(); err != nil {
				return err
			}
		}
		if len(raws) > s.cfg.MaxBatchEvents || gsize > s.cfg.MaxBatchBytes {
			s.cfg.Logger.Warn("sink: a transaction is larger than one batch: the replica applies it in parts",
				"tx", g[0].Tx, "events", len(raws), "bytes", gsize)
		}
		for i, r := range raws {
			if len(batch) >= s.cfg.MaxBatchEvents || (len(batch) > 0 && size+len(r)+1 > s.cfg.MaxBatchBytes) {
				if err := flush(); err != nil {
					return err
				}
			}
			batch = append(batch, raws[i])
			size += len(r) + 1
		}
	}
	return flush()
}

func (s *httpSink) post(ctx context.Context, batch []json.RawMessage) (err error) {
	var buf bytes.Buffer
	buf.WriteString(`{"events":[`)
	for i, r := range batch {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(r)
	}
	buf.WriteString("]}")
	body := buf.Bytes()
	var res struct {
		AppliedSeq uint64 `json:"applied_seq"`
	}
	if s.cfg.Tracer != nil {
		var sp trace.Span
		if ctx, sp = s.cfg.Tracer.StartSampled(ctx, tracing.SpanSinkWrite, trace.SpanKindClient); sp != nil {
			defer func() {
				b := tracing.Batch{Source: "http", Events: len(batch), AppliedSeq: res.AppliedSeq}
				if err != nil {
					b.Error = "write_failed"
				}
				tracing.EndBatch(sp, b)
			}()
		}
	}
	err = retry(ctx, &s.cfg, "posting events", func() (bool, error) {
		return s.do(ctx, http.MethodPost, "/v1/replication/events", "application/json",
			func() io.Reader { return bytes.NewReader(body) }, &res)
	})
	var ae *apiError
	if errors.As(err, &ae) && ae.Status == http.StatusConflict && ae.AppliedSeq != nil {
		return &GapError{Head: *ae.AppliedSeq, Msg: err.Error(), Err: err}
	}
	return err
}

func (s *httpSink) Snapshot(ctx context.Context, seq uint64, write func(w io.Writer) error) error {
	return retry(ctx, &s.cfg, "putting a snapshot", func() (bool, error) {
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() {
			bw := bufio.NewWriterSize(pw, 64<<10)
			err := func() error {
				if _, err := fmt.Fprintf(bw, "{\"seq\":%d}\n", seq); err != nil {
					return err
				}
				if err := write(bw); err != nil {
					return err
				}
				return bw.Flush()
			}()
			pw.CloseWithError(err)
			done <- err
		}()
		permanent, err := s.do(ctx, http.MethodPut, "/v1/replication/snapshot", "application/x-ndjson",
			func() io.Reader { return pr }, nil)
		pr.CloseWithError(errors.New("the request ended"))
		if werr := <-done; werr != nil && err == nil {
			return true, fmt.Errorf("writing the snapshot: %w", werr)
		}
		return permanent, err
	})
}

func (s *httpSink) Close() error {
	s.hc.CloseIdleConnections()
	return nil
}
