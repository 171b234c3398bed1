// Package natspub writes the replication log of a fleet of sidecars to NATS
// JetStream (docs/scaling.md): events to a stream, each at the stream sequence
// that is its seq (Appender, Publish), and snapshots as objects of an object
// store bucket (PutSnapshot). crmauthz publish, crmauthz snapshot publish and
// the NATS sink of the connectors (internal/connect/sink) write with it;
// internal/natssource reads what it writes.
package natspub

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/strictjson"
	"github.com/crmauthz/crmauthz/internal/tracing"
)

// Config names where a fleet's replication log lives in NATS: the stream of
// the events and their subject, and the object store bucket and object name
// of the snapshots. Writers (crmauthz publish, the connectors' NATS sink)
// and the reader (internal/natssource) start from DefaultConfig, so that both
// meet on the same stream when neither is told otherwise.
type Config struct {
	Stream, Subject, SnapshotBucket, SnapshotName string
}

// DefaultConfig returns the names of docs/scaling.md.
func DefaultConfig() Config {
	return Config{Stream: "CRMAUTHZ", Subject: "crmauthz.events",
		SnapshotBucket: "CRMAUTHZ_SNAPSHOTS", SnapshotName: "snapshot"}
}

// SeqMetadata is the key of a snapshot object's metadata that holds its seq
// (the seq of its first line); SeqHeader the same as an object header.
const (
	SeqMetadata = "crmauthz-seq"
	SeqHeader   = "Crmauthz-Seq"
)

// EventReader yields the events of a file: NDJSON, one event per line (blank
// lines ignored), or one {"events": [...]} document (the HTTP API's batch
// body). A file whose first non-blank line is not a whole JSON value is read
// as one document.
type EventReader struct {
	br      *bufio.Reader
	line    int
	batch   []json.RawMessage // the events of a document, when it is one
	isBatch bool
	started bool
	// Pos is the 1-based position of the last event returned; Line its line
	// (NDJSON only, else 0).
	Pos, Line int
}

// NewEventReader reads events from r.
func NewEventReader(r io.Reader) *EventReader {
	return &EventReader{br: bufio.NewReaderSize(r, 1<<20)}
}

// Next returns the next event's JSON, or io.EOF after the last.
func (er *EventReader) Next() (json.RawMessage, error) {
	if !er.started {
		er.started = true
		first, err := er.nextLine()
		if err != nil {
			return nil, err
		}
		var probe map[string]json.RawMessage
		if json.Unmarshal(first, &probe) != nil || (probe["events"] != nil && probe["op"] == nil) {
			rest, err := io.ReadAll(er.br)
			if err != nil {
				return nil, err
			}
			var env struct {
				Events *[]json.RawMessage `json:"events"`
			}
			doc := append(append(first, '\n'), rest...)
			if err := strictjson.UnmarshalRaw(doc, &env); err != nil || env.Events == nil { // the events are decoded one by one
				if err == nil {
					err = errors.New(`"events" is missing`)
				}
				return nil, fmt.Errorf("the file is neither NDJSON (one event per line) nor an {\"events\": [...]} document: %w", err)
			}
			er.isBatch, er.batch, er.Line = true, *env.Events, 0
		} else {
			er.Pos++
			return first, nil
		}
	}
	if er.isBatch {
		if len(er.batch) == 0 {
			return nil, io.EOF
		}
		e := er.batch[0]
		er.batch = er.batch[1:]
		er.Pos++
		return e, nil
	}
	l, err := er.nextLine()
	if err != nil {
		return nil, err
	}
	er.Pos++
	return l, nil
}

// nextLine returns the next non-blank line (a copy), setting Line.
func (er *EventReader) nextLine() ([]byte, error) {
	for {
		l, err := er.br.ReadBytes('\n')
		if len(l) == 0 && err != nil {
			return nil, err
		}
		er.line++
		if t := bytes.TrimSpace(l); len(t) > 0 {
			er.Line = er.line
			return t, nil
		}
		if err != nil {
			return nil, err
		}
	}
}

// PublishResult says what Publish did.
type PublishResult struct {
	Published int    `json:"published"`
	Skipped   int    `json:"skipped"` // events with a seq the stream holds already
	FirstSeq  uint64 `json:"first_seq,omitempty"`
	LastSeq   uint64 `json:"last_seq"` // the stream's last seq afterwards
}

