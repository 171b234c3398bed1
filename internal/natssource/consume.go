// The consumer loop: an ordered consumer from applied_seq+1, read in
// batches (Config.MaxBatch, Config.BatchWait) that never end inside a tx.

package natssource

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// outcome is how a consumer ended without an error: stop at seq (an invalid
// event or a gap), or else restart from applied_seq+1.
type outcome struct {
	stop   bool
	seq    uint64
	reason string
}

// consume reads the stream from start with a new ordered consumer and
// applies it in batches, until an error, a stop, or something that needs a
// fresh look at the stream (a restart).
func (s *Source) consume(ctx context.Context, stream jetstream.Stream, start uint64) (outcome, error) {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	s.restart = cancel
	if s.st.Synced {
		s.st.State = StateStreaming
	} else {
		s.st.State = StateCatchingUp
	}
	s.st.Reason = ""
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.restart = nil
		s.mu.Unlock()
	}()

	cons, err := stream.OrderedConsumer(cctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:   []string{s.cfg.Subject},
		DeliverPolicy:    jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:      start,
		MaxResetAttempts: 5,
	})
	if err != nil {
		if ctx.Err() == nil && cctx.Err() != nil {
			return outcome{}, nil
		}
		return outcome{}, fmt.Errorf("creating a consumer at seq %d: %w", start, err)
	}
	defer func() {
		// Delete the server's consumer now rather than after its inactivity
		// threshold: a fleet restarts many.
		if info := cons.CachedInfo(); info != nil && info.Name != "" {
			dctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = stream.DeleteConsumer(dctx, info.Name)
			cancel()
		}
	}()
	it, err := cons.Messages(jetstream.PullMaxMessages(min(2*s.cfg.MaxBatch, MaxBatchLimit)))
	if err != nil {
		return outcome{}, fmt.Errorf("reading the stream: %w", err)
	}
	defer it.Stop()
	// Next waits out the ordered consumer's own recreation attempts (seconds
	// of backoff) whatever its context; stopping the iterator ends them.
	defer context.AfterFunc(cctx, it.Stop)()
	s.log.Debug("consuming", "from_seq", start)

	batch := make([]jetstream.Msg, 0, s.cfg.MaxBatch)
	next := start           // the seq the next message must have
	var carry jetstream.Msg // read past the end of the last batch: the next one's first
	for {
		msg := carry
		carry = nil
		if msg == nil {
			var err error
			msg, err = it.Next(jetstream.NextContext(cctx))
			if err != nil {
				if ctx.Err() != nil {
					return outcome{}, ctx.Err()
				}
				if cctx.Err() != nil {
					return outcome{}, nil // restart asked for
				}
				return outcome{}, fmt.Errorf("reading the stream: %w", err)
			}
		}
		batch = append(batch[:0], msg)
		var readErr error
		deadline := time.Now().Add(s.cfg.BatchWait)
		for len(batch) < s.cfg.MaxBatch {
			wait := time.Until(deadline)
			if wait <= 0 {
				break
			}
			msg, err := it.Next(jetstream.NextMaxWait(wait))
			if err != nil {
				if !errors.Is(err, nats.ErrTimeout) {
					readErr = err
				}
				break
			}
			batch = append(batch, msg)
		}
		if readErr == nil {
			batch, carry, readErr = s.completeTx(it, batch)
		}
		res, err := s.applyBatch(ctx, stream, batch, &next, start)
		if err != nil || res.done {
			return res.out, err
		}
		if res.used < len(batch) {
			return outcome{}, nil // a jump in the seqs: look again from applied_seq+1
		}
		if readErr != nil {
			if ctx.Err() != nil {
				return outcome{}, ctx.Err()
			}
			return outcome{}, fmt.Errorf("reading the stream: %w", readErr)
		}
	}
}
