package sink

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/crmauthz/crmauthz/internal/natsconn"
	"github.com/crmauthz/crmauthz/internal/natspub"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/tracing"
)

// natsSink publishes to a JetStream stream, one message per event, with stream seq = event seq
// (natspub.Appender), and stores snapshots in an object store bucket as crmauthz snapshot
// publish does (docs/connectors.md).
type natsSink struct {
	cfg  Config
	opts []nats.Option
	url  string // redacted

	mu sync.Mutex
	nc *nats.Conn
	js jetstream.JetStream
	// noAtomic: the stream does not take atomic batches (an old server, or no right to update it).
	noAtomic bool
}

func newNATS(cfg Config) (*natsSink, error) {
	if err := natsconn.CheckURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	opts, err := cfg.Auth.Options()
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	opts = append(opts, nats.Name(cfg.Name), nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond))
	return &natsSink{cfg: cfg, opts: opts, url: natsconn.Redact(cfg.URL)}, nil
}

// conn connects once; the connection reconnects on its own afterwards.
func (s *natsSink) conn() (jetstream.JetStream, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nc != nil && !s.nc.IsClosed() {
		return s.js, nil
	}
	nc, err := nats.Connect(s.cfg.URL, s.opts...)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", s.url, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		nc.Close()
		return nil, err
	}
	s.nc, s.js = nc, js
	return js, nil
}