// PublishOptions configure Publish.
type PublishOptions struct {
	Stream, Subject string
	// DryRun validates every event (and its seq against the stream) and
	// publishes nothing.
	DryRun bool
	// Tracer, if set, puts the trace context of ctx's span into each
	// message's headers (Appender.Tracer); nil: off.
	Tracer *tracing.Tracer
}

// Publish publishes the events of er to the stream, one message per event,
// in order, each with an expected-last-sequence check so that every event
// gets the seq it was meant to have: an event's "seq", when present, must be
// the stream's next sequence (an event whose seq the stream holds already is
// skipped, so re-running a file resumes it); an event without one gets the
// next sequence. Every event is validated (replication.DecodeEvent at its
// seq) before it is sent; at the first invalid one, or a refused publish,
// Publish stops: the stream then holds a prefix of the file, which the
// result and the error describe.
func Publish(ctx context.Context, js jetstream.JetStream, er *EventReader, o PublishOptions) (PublishResult, error) {
	stream, err := js.Stream(ctx, o.Stream)
	if err != nil {
		return PublishResult{}, fmt.Errorf("the stream %q: %w", o.Stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return PublishResult{}, fmt.Errorf("the stream %q: %w", o.Stream, err)
	}
	last := info.State.LastSeq
	res := PublishResult{LastSeq: last}
	app := NewAppender(js, o.Stream, o.Subject)
	app.Tracer = o.Tracer
	app.OnAck = func(seq uint64) {
		res.Published++
		res.LastSeq = seq
		if res.FirstSeq == 0 {
			res.FirstSeq = seq
		}
	}
	settle := func() error { return app.Settle(ctx) }
	next := last + 1
	for {
		raw, err := er.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return res, errors.Join(settle(), err)
		}
		where := fmt.Sprintf("event %d", er.Pos)
		if er.Line > 0 {
			where += fmt.Sprintf(" (line %d)", er.Line)
		}
		var probe struct {
			Seq *uint64 `json:"seq"`
		}
		_ = json.Unmarshal(raw, &probe)
		if probe.Seq != nil && *probe.Seq != 0 {
			if *probe.Seq < next {
				if *probe.Seq <= last {
					res.Skipped++
					continue
				}
				return res, errors.Join(settle(), fmt.Errorf("%s: seq %d comes after seq %d in the file", where, *probe.Seq, next-1))
			}
			if *probe.Seq > next {
				return res, errors.Join(settle(), fmt.Errorf("%s: seq %d, but the stream's next seq is %d (a gap)", where, *probe.Seq, next))
			}
		}
		if _, err := replication.DecodeEvent(raw, next); err != nil {
			return res, errors.Join(settle(), fmt.Errorf("%s is invalid: %w", where, err))
		}
		if !o.DryRun {
			if err := app.Send(ctx, raw, next, where); err != nil {
				return res, errors.Join(settle(), err)
			}
		}
		next++
	}
	return res, settle()
}

// Appender publishes events to a stream, each at the stream sequence it is
// meant to have: every message carries an expected-last-sequence check
// (stream seq = event seq), so another writer in between makes a publish
// fail rather than shift the seqs. Publishes are asynchronous; Settle waits
// for their acknowledgements. It is what Publish and the NATS sink of the
// connectors (internal/connect/sink) write with.
type Appender struct {
	js              jetstream.JetStream
	stream, subject string
	inflight        []inflightMsg
	// OnAck, when set, is called with the seq of each acknowledged event,
	// in order.
	OnAck func(seq uint64)
	// AckTimeout bounds the wait for one acknowledgement; default 30s.
	AckTimeout time.Duration
	// Tracer, if set, writes the W3C trace context of the span of Send's ctx
	// (traceparent, tracestate) into the message's headers, so that the
	// sidecar's span of the batch that applies it is a child of that span
	// (docs/operations.md, "Tracing"); nil: off, no headers.
	Tracer *tracing.Tracer
}

type inflightMsg struct {
	seq   uint64
	where string
	f     jetstream.PubAckFuture
}

