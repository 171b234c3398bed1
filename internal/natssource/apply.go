// Batch apply: decode a batch, apply it in one transaction, and stop at an
// invalid event or a gap in the stream.

package natssource

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/strictjson"
	"github.com/crmauthz/crmauthz/internal/tracing"
)

type decoded struct {
	seq  uint64
	time time.Time
	op   string
	tx   string // of an event that did not decode
	ev   replication.Event
	err  error
	// trace is the message's trace context when it carries a valid one
	// (read only with a Tracer); the zero SpanContext otherwise.
	trace trace.SpanContext
}

// batchResult is what applyBatch did with a batch.
type batchResult struct {
	// done: the consumer must end, with out (a stop; the zero outcome for a
	// restart, when the index moved).
	done bool
	out  outcome
	// used is the number of messages used before a jump in the stream's
	// seqs (all of them when there is none).
	used int
}

// applyBatch decodes and applies one batch. Its result says whether the
// consumer must end, and how many messages it used.
func (s *Source) applyBatch(ctx context.Context, stream jetstream.Stream, batch []jetstream.Msg, next *uint64, start uint64) (batchResult, error) {
	items := make([]decoded, 0, len(batch))
	var head uint64
	for i, msg := range batch {
		md, err := msg.Metadata()
		if err != nil {
			return batchResult{done: true}, fmt.Errorf("reading a message's metadata: %w", err)
		}
		seq := md.Sequence.Stream
		if seq > *next {
			if i == 0 && *next == start {
				// The consumer's first message is past where it started: the
				// stream was trimmed since we looked, or it has a hole.
				return s.jumpAtStart(ctx, stream, start, seq)
			}
			break // apply what came before, then restart at the hole
		}
		*next = seq + 1
		head = seq + md.NumPending
		d := decoded{seq: seq, time: md.Timestamp}
		if i == 0 {
			s.notePending(seq, md.Timestamp)
		}
		if s.cfg.Tracer != nil {
			d.trace = s.messageContext(msg.Headers(), seq)
		}
		d.ev, d.err = replication.DecodeEvent(msg.Data(), seq)
		if d.err == nil {
			d.op = d.ev.Op
		} else {
			d.op, d.tx = opOf(msg.Data()), txOf(msg.Data())
		}
		items = append(items, d)
		if d.err != nil {
			break
		}
	}
	n := len(items)
	if n == 0 {
		return batchResult{done: true}, nil // restart at the hole
	}
	s.mu.Lock()
	s.head = max(s.head, head)
	s.mu.Unlock()

	events := make([]replication.Event, 0, len(items))
	for _, it := range items {
		if it.err != nil {
			break
		}
		events = append(events, it.ev)
	}
	if last := items[len(items)-1]; last.err != nil && last.tx != "" {
		// Not the first part of the bad event's transaction alone.
		for len(events) > 0 && string(events[len(events)-1].Tx) == last.tx {
			events = events[:len(events)-1]
		}
	}
	if len(events) > 0 {
		res, err := s.apply(ctx, events, s.batchContexts(items[:len(events)]))
		var inv *replication.InvalidEventError
		var gap *replication.GapError
		switch {
		case errors.As(err, &inv):
			// Apply what precedes the invalid event's transaction, then
			// stop at it.
			if keep := txStart(events, inv.Index); keep > 0 {
				if res, err = s.apply(ctx, events[:keep], s.batchContexts(items[:keep])); err != nil {
					return batchResult{done: true, used: n}, s.applyErr(err)
				}
				s.applied(res, items[keep-1].time)
			}
			bad := events[inv.Index]
			s.m.Events(bad.Op, "rejected", 1)
			return batchResult{done: true, out: s.stopAt(bad.Seq, bad.Op, inv.Msg), used: n}, nil
		case errors.As(err, &gap):
			// The index moved under us (a snapshot or batch over HTTP).
			s.log.Info("the index changed outside the stream; resuming from its applied_seq", "applied_seq", gap.AppliedSeq)
			return batchResult{done: true, used: n}, nil
		case err != nil:
			return batchResult{done: true, used: n}, s.applyErr(err)
		}
		s.applied(res, items[len(events)-1].time)
	}
	if last := items[len(items)-1]; last.err != nil {
		s.m.Events(last.op, "rejected", 1)
		return batchResult{done: true, out: s.stopAt(last.seq, last.op, last.err.Error()), used: n}, nil
	}
	if head <= s.ix.AppliedSeq() {
		s.markSynced(s.ix.AppliedSeq())
	}
	return batchResult{used: n}, nil
}

