// Package replication decodes, validates and applies replication event batches
// and snapshots to the index (docs/reference.md §2.3).
//
// A batch is applied in one index write transaction together with its
// applied_seq, or not at all. A snapshot is streamed into a new index file and
// swapped in whole.
package replication

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"strings"
	"sync/atomic"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/strictjson"
)

// Config configures New.
type Config struct {
	Index *index.Index
	// MaxEvents is the most events one batch may hold.
	MaxEvents int
	// MaxLineBytes is the longest snapshot line accepted.
	MaxLineBytes int
}

// DefaultConfig returns the defaults, which New fills in for zero fields:
// 10,000 events per batch, snapshot lines of up to 1 MiB.
func DefaultConfig() Config {
	return Config{MaxEvents: 10_000, MaxLineBytes: 1 << 20}
}

// Replicator applies batches and snapshots to one index.
type Replicator struct {
	ix           *index.Index
	maxEvents    int
	maxLineBytes int
	loading      atomic.Bool
}

// New returns a Replicator for cfg.Index.
func New(cfg Config) (*Replicator, error) {
	if cfg.Index == nil {
		return nil, errors.New("replication: Config.Index is nil")
	}
	d := DefaultConfig()
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = d.MaxEvents
	}
	if cfg.MaxLineBytes <= 0 {
		cfg.MaxLineBytes = d.MaxLineBytes
	}
	return &Replicator{ix: cfg.Index, maxEvents: cfg.MaxEvents, maxLineBytes: cfg.MaxLineBytes}, nil
}

// Errors returned by this package. The server maps each to an HTTP status and
// an error code in one table.
var (
	// ErrTooManyEvents is returned by DecodeBatch when a batch holds more than MaxEvents events.
	ErrTooManyEvents = errors.New("too many events in one batch")
	// ErrSnapshotInProgress is returned by Apply and LoadSnapshot while a snapshot is being loaded.
	ErrSnapshotInProgress = errors.New("a snapshot is being loaded; retry when it is done")
)

// MalformedError is returned when a request body is not the JSON it must be
// (syntax errors, a wrong top-level shape, unknown top-level fields).
type MalformedError struct{ Msg string }

func (e *MalformedError) Error() string { return e.Msg }

// GapError is returned by Apply when the first new event is not applied_seq+1
// or the new events are not consecutive. Nothing was applied.
type GapError struct {
	AppliedSeq uint64 // the index's applied_seq, unchanged
	Want, Got  uint64
}

func (e *GapError) Error() string {
	return fmt.Sprintf("sequence gap: expected seq %d, got %d (applied_seq is %d)", e.Want, e.Got, e.AppliedSeq)
}

// InvalidEventError is returned by DecodeBatch and Apply when one event is
// invalid. Nothing of the batch was applied.
type InvalidEventError struct {
	Index int // 0-based position in events
	Msg   string
	Err   error // the cause (a *strictjson.Error, an index error), if any
}

func (e *InvalidEventError) Error() string { return fmt.Sprintf("event %d: %s", e.Index, e.Msg) }

// Unwrap gives the cause. A caller mapping errors to answers matches
// *InvalidEventError before the causes it may wrap (internal/server's table).
func (e *InvalidEventError) Unwrap() error { return e.Err }

// SnapshotLineError is returned by LoadSnapshot for a bad line. The old index stays.
type SnapshotLineError struct {
	Line int // 1-based
	Msg  string
	Err  error // the cause, if any
}

func (e *SnapshotLineError) Error() string { return fmt.Sprintf("snapshot line %d: %s", e.Line, e.Msg) }

// Unwrap gives the cause, as InvalidEventError's.
func (e *SnapshotLineError) Unwrap() error { return e.Err }

// Result is the reply to a batch.
type Result struct {
	AppliedSeq uint64 `json:"applied_seq"`
	Applied    int    `json:"applied"`
	Skipped    int    `json:"skipped"`
	// PerOp counts applied and skipped events by op, for metrics.
	PerOp map[string]OpCount `json:"-"`
}

// OpCount counts the events of one op in a batch.
type OpCount struct{ Applied, Skipped int }

// batchEnvelope is the body of a batch; its events are decoded one by one.
type batchEnvelope struct {
	Events *[]jsontext.Value `json:"events"`
}