// NewAppender returns an Appender to stream, publishing on subject.
func NewAppender(js jetstream.JetStream, stream, subject string) *Appender {
	return &Appender{js: js, stream: stream, subject: subject, AckTimeout: 30 * time.Second}
}

// Send publishes data as the event at seq (the stream's last seq must be
// seq-1 when it arrives); where names it in errors. It settles on its own
// every 4096 messages in flight.
func (a *Appender) Send(ctx context.Context, data []byte, seq uint64, where string) error {
	msg := nats.NewMsg(a.subject)
	msg.Data = data
	if a.Tracer != nil {
		a.Tracer.InjectMessage(ctx, msg.Header)
	}
	f, err := a.js.PublishMsgAsync(msg, jetstream.WithExpectStream(a.stream), jetstream.WithExpectLastSequence(seq-1))
	if err != nil {
		return fmt.Errorf("%s: publishing: %w", where, err)
	}
	a.inflight = append(a.inflight, inflightMsg{seq: seq, where: where, f: f})
	if len(a.inflight) >= 4096 {
		return a.Settle(ctx)
	}
	return nil
}

// Settle waits for the acknowledgements of the events sent so far. After an
// error the stream holds a prefix of them (those acknowledged before it).
func (a *Appender) Settle(ctx context.Context) error {
	defer func() { a.inflight = a.inflight[:0] }()
	timeout := time.NewTimer(a.AckTimeout)
	defer timeout.Stop()
	for _, s := range a.inflight {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout.C:
			return fmt.Errorf("no acknowledgement for %s (seq %d) in %s; the stream may hold it or not "+
				"(its last seq says)", s.where, s.seq, a.AckTimeout)
		case ack := <-s.f.Ok():
			if ack.Sequence != s.seq {
				return fmt.Errorf("%s was stored at seq %d, not %d", s.where, ack.Sequence, s.seq)
			}
			if a.OnAck != nil {
				a.OnAck(s.seq)
			}
		case err := <-s.f.Err():
			return fmt.Errorf("%s (seq %d) was refused: %w; the stream holds the events before it", s.where, s.seq, err)
		}
	}
	return nil
}

// SnapshotSeq reads the {"seq": N} first line of a snapshot, returning it
// with the line, so the caller can put it back in front of the rest.
func SnapshotSeq(br *bufio.Reader) (uint64, []byte, error) {
	line, err := br.ReadBytes('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, nil, err
	}
	var hdr struct {
		Seq *uint64 `json:"seq"`
	}
	if err := strictjson.Unmarshal(line, &hdr); err != nil || hdr.Seq == nil {
		return 0, nil, fmt.Errorf(`a snapshot's first line must be {"seq": N}`)
	}
	return *hdr.Seq, line, nil
}

// PutSnapshot stores a snapshot (NDJSON whose first line says {"seq": seq})
// as the object name of bucket, with its seq in the object's metadata
// (SeqMetadata) and headers (SeqHeader). A sidecar that needs a snapshot
// loads the object with the highest seq.
//
// With a Tracer (nil: off) the put is a producer span
// crmauthz.snapshot.publish, a child of ctx's span when it has one, whose
// W3C trace context (traceparent, tracestate) the object's headers carry, so
// that a sidecar's span of its load is a child of it (docs/operations.md,
// "Tracing").
func PutSnapshot(ctx context.Context, obs jetstream.ObjectStore, name string, seq uint64, r io.Reader, tr *tracing.Tracer) (info *jetstream.ObjectInfo, err error) {
	s := strconv.FormatUint(seq, 10)
	hdr := nats.Header{SeqHeader: []string{s}}
	if tr != nil {
		var sp trace.Span
		if ctx, sp = tr.StartSampled(ctx, tracing.SpanSnapshotPublish, trace.SpanKindProducer); sp != nil {
			defer func() {
				var size uint64
				if info != nil {
					size = info.Size
				}
				tracing.EndSnapshotPublish(sp, seq, size, err)
			}()
		}
		// Also when not sampled: the sidecars then follow its sampled flag.
		tr.InjectMessage(ctx, hdr)
	}
	return obs.Put(ctx, jetstream.ObjectMeta{
		Name:        name,
		Description: "crmauthz snapshot at seq " + s,
		Headers:     hdr,
		Metadata:    map[string]string{SeqMetadata: s},
	}, r)
}
