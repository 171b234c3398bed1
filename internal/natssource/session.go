// The session: Run reconnects with backoff; a session connects, looks the
// stream up and, in a loop, reads its state and decides: consume, bootstrap,
// or wait (index ahead of the stream).

package natssource

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/crmauthz/crmauthz/internal/natsconn"
)

// errNoStream is the error of a session that found no stream.
var errNoStream = errors.New("stream not found")

// Run reads the stream until ctx ends or Close is called, reconnecting with
// backoff after any failure. It returns nil when stopped; it may be called
// once.
func (s *Source) Run(ctx context.Context) error {
	first := false
	s.runOnce.Do(func() { first = true })
	if !first {
		return errors.New("natssource: Run called twice")
	}
	defer close(s.done)
	s.mu.Lock()
	s.runCalled = true
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-s.stopCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	for attempt := 1; ; attempt++ {
		progressed, err := s.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if progressed {
			attempt = 1
		}
		wait := natsconn.Backoff(attempt, 100*time.Millisecond, s.cfg.MaxBackoff)
		s.log.Warn("NATS replication interrupted; retrying", "err", err, "retry_in", wait.Round(time.Millisecond))
		s.mu.Lock()
		s.st.LastError = err.Error()
		switch {
		case errors.Is(err, errNoStream):
			s.st.State = StateNoStream
		case s.st.State != StateConnecting:
			s.st.State = StateReconnecting
		}
		s.st.Connected = false
		s.readable = false
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// session connects, finds the stream and reads it until an error. progressed
// tells whether it got as far as reading the stream (the backoff restarts).
func (s *Source) session(ctx context.Context) (progressed bool, err error) {
	nc, err := nats.Connect(s.cfg.URL, s.opts...)
	if err != nil {
		return false, fmt.Errorf("connecting to %s: %w", s.url, err)
	}
	defer nc.Close()
	s.setConnected(true)
	js, err := jetstream.New(nc)
	if err != nil {
		return false, err
	}
	stream, err := s.stream(ctx, js)
	if err != nil {
		return false, err
	}
	s.log.Info("connected to NATS", "server", nc.ConnectedUrlRedacted(), "subject", s.cfg.Subject,
		"applied_seq", s.ix.AppliedSeq())
	s.mu.Lock()
	s.st.LastError = ""
	s.mu.Unlock()

	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go s.watch(wctx, stream)

	for {
		// applied_seq first: read after the stream's state, it could include
		// events published after that state and look beyond its end.
		applied := s.ix.AppliedSeq()
		info, err := streamInfo(ctx, stream)
		if err != nil {
			return true, err
		}
		s.noteStream(info)
		first, last := info.State.FirstSeq, info.State.LastSeq
		switch {
		case applied > last || s.isAhead(applied, first):
			if err := s.waitAhead(ctx, applied, last); err != nil {
				return true, err
			}
			continue
		case first > applied+1:
			if err := s.bootstrap(ctx, js, first); err != nil {
				return true, err
			}
			continue
		}
		out, err := s.consume(ctx, stream, applied+1)
		if err != nil {
			return true, err
		}
		if out.stop {
			if err := s.stopped(ctx, js, out.seq, out.reason); err != nil {
				return true, err
			}
		}
	}
}

// stream looks the stream up and warns when it is not dedicated to Subject.
func (s *Source) stream(ctx context.Context, js jetstream.JetStream) (jetstream.Stream, error) {
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := js.Stream(tctx, s.cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w: the stream %q does not exist on %s (create it: crmauthz publish --create)", errNoStream, s.cfg.Stream, s.url)
	}
	if err != nil {
		return nil, fmt.Errorf("looking up the stream %q: %w", s.cfg.Stream, err)
	}
	if subs := stream.CachedInfo().Config.Subjects; !slices.Equal(subs, []string{s.cfg.Subject}) {
		s.log.Warn("the stream's subjects are not exactly the events subject: a message on another subject "+
			"is a gap in the replication log and stops replication", "stream_subjects", subs, "subject", s.cfg.Subject)
	}
	return stream, nil
}

func streamInfo(ctx context.Context, stream jetstream.Stream) (*jetstream.StreamInfo, error) {
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	info, err := stream.Info(tctx)
	if err != nil {
		return nil, fmt.Errorf("reading the stream's state: %w", err)
	}
	return info, nil
}

// noteStream records the stream's first and last seqs.
func (s *Source) noteStream(info *jetstream.StreamInfo) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.StreamFirstSeq, s.st.StreamLastSeq = info.State.FirstSeq, info.State.LastSeq
	s.head = info.State.LastSeq
	s.st.Connected = true
	s.readable = true
}

func (s *Source) isAhead(applied, first uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ahead != 0 && (s.ahead != applied || first > applied+1) {
		// applied_seq changed (a snapshot), or the stream starts past it (purged after a
		// connector's snapshot): a snapshot of the bucket can be loaded. Look again.
		s.ahead = 0
	}
	return s.ahead != 0
}

// waitAhead reports an index beyond the stream's end and waits until
// applied_seq changes (a snapshot), for up to PollInterval.
func (s *Source) waitAhead(ctx context.Context, applied, last uint64) error {
	s.mu.Lock()
	first := s.ahead != applied
	s.ahead = applied
	s.st.State = StateAheadOfStream
	s.st.Reason = fmt.Sprintf("applied_seq %d is beyond the last seq %d of the stream %s: the stream was recreated, "+
		"or the index was fed from another log. Nothing is applied. Fix: load a snapshot of this stream "+
		"(PUT /v1/replication/snapshot), or start the sidecar with an empty --data-dir", applied, last, s.cfg.Stream)
	reason := s.st.Reason
	s.mu.Unlock()
	if first {
		s.log.Error("replication stopped", "reason", reason)
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.PollInterval)
	defer cancel()
	for s.ix.AppliedSeq() == applied {
		if err := s.ix.WaitForSeq(wctx, applied+1); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return nil
		}
	}
	return nil
}