// DecodeBatch reads {"events": [...]} strictly (internal/strictjson): unknown
// fields, trailing data and mistyped fields are errors, each event is
// validated on its own (an *InvalidEventError names its position). body is
// read whole; a read error (a size limit) is returned as strictjson.UnmarshalRead
// says.
func (r *Replicator) DecodeBatch(body io.Reader) ([]Event, error) {
	data, readErr := io.ReadAll(body)
	var envelope batchEnvelope
	err := strictjson.UnmarshalRead(data, readErr, &envelope)
	var se *strictjson.Error
	if errors.As(err, &se) && strings.HasPrefix(se.Pointer, "/events/") &&
		(errors.Is(err, strictjson.ErrDuplicateKey) || errors.Is(err, strictjson.ErrInvalidUTF8)) {
		// A key twice or bad UTF-8 inside an event is that event's error
		// (422 with its index), found after the events before it: read
		// the envelope again without looking into the events.
		envelope = batchEnvelope{}
		err = strictjson.UnmarshalRaw(data, &envelope)
	}
	if err != nil {
		return nil, err
	}
	if envelope.Events == nil {
		return nil, &MalformedError{Msg: `the body must be {"events": [...]}: "events" is missing`}
	}
	raw := *envelope.Events
	if len(raw) > r.maxEvents {
		return nil, fmt.Errorf("%w: %d events, at most %d", ErrTooManyEvents, len(raw), r.maxEvents)
	}
	events := make([]Event, len(raw))
	for i, m := range raw {
		e, err := DecodeEvent(m, 0)
		if err != nil {
			return nil, &InvalidEventError{Index: i, Msg: err.Error(), Err: err}
		}
		events[i] = e
	}
	return events, nil
}

// DecodeEvent decodes and validates one event, strictly (unknown fields,
// trailing data and mistyped fields are errors). pos is the event's position
// in a log that numbers its entries itself (a JetStream stream sequence), or
// 0: when pos is not 0 the event takes it as its seq, and a "seq" the event
// carries must equal it. DecodeBatch uses it for every element of "events",
// with pos 0, so the HTTP API and a stream accept exactly the same events.
func DecodeEvent(raw []byte, pos uint64) (Event, error) {
	var e Event
	if err := strictjson.Unmarshal(raw, &e); err != nil {
		return Event{}, err
	}
	if pos != 0 {
		switch e.Seq {
		case 0:
			e.Seq = pos
		case pos:
		default:
			return Event{}, fmt.Errorf("seq %d does not match the position %d the event was read from", e.Seq, pos)
		}
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// Apply applies the new events of a validated batch in one write transaction.
// Events with seq <= applied_seq are skipped; the first new one must be
// applied_seq+1 and the rest consecutive.
func (r *Replicator) Apply(events []Event) (Result, error) {
	if r.loading.Load() {
		return Result{}, ErrSnapshotInProgress
	}
	var res Result
	err := r.ix.Update(func(w *index.WriteTx) error {
		res = Result{PerOp: map[string]OpCount{}}
		start := w.AppliedSeq()
		cur := start
		for i := range events {
			e := &events[i]
			c := res.PerOp[e.Op]
			if e.Seq <= start && cur == start {
				res.Skipped++
				c.Skipped++
				res.PerOp[e.Op] = c
				continue
			}
			if e.Seq != cur+1 {
				return &GapError{AppliedSeq: start, Want: cur + 1, Got: e.Seq}
			}
			if err := applyOne(w, e); err != nil {
				if isInvalid(err) {
					return &InvalidEventError{Index: i, Msg: fmt.Sprintf("%s: %v", e.Op, err)}
				}
				return err
			}
			cur = e.Seq
			res.Applied++
			c.Applied++
			res.PerOp[e.Op] = c
		}
		res.AppliedSeq = cur
		if cur != start {
			return w.SetAppliedSeq(cur)
		}
		return nil
	})
	if err != nil {
		return Result{}, err
	}
	return res, nil
}

// isInvalid tells the index's errors that a client caused (the event is
// invalid against the index) from I/O errors.
func isInvalid(err error) bool {
	return errors.Is(err, index.ErrRecordNotFound) || errors.Is(err, index.ErrTooManyFollowers) ||
		errors.Is(err, index.ErrInvalidID)
}

func applyOne(w *index.WriteTx, e *Event) error {
	switch e.Op {
	case OpUserUpsert:
		u, err := e.User.ToUser()
		if err != nil {
			return err
		}
		return w.PutUser(u)
	case OpUserDelete:
		return w.DeleteUser(*e.UserID)
	case OpRecordUpsert:
		rec, err := e.Record.ToRecord()
		if err != nil {
			return err
		}
		return w.PutRecord(rec)
	case OpRecordDelete:
		return w.DeleteRecord(e.Type, e.ID)
	case OpFollowerAdd:
		return w.AddFollower(e.Type, e.ID, *e.UserID)
	case OpFollowerRemove:
		return w.RemoveFollower(e.Type, e.ID, *e.UserID)
	case OpOwnerSet:
		return w.SetOwner(e.Type, e.ID, *e.UserID)
	}
	return fmt.Errorf("%w: unknown op %q", index.ErrInvalidID, e.Op) // unreachable after Validate
}

// SnapshotResult is the reply to a snapshot load.
type SnapshotResult struct {
	AppliedSeq uint64 `json:"applied_seq"`
	Users      int    `json:"users"`
	Records    int    `json:"records"`
}

type snapshotHeader struct {
	Seq *uint64 `json:"seq"`
}

type snapshotLine struct {
	User   *UserDoc   `json:"user"`
	Record *RecordDoc `json:"record"`
}

// LoadSnapshot streams NDJSON (first line {"seq": N}, then one {"user": …} or
// {"record": …} per line; blank lines are ignored) into a new index that
// replaces the old one atomically. Memory does not grow with the input: lines
// are read one at a time and written in chunks.
func (r *Replicator) LoadSnapshot(body io.Reader) (SnapshotResult, error) {
	if !r.loading.CompareAndSwap(false, true) {
		return SnapshotResult{}, ErrSnapshotInProgress
	}
	defer r.loading.Store(false)

	lr := &lineReader{r: bufio.NewReaderSize(body, 64<<10), max: r.maxLineBytes}
	line, err := lr.next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return SnapshotResult{}, &SnapshotLineError{Line: 1, Msg: `empty snapshot: the first line must be {"seq": N}`}
		}
		return SnapshotResult{}, lineErr(lr.n, err)
	}
	var hdr snapshotHeader
	if err := strictjson.Unmarshal(line, &hdr); err != nil || hdr.Seq == nil {
		msg := `the first line must be {"seq": N}`
		if err != nil {
			msg += ": " + err.Error()
		}
		return SnapshotResult{}, &SnapshotLineError{Line: lr.n, Msg: msg, Err: err}
	}
	res := SnapshotResult{AppliedSeq: *hdr.Seq}
	err = r.ix.ReplaceAll(*hdr.Seq, func(l *index.Loader) error {
		for {
			line, err := lr.next()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return lineErr(lr.n, err)
			}
			var sl snapshotLine
			if err := strictjson.Unmarshal(line, &sl); err != nil {
				return &SnapshotLineError{Line: lr.n, Msg: err.Error(), Err: err}
			}
			switch {
			case sl.User != nil && sl.Record == nil:
				u, err := sl.User.ToUser()
				if err != nil {
					return &SnapshotLineError{Line: lr.n, Msg: err.Error()}
				}
				if err := l.PutUser(u); err != nil {
					return snapshotApplyErr(lr.n, err)
				}
				res.Users++
			case sl.Record != nil && sl.User == nil:
				rec, err := sl.Record.ToRecord()
				if err != nil {
					return &SnapshotLineError{Line: lr.n, Msg: err.Error()}
				}
				if err := l.PutRecord(rec); err != nil {
					return snapshotApplyErr(lr.n, err)
				}
				res.Records++
			default:
				return &SnapshotLineError{Line: lr.n, Msg: `a line holds exactly one of {"user": …} or {"record": …}`}
			}
		}
	})
	if err != nil {
		return SnapshotResult{}, err
	}
	return res, nil
}