// apply applies events, waiting while a snapshot loads over HTTP. Its span's
// parent is the trace context of the batch's first message that carries one
// (none: a root span), and it links the other messages' distinct ones (tc).
func (s *Source) apply(ctx context.Context, events []replication.Event, tc *tracing.Contexts) (res replication.Result, err error) {
	if tr := s.cfg.Tracer; tr != nil {
		if _, sp := tr.StartBatch(ctx, tracing.SpanReplication, trace.SpanKindConsumer, tc); sp != nil {
			defer func() {
				b := tracing.Batch{Source: "nats", Events: len(events), Applied: res.Applied, Skipped: res.Skipped, AppliedSeq: s.ix.AppliedSeq()}
				if err != nil {
					b.Error = "apply_failed"
				}
				tracing.EndBatch(sp, b)
			}()
		}
	}
	for {
		res, err := s.repl.Apply(events)
		if !errors.Is(err, replication.ErrSnapshotInProgress) {
			return res, err
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (s *Source) applyErr(err error) error {
	return fmt.Errorf("applying events to the index: %w", err)
}

// applied records a committed batch: metrics, counters, lag.
func (s *Source) applied(res replication.Result, lastTime time.Time) {
	for op, n := range res.PerOp {
		s.m.Events(op, "applied", n.Applied)
		s.m.Events(op, "skipped", n.Skipped)
	}
	c := s.ix.Counts()
	s.m.IndexState(s.ix.AppliedSeq(), c.Users, c.Records)
	s.mu.Lock()
	s.st.Batches++
	s.st.EventsApplied += uint64(res.Applied)
	s.lastTime = lastTime
	s.mu.Unlock()
}

// jumpAtStart handles a consumer whose first message is not the one it
// started at: restart (and bootstrap) when the stream was trimmed past it,
// else the stream has a hole there: stop.
func (s *Source) jumpAtStart(ctx context.Context, stream jetstream.Stream, start, got uint64) (batchResult, error) {
	info, err := streamInfo(ctx, stream)
	if err != nil {
		return batchResult{done: true}, err
	}
	s.noteStream(info)
	if info.State.FirstSeq > start {
		return batchResult{done: true}, nil
	}
	out := s.stopAt(start, "", fmt.Sprintf("the stream has no event at seq %d (the next one is %d): "+
		"a message was deleted from the stream, or one was published to another subject than %s",
		start, got, s.cfg.Subject))
	return batchResult{done: true, out: out}, nil
}

// stopAt reports the stop at seq and returns the outcome.
func (s *Source) stopAt(seq uint64, op, msg string) outcome {
	what := fmt.Sprintf("event seq %d", seq)
	if op != "" {
		what += " (" + op + ")"
	}
	reason := fmt.Sprintf("%s is invalid: %s", what, msg)
	if op == "" {
		reason = msg
	}
	reason += fmt.Sprintf("; replication stopped at applied_seq %d. Fix: load a snapshot with seq >= %d "+
		"(PUT /v1/replication/snapshot, or crmauthz snapshot publish into the snapshot bucket); "+
		"replication resumes after it", seq-1, seq)
	return outcome{stop: true, seq: seq, reason: reason}
}

// opOf reads the op of an event that did not decode, for the metric label.
func opOf(raw []byte) string {
	if op, _ := strictjson.StringMember(raw, "op"); slices.Contains(replication.Ops, op) {
		return op
	}
	return "unknown"
}
