// The lag watcher: the stream's state every PollInterval, the lag gauges,
// readiness once level with the head.

package natssource

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/crmauthz/crmauthz/internal/metrics"
)

// lag computes the gauges: events between applied_seq and the stream's last
// seq, and the age of the oldest pending event (its publish time when known;
// else, for an instant between batches, the last applied event's, an upper
// bound).
func (s *Source) lag() metrics.Lag {
	applied := s.ix.AppliedSeq()
	s.mu.Lock()
	head, pseq, pt, lt, up := s.head, s.pendingSeq, s.pendingTime, s.lastTime, s.readable && s.st.Connected
	s.mu.Unlock()
	if head <= applied {
		return metrics.Lag{Up: up}
	}
	l := metrics.Lag{Events: head - applied, Up: up}
	var since time.Time
	switch {
	case pseq == applied+1:
		since = pt
	case !lt.IsZero():
		since = lt
	case pseq > applied:
		since = pt // a later event's time: a lower bound
	}
	if !since.IsZero() {
		l.Seconds = max(0, time.Since(since).Seconds())
	}
	return l
}

// watch reads the stream's state every PollInterval while a session runs:
// the head for the lag gauges, the publish time of the oldest pending event,
// readiness once level with the head, and an index found beyond the stream.
func (s *Source) watch(ctx context.Context, stream jetstream.Stream) {
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		applied := s.ix.AppliedSeq() // before the stream's state, see session
		info, err := streamInfo(ctx, stream)
		if err != nil {
			s.mu.Lock()
			s.st.Connected, s.readable = false, false
			s.mu.Unlock()
			if errors.Is(err, jetstream.ErrStreamNotFound) {
				s.restartConsumer() // the session looks the stream up again
			}
			continue
		}
		s.noteStream(info)
		last := info.State.LastSeq
		s.mu.Lock()
		state, pseq := s.st.State, s.pendingSeq
		s.mu.Unlock()
		switch {
		case applied > last && state != StateAheadOfStream:
			s.restartConsumer() // the session finds the index ahead and reports it
		case info.State.FirstSeq > applied+1 && (state == StateCatchingUp || state == StateStreaming):
			// Purged past applied_seq (a connector wrote a snapshot, docs/connectors.md):
			// the session bootstraps from the bucket without waiting for the next event.
			s.restartConsumer()
		case applied == last && (state == StateCatchingUp || state == StateStreaming):
			s.markSynced(applied)
		case applied < last && pseq != applied+1 && applied+1 >= info.State.FirstSeq:
			gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			msg, err := stream.GetMsg(gctx, applied+1)
			cancel()
			if err == nil {
				s.notePending(applied+1, msg.Time)
			}
		}
	}
}

func (s *Source) notePending(seq uint64, t time.Time) {
	s.mu.Lock()
	if seq > s.ix.AppliedSeq() {
		s.pendingSeq, s.pendingTime = seq, t
	}
	s.mu.Unlock()
}

func (s *Source) markSynced(applied uint64) {
	s.mu.Lock()
	first := !s.st.Synced
	s.st.Synced = true
	if s.st.State == StateCatchingUp {
		s.st.State = StateStreaming
	}
	s.mu.Unlock()
	if first {
		s.log.Info("level with the stream's head: ready", "applied_seq", applied)
	}
}

func (s *Source) restartConsumer() {
	s.mu.Lock()
	if s.restart != nil {
		s.restart()
	}
	s.mu.Unlock()
}