// snapshotApplyErr turns the index's validation errors into a line error and lets I/O errors through.
func snapshotApplyErr(line int, err error) error {
	if isInvalid(err) {
		return &SnapshotLineError{Line: line, Msg: err.Error()}
	}
	return err
}

func lineErr(line int, err error) error {
	if errors.Is(err, errLineTooLong) {
		return &SnapshotLineError{Line: line, Msg: err.Error()}
	}
	return err // the body's own read error (size limit, timeout, client gone)
}

var errLineTooLong = errors.New("line too long")

// lineReader yields non-blank lines with their 1-based numbers.
type lineReader struct {
	r   *bufio.Reader
	max int
	n   int
	buf []byte
}

func (lr *lineReader) next() ([]byte, error) {
	for {
		lr.buf = lr.buf[:0]
		for {
			chunk, err := lr.r.ReadSlice('\n')
			lr.buf = append(lr.buf, chunk...)
			if len(lr.buf) > lr.max+2 {
				lr.n++
				return nil, fmt.Errorf("%w: more than %d bytes", errLineTooLong, lr.max)
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				continue
			}
			if err != nil && !(errors.Is(err, io.EOF) && len(lr.buf) > 0) {
				return nil, err
			}
			break
		}
		lr.n++
		line := bytes.TrimSpace(lr.buf)
		if len(line) > 0 {
			return line, nil
		}
	}
}

// WriteSnapshot writes the index as snapshot NDJSON from one read transaction:
// a consistent point-in-time copy.
func (r *Replicator) WriteSnapshot(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	enc := json.NewEncoder(bw)
	err := r.ix.View(func(tx *index.ReadTx) error {
		if err := enc.Encode(map[string]uint64{"seq": tx.AppliedSeq()}); err != nil {
			return err
		}
		if err := tx.ForEachUser(func(u index.User) error {
			return enc.Encode(struct {
				User index.User `json:"user"`
			}{u})
		}); err != nil {
			return err
		}
		return tx.ForEachRecord(func(rec index.Record) error {
			return enc.Encode(struct {
				Record index.Record `json:"record"`
			}{rec})
		})
	})
	if err != nil {
		return err
	}
	return bw.Flush()
}