// stream returns the stream, created when absent (the connector is its only writer).
func (s *natsSink) stream(ctx context.Context) (jetstream.JetStream, jetstream.Stream, error) {
	js, err := s.conn()
	if err != nil {
		return nil, nil, err
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	st, err := js.Stream(tctx, s.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		st, err = js.CreateStream(tctx, jetstream.StreamConfig{
			Name:        s.cfg.Stream,
			Description: "crmauthz replication log: one event per message, the stream sequence is the seq",
			Subjects:    []string{s.cfg.Subject},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Discard:     jetstream.DiscardOld,
			MaxMsgs:     -1,
			// A source transaction's events are stored all together or not at all.
			AllowAtomicPublish: true,
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = js.Stream(tctx, s.cfg.Stream)
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("the stream %q on %s: %w", s.cfg.Stream, s.url, err)
	}
	if info := st.CachedInfo(); info != nil && !info.Config.AllowAtomicPublish && !s.noAtomic {
		cfg := info.Config
		cfg.AllowAtomicPublish = true
		if up, err := js.UpdateStream(tctx, cfg); err != nil {
			s.noAtomic = true
			s.cfg.Logger.Warn("sink: the stream does not allow atomic batch publishing and could not be updated: "+
				"a transaction's events are published one by one", "stream", s.cfg.Stream, "err", err)
		} else {
			st = up
		}
	}
	return js, st, nil
}

func (s *natsSink) head(ctx context.Context) (jetstream.JetStream, jetstream.Stream, uint64, error) {
	js, st, state, err := s.state(ctx)
	return js, st, state.LastSeq, err
}

func (s *natsSink) state(ctx context.Context) (jetstream.JetStream, jetstream.Stream, jetstream.StreamState, error) {
	js, st, err := s.stream(ctx)
	if err != nil {
		return nil, nil, jetstream.StreamState{}, err
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := st.Info(tctx)
	if err != nil {
		return nil, nil, jetstream.StreamState{}, fmt.Errorf("reading the stream %q: %w", s.cfg.Stream, err)
	}
	return js, st, info.State, nil
}

func (s *natsSink) Head(ctx context.Context) (uint64, error) {
	var h uint64
	err := retry(ctx, &s.cfg, "reading the stream's last seq", func() (bool, error) {
		var err error
		_, _, h, err = s.head(ctx)
		return false, err
	})
	return h, err
}

// Write publishes the events back to back, each with its expected last sequence. A tx's events
// follow each other in the stream; a reader applies them together (internal/natssource). With a
// Tracer the write is a producer span whose trace context every message carries (traceparent,
// tracestate), so a sidecar's span of the batch applying them is its child.
func (s *natsSink) Write(ctx context.Context, events []replication.Event) (err error) {
	if len(events) == 0 {
		return nil
	}
	if s.cfg.Tracer != nil {
		var sp trace.Span
		if ctx, sp = s.cfg.Tracer.StartSampled(ctx, tracing.SpanSinkWrite, trace.SpanKindProducer); sp != nil {
			defer func() {
				b := tracing.Batch{Source: "nats", Events: len(events), AppliedSeq: events[len(events)-1].Seq}
				if err != nil {
					b.Error, b.AppliedSeq = "write_failed", 0
				}
				tracing.EndBatch(sp, b)
			}()
		}
	}
	return retry(ctx, &s.cfg, "publishing events", func() (bool, error) {
		js, _, head, err := s.head(ctx)
		if err != nil {
			return false, err
		}
		first, last := events[0].Seq, events[len(events)-1].Seq
		switch {
		case head >= last:
			// A retry after a lost acknowledgement: the stream holds them all (this connector
			// is the stream's only writer).
			return false, nil
		case head >= first:
			events = events[head-first+1:] // part of them made it before an error
		case head+1 < first:
			return true, &GapError{Head: head, Msg: fmt.Sprintf(
				"the stream %s ends at seq %d; the events start at %d", s.cfg.Stream, head, first)}
		}
		app := natspub.NewAppender(js, s.cfg.Stream, s.cfg.Subject)
		app.Tracer = s.cfg.Tracer
		for _, g := range txGroups(events) {
			if len(g) > 1 && len(g) <= maxAtomicBatch && !s.noAtomic {
				if err := app.Settle(ctx); err != nil {
					return false, err
				}
				if err := s.publishBatch(ctx, g); err != nil {
					return false, err
				}
				continue
			}
			for i := range g {
				b, err := json.Marshal(&g[i])
				if err != nil {
					return true, err
				}
				if err := app.Send(ctx, b, g[i].Seq, fmt.Sprintf("event seq %d", g[i].Seq)); err != nil {
					return false, errors.Join(err, app.Settle(ctx))
				}
			}
		}
		// On an error (a wrong last sequence included) the next attempt reads the head again.
		return false, app.Settle(ctx)
	})
}

// Snapshot purges the stream so that its next seq is seq+1, then stores the snapshot as the object
// SnapshotName of SnapshotBucket (metadata crmauthz-seq = seq, as crmauthz snapshot publish): a
// sidecar at any earlier seq finds the stream past its applied_seq and loads the object
// (internal/natssource bootstrap); one that looks between the purge and the put waits for the
// object (an older one is not recent enough).
func (s *natsSink) Snapshot(ctx context.Context, seq uint64, write func(w io.Writer) error) error {
	return retry(ctx, &s.cfg, "storing a snapshot", func() (bool, error) {
		js, st, state, err := s.state(ctx)
		if err != nil {
			return false, err
		}
		purged := state.Msgs == 0 && state.FirstSeq == seq+1 // a retry after the purge
		if state.LastSeq > seq || (state.LastSeq == seq && !purged) {
			return true, fmt.Errorf("a snapshot at seq %d: the stream %s is at seq %d already (a snapshot's seq must be past the stream's last seq)",
				seq, s.cfg.Stream, state.LastSeq)
		}
		obs, err := s.bucket(ctx, js)
		if err != nil {
			return false, err
		}
		if !purged {
			tctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := st.Purge(tctx, jetstream.WithPurgeSequence(seq+1))
			cancel()
			if err != nil {
				return false, fmt.Errorf("purging the stream %s up to seq %d for the snapshot: %w", s.cfg.Stream, seq, err)
			}
		}
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
		_, err = natspub.PutSnapshot(ctx, obs, s.cfg.SnapshotName, seq, pr, s.cfg.Tracer)
		pr.CloseWithError(errors.New("the put ended"))
		if werr := <-done; werr != nil {
			return true, fmt.Errorf("writing the snapshot: %w", werr)
		}
		if err != nil {
			return false, fmt.Errorf("storing the snapshot in the bucket %s: %w", s.cfg.SnapshotBucket, err)
		}
		return false, nil
	})
}

// maxAtomicBatch is the most events of one transaction published as one atomic batch (the NATS
// server's default limit); a larger transaction is published message by message.
const maxAtomicBatch = 1000

// publishBatch publishes the events of one transaction as a JetStream atomic batch: the stream
// stores them all, at consecutive seqs from the first event's, or none.
func (s *natsSink) publishBatch(ctx context.Context, g []replication.Event) error {
	s.mu.Lock()
	nc := s.nc
	s.mu.Unlock()
	id := make([]byte, 12)
	if _, err := rand.Read(id); err != nil {
		return err
	}
	batch := hex.EncodeToString(id)
	for i := range g {
		b, err := json.Marshal(&g[i])
		if err != nil {
			return err
		}
		msg := nats.NewMsg(s.cfg.Subject)
		msg.Data = b
		if s.cfg.Tracer != nil {
			s.cfg.Tracer.InjectMessage(ctx, msg.Header)
		}
		msg.Header.Set("Nats-Batch-Id", batch)
		msg.Header.Set("Nats-Batch-Sequence", strconv.Itoa(i+1))
		if i == 0 {
			msg.Header.Set(jetstream.ExpectedStreamHeader, s.cfg.Stream)
			msg.Header.Set(jetstream.ExpectedLastSeqHeader, strconv.FormatUint(g[0].Seq-1, 10))
		}
		if i < len(g)-1 {
			if err := nc.PublishMsg(msg); err != nil {
				return fmt.Errorf("publishing event seq %d: %w", g[i].Seq, err)
			}
			continue
		}
		msg.Header.Set("Nats-Batch-Commit", "1")
		rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		reply, err := nc.RequestMsgWithContext(rctx, msg)
		cancel()
		if err != nil {
			return fmt.Errorf("committing the batch of events seq %d to %d: %w", g[0].Seq, g[i].Seq, err)
		}
		var ack struct {
			Seq   uint64 `json:"seq"`
			Count int    `json:"count"`
			Error *struct {
				Code    int    `json:"err_code"`
				Message string `json:"description"`
			} `json:"error"`
		}
		if err := json.Unmarshal(reply.Data, &ack); err != nil {
			return fmt.Errorf("committing the batch of events seq %d to %d: the reply: %w", g[0].Seq, g[i].Seq, err)
		}
		if ack.Error != nil {
			return fmt.Errorf("the batch of events seq %d to %d was refused: %s (%d)", g[0].Seq, g[i].Seq, ack.Error.Message, ack.Error.Code)
		}
		if ack.Seq != g[i].Seq || ack.Count != len(g) {
			return fmt.Errorf("the batch of events seq %d to %d was stored as %d events ending at seq %d", g[0].Seq, g[i].Seq, ack.Count, ack.Seq)
		}
	}
	return nil
}

func (s *natsSink) bucket(ctx context.Context, js jetstream.JetStream) (jetstream.ObjectStore, error) {
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	obs, err := js.ObjectStore(tctx, s.cfg.SnapshotBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		obs, err = js.CreateObjectStore(tctx, jetstream.ObjectStoreConfig{Bucket: s.cfg.SnapshotBucket,
			Description: "crmauthz snapshots", Storage: jetstream.FileStorage})
		if errors.Is(err, jetstream.ErrBucketExists) {
			obs, err = js.ObjectStore(tctx, s.cfg.SnapshotBucket)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("the snapshot bucket %s: %w", s.cfg.SnapshotBucket, err)
	}
	return obs, nil
}

func (s *natsSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nc != nil {
		s.nc.Close()
	}
	return nil
}
