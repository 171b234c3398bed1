// Package decisionlog writes one JSON line per decision, in the shape of
// OPA's decision logs (the events of OPA's decision log plugin), so that the
// tools that read OPA's decision logs read crmauthz's:
//
//	{"labels": {"id": "…", "version": "…", "policy_revision": "…", "applied_seq": "42"},
//	 "decision_id": "…", "path": "crmauthz/decision",
//	 "input": {"subject": "u-2", "action": "edit", "resource": {"type": "contact", "id": "c-42"}},
//	 "result": {"allow": true, "reason": "follower"},
//	 "timestamp": "2026-11-27T08:00:00.123456789Z",
//	 "metrics": {"timer_server_handler_ns": 41250}}
//
// Logging never blocks a decision: a Logger queues entries on a bounded
// channel that one goroutine drains into the output; when the channel is
// full the entry is dropped and counted (Config.OnDrop). Masking, JSON
// encoding and writing happen in that goroutine, off the request path.
//
// A nil *Logger is a valid Logger that logs nothing: Sample returns false,
// so callers build no entry at all when logging is off.
package decisionlog

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Redacted is the value a masked field is replaced with.
const Redacted = "**REDACTED**"

// Reasons an entry is dropped, the label of OnDrop.
const (
	DropBufferFull = "buffer_full" // the queue was full: the writer is behind or blocked
	DropWriteError = "write_error" // the output failed
	DropClosed     = "closed"      // logged after Close
)

// Config configures New.
type Config struct {
	// Output receives the lines; required. It is written from one goroutine
	// that collects the entries of FlushInterval from the first one (or
	// until the queue is half full), then writes and flushes them: a line
	// reaches Output within about FlushInterval of its decision, and at a
	// steady rate of decisions the writer wakes and writes once per
	// interval, not once per decision.
	Output io.Writer
	// FlushInterval is the longest a written line waits in the buffer;
	// default 10ms.
	FlushInterval time.Duration
	// SampleRate is the fraction of decisions logged, in [0, 1]: 1 logs all,
	// 0.1 about one in ten (chosen at random per request). The zero value
	// logs all, like 1: to log none, do not create a Logger.
	SampleRate float64
	// Mask lists fields replaced by "**REDACTED**", and Erase fields
	// removed, each "input.…" or "result.…" with "." between keys (or a JSON
	// pointer, "/input/target"). A line lists the fields it masked or erased
	// as JSON pointers in "masked" and "erased", as OPA does.
	Mask, Erase []string
	// BufferSize is the number of entries the queue holds.
	// A /v1/decisions request is one entry however many checks it has.
	BufferSize int
	// InstanceID and Version are the labels "id" and "version".
	InstanceID, Version string
	// OnDrop, if set, is called with the reason (DropBufferFull,
	// DropWriteError, DropClosed) and the number of lines dropped. It must
	// be cheap and must not block: it is called on the request path.
	OnDrop func(reason string, lines int)
	// Logger gets the output's write errors (one line per failure, then one
	// when writing works again); default slog.Default().
	Logger *slog.Logger
	// CloseTimeout bounds how long Close waits for the queue to be written.
	CloseTimeout time.Duration
}

// DefaultConfig returns the defaults, which New fills in for zero fields
// (Output excepted): every decision logged, a queue of 4096 entries, 5 s to
// drain it at Close.
func DefaultConfig() Config {
	return Config{SampleRate: 1, BufferSize: 4096, CloseTimeout: 5 * time.Second}
}

// Logger queues decisions and writes them as JSON lines.
type Logger struct {
	cfg    Config
	rate   float64
	masks  []fieldPath
	ch     chan entry
	stop   chan struct{}
	nudge  chan struct{} // the queue is half full: write now
	done   chan struct{}
	closed atomic.Bool
	once   sync.Once

	// used by the writer goroutine only
	bw       *bufio.Writer
	buffered int // lines in bw not yet flushed
	failing  bool
	line     []byte // the line being encoded (line.go)
}

// fieldPath is one masked or erased field.
type fieldPath struct {
	segs    []string // first "input" or "result"
	pointer string   // "/input/target"
	erase   bool
}

// New checks cfg and starts the writer goroutine. Stop it with Close.
func New(cfg Config) (*Logger, error) {
	if cfg.Output == nil {
		return nil, errors.New("decisionlog: Config.Output is required")
	}
	if math.IsNaN(cfg.SampleRate) || cfg.SampleRate < 0 || cfg.SampleRate > 1 {
		return nil, fmt.Errorf("decisionlog: sample rate %v is not in [0, 1]", cfg.SampleRate)
	}
	d := DefaultConfig()
	if cfg.SampleRate == 0 {
		cfg.SampleRate = d.SampleRate
	}
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = d.BufferSize
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = d.CloseTimeout
	}
	if cfg.FlushInterval <= 0 {
		cfg.FlushInterval = 10 * time.Millisecond
	}
	l := &Logger{
		cfg:   cfg,
		rate:  cfg.SampleRate,
		ch:    make(chan entry, cfg.BufferSize),
		stop:  make(chan struct{}),
		nudge: make(chan struct{}, 1),
		done:  make(chan struct{}),
		bw:    bufio.NewWriterSize(cfg.Output, 64<<10),
	}
	for i, fields := range [][]string{cfg.Mask, cfg.Erase} {
		for _, f := range fields {
			p, err := parseField(f)
			if err != nil {
				return nil, err
			}
			p.erase = i == 1
			l.masks = append(l.masks, p)
		}
	}
	go l.run()
	return l, nil
}

// CheckField checks one field as Config.Mask and Config.Erase take it
// ("input.target" or "/input/target"), for a flag's validation.
func CheckField(f string) error {
	_, err := parseField(f)
	return err
}

