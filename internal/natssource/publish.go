package natssource

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

	"github.com/crmauthz/crmauthz/internal/replication"
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
			if err := replication.DecodeStrict(bytes.NewReader(doc), &env); err != nil || env.Events == nil {
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
	type sent struct {
		seq uint64
		pos int
		f   jetstream.PubAckFuture
	}
	var inflight []sent
	// settle waits for the acks of the events sent so far.
	settle := func() error {
		timeout := time.NewTimer(30 * time.Second)
		defer timeout.Stop()
		for _, s := range inflight {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-timeout.C:
				return fmt.Errorf("no acknowledgement for event %d (seq %d) in 30s; the stream may hold it or not: "+
					"run again with seqs in the file to resume safely", s.pos, s.seq)
			case ack := <-s.f.Ok():
				if ack.Sequence != s.seq {
					return fmt.Errorf("event %d was stored at seq %d, not %d", s.pos, ack.Sequence, s.seq)
				}
				res.Published++
				res.LastSeq = s.seq
				if res.FirstSeq == 0 {
					res.FirstSeq = s.seq
				}
			case err := <-s.f.Err():
				return fmt.Errorf("event %d (seq %d) was refused: %w; the stream holds the events before it", s.pos, s.seq, err)
			}
		}
		inflight = inflight[:0]
		return nil
	}
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
			msg := nats.NewMsg(o.Subject)
			msg.Data = raw
			f, err := js.PublishMsgAsync(msg, jetstream.WithExpectStream(o.Stream), jetstream.WithExpectLastSequence(next-1))
			if err != nil {
				return res, errors.Join(settle(), fmt.Errorf("%s: publishing: %w", where, err))
			}
			inflight = append(inflight, sent{seq: next, pos: er.Pos, f: f})
			if len(inflight) >= 4096 {
				if err := settle(); err != nil {
					return res, err
				}
			}
		}
		next++
	}
	return res, settle()
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
	if err := replication.DecodeStrict(bytes.NewReader(line), &hdr); err != nil || hdr.Seq == nil {
		return 0, nil, fmt.Errorf(`a snapshot's first line must be {"seq": N}`)
	}
	return *hdr.Seq, line, nil
}

// PutSnapshot stores a snapshot (NDJSON whose first line says {"seq": seq})
// as the object name of bucket, with its seq in the object's metadata
// (SeqMetadata) and headers (SeqHeader). A sidecar that needs a snapshot
// loads the object with the highest seq.
func PutSnapshot(ctx context.Context, obs jetstream.ObjectStore, name string, seq uint64, r io.Reader) (*jetstream.ObjectInfo, error) {
	s := strconv.FormatUint(seq, 10)
	return obs.Put(ctx, jetstream.ObjectMeta{
		Name:        name,
		Description: "crmauthz snapshot at seq " + s,
		Headers:     nats.Header{SeqHeader: []string{s}},
		Metadata:    map[string]string{SeqMetadata: s},
	}, r)
}
