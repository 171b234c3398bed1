package sink

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/crmauthz/crmauthz/internal/natssource"
	"github.com/crmauthz/crmauthz/internal/replication"
)

// natsSink publishes to a JetStream stream, one message per event, with stream seq = event seq
// (natssource.Appender), and stores snapshots in an object store bucket as crmauthz snapshot
// publish does (docs/connectors.md).
type natsSink struct {
	cfg  Config
	opts []nats.Option
	url  string // redacted

	mu sync.Mutex
	nc *nats.Conn
	js jetstream.JetStream
}

func newNATS(cfg Config) (*natsSink, error) {
	if err := natssource.CheckURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	opts, err := cfg.Auth.Options()
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	opts = append(opts, nats.Name(cfg.Name), nats.MaxReconnects(-1), nats.ReconnectWait(500*time.Millisecond))
	return &natsSink{cfg: cfg, opts: opts, url: natssource.Redact(cfg.URL)}, nil
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
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			st, err = js.Stream(tctx, s.cfg.Stream)
		}
	}
	if err != nil {
		return nil, nil, fmt.Errorf("the stream %q on %s: %w", s.cfg.Stream, s.url, err)
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
// follow each other in the stream; a reader applies them together (internal/natssource).
func (s *natsSink) Write(ctx context.Context, events []replication.Event) error {
	if len(events) == 0 {
		return nil
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
		app := natssource.NewAppender(js, s.cfg.Stream, s.cfg.Subject)
		for i := range events {
			b, err := json.Marshal(&events[i])
			if err != nil {
				return true, err
			}
			if err := app.Send(ctx, b, events[i].Seq, fmt.Sprintf("event seq %d", events[i].Seq)); err != nil {
				return false, errors.Join(err, app.Settle(ctx))
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
		_, err = natssource.PutSnapshot(ctx, obs, s.cfg.SnapshotName, seq, pr)
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