// parseField parses "input.target" or "/input/target".
func parseField(f string) (fieldPath, error) {
	var segs []string
	if strings.HasPrefix(f, "/") {
		segs = strings.Split(f[1:], "/")
	} else {
		segs = strings.Split(f, ".")
	}
	for _, s := range segs {
		if s == "" {
			return fieldPath{}, fmt.Errorf("decisionlog: field %q has an empty key", f)
		}
	}
	if segs[0] != "input" && segs[0] != "result" {
		return fieldPath{}, fmt.Errorf("decisionlog: field %q: only fields of input and result can be masked (e.g. input.target)", f)
	}
	return fieldPath{segs: segs, pointer: "/" + strings.Join(segs, "/")}, nil
}

// Sample tells whether to log the decision at hand: false on a nil Logger
// (logging off), else true with probability Config.SampleRate. Call it
// before building an entry, so that a decision not logged costs nothing.
func (l *Logger) Sample() bool {
	if l == nil {
		return false
	}
	return l.rate >= 1 || rand.Float64() < l.rate
}

// Decision is one decision of POST /v1/decision.
type Decision struct {
	ID         string
	Subject    string
	Action     string
	Type       string // resource.type
	ResourceID string // resource.id
	Target     string
	HasTarget  bool // the input has a target
	Allow      bool
	Reason     string
	// Err, when not empty, is why there is no decision (the request was
	// denied with this error); Allow and Reason are then not logged.
	Err        string
	Revision   string
	AppliedSeq uint64
	Duration   time.Duration // the server's handling time so far
}

// Check is one check of a Batch and its result.
type Check struct {
	Action     string
	Type       string
	ResourceID string
	Target     string
	HasTarget  bool
	Allow      bool
	Reason     string
}

// Batch is one POST /v1/decisions request: one line per check, with the
// decision_id "<ID>-<index>" and the batch_decision_id ID.
type Batch struct {
	ID         string
	Subject    string
	Checks     []Check // not modified after the call
	Err        string  // the whole batch failed: one line with this error
	Revision   string
	AppliedSeq uint64
	Duration   time.Duration
}

// Query is one evaluation of the Data API (POST /v1/data/{path}).
type Query struct {
	ID         string
	Path       string          // e.g. "crmauthz/decision"
	Input      json.RawMessage // the request's input; nil when none; not modified after the call
	Result     any             // a JSON-compatible value, nil when undefined; not modified after the call
	Err        string
	Revision   string
	AppliedSeq uint64
	Duration   time.Duration
}

type entryKind uint8

const (
	kindDecision entryKind = iota
	kindBatch
	kindQuery
)

// entry is what the queue holds, by value.
type entry struct {
	kind entryKind
	ts   time.Time
	d    Decision
	b    Batch
	q    Query
}

// Decision queues one decision; it never blocks.
func (l *Logger) Decision(d Decision) {
	l.enqueue(entry{kind: kindDecision, ts: time.Now(), d: d}, 1)
}

// Batch queues the lines of one batch; it never blocks.
func (l *Logger) Batch(b Batch) {
	n := len(b.Checks)
	if b.Err != "" || n == 0 {
		n = 1
	}
	l.enqueue(entry{kind: kindBatch, ts: time.Now(), b: b}, n)
}

// Query queues one Data API evaluation; it never blocks.
func (l *Logger) Query(q Query) {
	l.enqueue(entry{kind: kindQuery, ts: time.Now(), q: q}, 1)
}

func (l *Logger) enqueue(e entry, lines int) {
	if l == nil {
		return
	}
	if l.closed.Load() {
		l.drop(DropClosed, lines)
		return
	}
	select {
	case l.ch <- e:
		if len(l.ch) >= cap(l.ch)/2 {
			select { // the writer is collecting: have it write now rather than drop later
			case l.nudge <- struct{}{}:
			default:
			}
		}
	default:
		l.drop(DropBufferFull, lines)
	}
}

func (l *Logger) drop(reason string, lines int) {
	if l.cfg.OnDrop != nil && lines > 0 {
		l.cfg.OnDrop(reason, lines)
	}
}

// Close writes what is queued and stops the writer. It waits at most
// Config.CloseTimeout (the output may be blocked), then gives up with an
// error; entries logged after Close are dropped. It does not close Output.
func (l *Logger) Close() error {
	if l == nil {
		return nil
	}
	var err error
	l.once.Do(func() {
		l.closed.Store(true)
		close(l.stop)
		select {
		case <-l.done:
		case <-time.After(l.cfg.CloseTimeout):
			err = fmt.Errorf("decisionlog: the output is blocked: %d queued entries not written after %s", len(l.ch), l.cfg.CloseTimeout)
		}
	})
	return err
}

func (l *Logger) run() {
	defer close(l.done)
	// Idle, the writer waits for an entry. From the first one it collects
	// entries for FlushInterval (or until the queue is half full, see
	// enqueue), then writes them all and flushes once. Waking for every
	// entry and a write(2) per decision cost the decisions more CPU than
	// encoding the lines.
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case e := <-l.ch:
			l.write(e)
		case <-l.stop:
			l.drain()
			return
		}
		timer.Reset(l.cfg.FlushInterval)
		select {
		case <-timer.C:
		case <-l.nudge:
			timer.Stop()
		case <-l.stop:
			timer.Stop()
			l.drain()
			return
		}
		for n := len(l.ch); n > 0; n-- {
			l.write(<-l.ch)
		}
		l.flush()
	}
}

// drain writes what is queued and flushes (at Close).
func (l *Logger) drain() {
	for {
		select {
		case e := <-l.ch:
			l.write(e)
		default:
			l.flush()
			return
		}
	}
}
