// Package natssource feeds the index from a NATS JetStream stream: the
// replication log of a fleet of sidecars (docs/scaling.md).
//
// Each sidecar reads the stream with its own ordered consumer (ephemeral,
// in-memory on the server, no acks), starting at applied_seq+1. The stream
// sequence of a message IS its replication seq: a message holds one event,
// the JSON of one element of the "events" array, whose own "seq" may be
// left out (the stream sequence is used) and, when present, must equal the
// stream sequence. Events are decoded and applied by internal/replication
// (DecodeEvent, Apply, LoadSnapshot): exactly what the HTTP API accepts, with
// the same atomicity. What is available is applied in batches: up to
// Config.MaxBatch events, collected for at most Config.BatchWait after the
// first, in one bbolt transaction.
//
// The source stops applying, rather than skip anything, when the stream holds
// an invalid event or a gap (a message deleted from the middle of the
// stream). It reports that in Status and NotReady (/health/ready,
// /v1/status) and resumes once the index has applied the bad seq by other
// means: a snapshot whose seq is at least the bad one (PUT
// /v1/replication/snapshot, or an object in Config.SnapshotBucket).
//
// When the stream no longer holds applied_seq+1 (trimmed by its limits or
// purged), the source bootstraps from a snapshot: the newest object of
// Config.SnapshotBucket whose seq is recent enough, or else it waits for a
// PUT /v1/replication/snapshot, not ready, saying so.
package natssource

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/replication"
)

// SeqMetadata is the key of a snapshot object's metadata that holds its seq
// (the seq of its first line); SeqHeader the same as an object header.
const (
	SeqMetadata = "crmauthz-seq"
	SeqHeader   = "Crmauthz-Seq"
)

// Config configures New. URL, Stream, Subject, Index, Replicator and Metrics
// are required.
type Config struct {
	// URL of the NATS servers: nats://host:port or tls://host:port,
	// comma-separated for a cluster.
	URL string
	// Stream is the JetStream stream holding the replication log. It must
	// hold only crmauthz events (see Subject): its sequence numbers are the
	// replication seqs.
	Stream string
	// Subject the events are published to; the consumer's filter. A message
	// of the stream on another subject is a gap (the stream is not dedicated).
	Subject string
	// Auth holds the credentials and TLS files.
	Auth Auth
	// SnapshotBucket is a JetStream object store bucket of snapshots
	// (crmauthz snapshot publish); "" for none: a sidecar that needs a
	// snapshot then waits for a PUT /v1/replication/snapshot.
	SnapshotBucket string
	// Name is the NATS connection name; default "crmauthz".
	Name string

	Index      *index.Index
	Replicator *replication.Replicator
	Metrics    *metrics.Metrics
	Logger     *slog.Logger // default slog.Default()

	// MaxBatch is the most events applied in one transaction; default 1000.
	MaxBatch int
	// BatchWait is how long to wait for more events after the first of a
	// batch; default 2ms.
	BatchWait time.Duration
	// PollInterval is how often the stream's state is read (lag, trimming)
	// and, while waiting for a snapshot, the bucket looked at; default 1s.
	PollInterval time.Duration
	// MaxBackoff bounds the wait between reconnection attempts; default 10s
	// (starting at 100ms, doubling, with jitter).
	MaxBackoff time.Duration
}

// State is what the source is doing.
type State string

// The states of a Source.
const (
	// StateConnecting: connecting to NATS or looking the stream up.
	StateConnecting State = "connecting"
	// StateCatchingUp: reading the stream, not yet level with its head since
	// the start.
	StateCatchingUp State = "catching_up"
	// StateStreaming: reading the stream; it was level with the head at
	// least once since the start (lag_events says how far behind it is now).
	StateStreaming State = "streaming"
	// StateWaitingForSnapshot: the stream no longer holds applied_seq+1.
	StateWaitingForSnapshot State = "waiting_for_snapshot"
	// StateLoadingSnapshot: loading a snapshot object from the bucket.
	StateLoadingSnapshot State = "loading_snapshot"
	// StateStopped: an invalid event or a gap in the stream; nothing more is
	// applied until the index has applied that seq by a snapshot.
	StateStopped State = "stopped"
	// StateAheadOfStream: applied_seq is beyond the stream's last seq (the
	// stream was recreated, or the index comes from another log).
	StateAheadOfStream State = "ahead_of_stream"
	// StateReconnecting: the connection or the stream was lost; retrying.
	StateReconnecting State = "reconnecting"
	// StateNoStream: the server says the stream does not exist (deleted, or
	// never created); retrying. Not ready: the index may miss anything.
	StateNoStream State = "stream_not_found"
)

// errNoStream is the error of a session that found no stream.
var errNoStream = errors.New("stream not found")

// Status is the source's state as /v1/status shows it.
type Status struct {
	Source  string `json:"source"` // "nats"
	URL     string `json:"url"`    // without credentials
	Stream  string `json:"stream"`
	Subject string `json:"subject"`
	Bucket  string `json:"snapshot_bucket,omitempty"`
	State   State  `json:"state"`
	// Connected tells whether the NATS connection is up now.
	Connected bool `json:"connected"`
	// Synced: the index was level with the stream's head at least once
	// since the start; until then the sidecar is not ready.
	Synced         bool    `json:"synced"`
	AppliedSeq     uint64  `json:"applied_seq"`
	StreamFirstSeq uint64  `json:"stream_first_seq"`
	StreamLastSeq  uint64  `json:"stream_last_seq"`
	LagEvents      uint64  `json:"lag_events"`
	LagSeconds     float64 `json:"lag_seconds"`
	// StoppedAtSeq is the seq of the invalid event or of the gap (stopped).
	StoppedAtSeq uint64 `json:"stopped_at_seq,omitempty"`
	// Reason says why the source is not streaming, and what fixes it.
	Reason    string `json:"reason,omitempty"`
	LastError string `json:"last_error,omitempty"`
	// Batches and EventsApplied count the transactions and events applied
	// from the stream since the start; SnapshotsLoaded the snapshot objects.
	Batches         uint64 `json:"batches"`
	EventsApplied   uint64 `json:"events_applied"`
	SnapshotsLoaded uint64 `json:"snapshots_loaded"`
}

// Source reads the stream into the index. Run it once; Close stops it.
type Source struct {
	cfg  Config
	log  *slog.Logger
	ix   *index.Index
	repl *replication.Replicator
	m    *metrics.Metrics
	opts []nats.Option
	url  string // redacted

	stopCh    chan struct{}
	stopOnce  sync.Once
	done      chan struct{}
	runOnce   sync.Once
	runCalled bool

	mu sync.Mutex
	st Status
	// head is the stream's last seq as last seen (stream info, or a
	// message's sequence plus the consumer's pending count).
	head uint64
	// pending is the publish time of message pendingSeq, the oldest not yet
	// applied when pendingSeq == applied_seq+1; lastTime that of the last
	// applied message.
	pendingSeq  uint64
	pendingTime time.Time
	lastTime    time.Time
	// restart cancels the running consumer, so the session re-reads the
	// stream's state (set while a consumer runs).
	restart context.CancelFunc
	// ahead remembers the applied_seq found beyond the stream's end: the
	// source stays stopped until applied_seq changes.
	ahead uint64
	// readable: the last read of the stream's state succeeded.
	readable bool
}

// New checks cfg and returns a Source. It registers the lag gauges on
// cfg.Metrics.
func New(cfg Config) (*Source, error) {
	switch {
	case cfg.Index == nil || cfg.Replicator == nil || cfg.Metrics == nil:
		return nil, errors.New("natssource: Index, Replicator and Metrics are required")
	case cfg.Stream == "":
		return nil, errors.New("natssource: the stream name is empty")
	case cfg.Subject == "":
		return nil, errors.New("natssource: the subject is empty")
	}
	if err := CheckURL(cfg.URL); err != nil {
		return nil, fmt.Errorf("natssource: %w", err)
	}
	opts, err := cfg.Auth.Options()
	if err != nil {
		return nil, fmt.Errorf("natssource: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Name == "" {
		cfg.Name = "crmauthz"
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 1000
	}
	if cfg.BatchWait <= 0 {
		cfg.BatchWait = 2 * time.Millisecond
	}
	if cfg.PollInterval <= 0 {
		cfg.PollInterval = time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	s := &Source{
		cfg: cfg, ix: cfg.Index, repl: cfg.Replicator, m: cfg.Metrics,
		url:    Redact(cfg.URL),
		stopCh: make(chan struct{}), done: make(chan struct{}),
	}
	s.log = cfg.Logger.With("component", "nats-source", "stream", cfg.Stream)
	s.opts = append(opts, nats.Name(cfg.Name),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				s.log.Warn("disconnected from NATS", "err", err)
			}
			s.setConnected(false)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			s.log.Info("reconnected to NATS", "server", nc.ConnectedUrlRedacted())
			s.setConnected(true)
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			s.log.Warn("NATS error", "err", err)
		}),
	)
	s.st = Status{Source: "nats", URL: s.url, Stream: cfg.Stream, Subject: cfg.Subject,
		Bucket: cfg.SnapshotBucket, State: StateConnecting}
	cfg.Metrics.ReplicationLag(s.lag)
	return s, nil
}

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
		wait := Backoff(attempt, 100*time.Millisecond, s.cfg.MaxBackoff)
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

// Close stops Run and waits for it to return. It is idempotent.
func (s *Source) Close() error {
	s.stopOnce.Do(func() { close(s.stopCh) })
	s.mu.Lock()
	running := s.runCalled
	s.mu.Unlock()
	if running {
		<-s.done
	}
	return nil
}

// Status returns the source's state now.
func (s *Source) Status() Status {
	l := s.lag()
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.st
	st.AppliedSeq = s.ix.AppliedSeq()
	st.StreamLastSeq = max(st.StreamLastSeq, s.head)
	st.LagEvents, st.LagSeconds = l.Events, l.Seconds
	return st
}

// Report is Status for /v1/status.
func (s *Source) Report() any { return s.Status() }

// NotReady says why the sidecar must not be ready because of the source, or
// "" when it may be: once the index was level with the stream's head, the
// source keeps it ready while it streams (or reconnects: decisions go on
// from the index as it is, and the lag gauges show how old it is); never
// while it is stopped, waiting for a snapshot, or ahead of the stream.
func (s *Source) NotReady() string {
	st := s.Status()
	switch st.State {
	case StateStopped, StateWaitingForSnapshot, StateAheadOfStream:
		return "replication from NATS: " + st.Reason
	case StateNoStream:
		return "replication from NATS: " + st.LastError
	case StateLoadingSnapshot:
		return "replication from NATS: loading a snapshot from the bucket " + s.cfg.SnapshotBucket
	}
	if st.Synced {
		return ""
	}
	if st.State == StateConnecting || st.State == StateReconnecting {
		msg := "replication from NATS: not connected to " + s.url + " yet"
		if st.LastError != "" {
			msg += " (" + st.LastError + ")"
		}
		return msg
	}
	return fmt.Sprintf("replication from NATS: catching up with the stream %s: applied_seq %d of %d",
		s.cfg.Stream, st.AppliedSeq, st.StreamLastSeq)
}

func (s *Source) setConnected(c bool) {
	s.mu.Lock()
	s.st.Connected = c
	s.mu.Unlock()
}

func (s *Source) setState(st State, reason string) {
	s.mu.Lock()
	s.st.State, s.st.Reason = st, reason
	if st != StateStopped {
		s.st.StoppedAtSeq = 0
	}
	s.mu.Unlock()
}

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
	it, err := cons.Messages(jetstream.PullMaxMessages(min(2*s.cfg.MaxBatch, 10_000)))
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
		out, done, n, err := s.applyBatch(ctx, stream, batch, &next, start)
		if err != nil || done {
			return out, err
		}
		if n < len(batch) {
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

type decoded struct {
	seq  uint64
	time time.Time
	op   string
	tx   string // of an event that did not decode
	ev   replication.Event
	err  error
}

// applyBatch decodes and applies one batch. It returns done with an outcome
// when the consumer must end (stop, or restart when the index moved), and n,
// the number of messages it used before a jump in the stream's seqs.
func (s *Source) applyBatch(ctx context.Context, stream jetstream.Stream, batch []jetstream.Msg, next *uint64, start uint64) (outcome, bool, int, error) {
	items := make([]decoded, 0, len(batch))
	var head uint64
	for i, msg := range batch {
		md, err := msg.Metadata()
		if err != nil {
			return outcome{}, true, 0, fmt.Errorf("reading a message's metadata: %w", err)
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
		return outcome{}, true, 0, nil // restart at the hole
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
		res, err := s.apply(ctx, events)
		var inv *replication.InvalidEventError
		var gap *replication.GapError
		switch {
		case errors.As(err, &inv):
			// Apply what precedes the invalid event's transaction, then
			// stop at it.
			if keep := txStart(events, inv.Index); keep > 0 {
				if res, err = s.apply(ctx, events[:keep]); err != nil {
					return outcome{}, true, n, s.applyErr(err)
				}
				s.applied(res, items[keep-1].time)
			}
			bad := events[inv.Index]
			s.m.Events(bad.Op, "rejected", 1)
			return s.stopAt(bad.Seq, bad.Op, inv.Msg), true, n, nil
		case errors.As(err, &gap):
			// The index moved under us (a snapshot or batch over HTTP).
			s.log.Info("the index changed outside the stream; resuming from its applied_seq", "applied_seq", gap.AppliedSeq)
			return outcome{}, true, n, nil
		case err != nil:
			return outcome{}, true, n, s.applyErr(err)
		}
		s.applied(res, items[len(events)-1].time)
	}
	if last := items[len(items)-1]; last.err != nil {
		s.m.Events(last.op, "rejected", 1)
		return s.stopAt(last.seq, last.op, last.err.Error()), true, n, nil
	}
	if head <= s.ix.AppliedSeq() {
		s.markSynced(s.ix.AppliedSeq())
	}
	return outcome{}, false, n, nil
}

// apply applies events, waiting while a snapshot loads over HTTP.
func (s *Source) apply(ctx context.Context, events []replication.Event) (replication.Result, error) {
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
func (s *Source) jumpAtStart(ctx context.Context, stream jetstream.Stream, start, got uint64) (outcome, bool, int, error) {
	info, err := streamInfo(ctx, stream)
	if err != nil {
		return outcome{}, true, 0, err
	}
	s.noteStream(info)
	if info.State.FirstSeq > start {
		return outcome{}, true, 0, nil
	}
	return s.stopAt(start, "", fmt.Sprintf("the stream has no event at seq %d (the next one is %d): "+
		"a message was deleted from the stream, or one was published to another subject than %s",
		start, got, s.cfg.Subject)), true, 0, nil
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
	var e struct {
		Op string `json:"op"`
	}
	_ = json.Unmarshal(raw, &e)
	if slices.Contains(replication.Ops, e.Op) {
		return e.Op
	}
	return "unknown"
}

// stopped waits, not applying anything, until the index has applied seq (a
// snapshot loaded over HTTP, or from the bucket).
func (s *Source) stopped(ctx context.Context, js jetstream.JetStream, seq uint64, reason string) error {
	s.mu.Lock()
	s.st.State, s.st.Reason, s.st.StoppedAtSeq = StateStopped, reason, seq
	s.mu.Unlock()
	s.log.Error("replication stopped", "stopped_at_seq", seq, "applied_seq", s.ix.AppliedSeq(), "reason", reason)
	for {
		if s.ix.AppliedSeq() >= seq {
			s.log.Info("resuming replication after a snapshot", "applied_seq", s.ix.AppliedSeq())
			s.setState(StateCatchingUp, "")
			return nil
		}
		if s.cfg.SnapshotBucket != "" {
			if _, err := s.loadFromBucket(ctx, js, seq); err != nil {
				s.noteErr(err)
			}
			s.mu.Lock()
			s.st.State, s.st.Reason, s.st.StoppedAtSeq = StateStopped, reason, seq
			s.mu.Unlock()
			if s.ix.AppliedSeq() >= seq {
				continue
			}
		}
		if err := s.waitForSeq(ctx, seq); err != nil {
			return err
		}
	}
}

// waitForSeq waits up to PollInterval for the index to apply seq; it
// returns an error only when ctx ends.
func (s *Source) waitForSeq(ctx context.Context, seq uint64) error {
	wctx, cancel := context.WithTimeout(ctx, s.cfg.PollInterval)
	defer cancel()
	err := s.ix.WaitForSeq(wctx, seq)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, index.ErrClosed) {
		return err
	}
	return nil
}

// noteErr records err for Status, and logs it when it is not the last one
// again (the waits retry every PollInterval).
func (s *Source) noteErr(err error) {
	s.mu.Lock()
	again := s.st.LastError == err.Error()
	s.st.LastError = err.Error()
	s.mu.Unlock()
	if !again {
		s.log.Warn("NATS replication", "err", err)
	}
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

// bootstrap is called when the stream no longer holds applied_seq+1 (its
// first seq is first): it loads the newest snapshot object with a seq of at
// least first-1, or waits (up to PollInterval) for a PUT of one.
func (s *Source) bootstrap(ctx context.Context, js jetstream.JetStream, first uint64) error {
	need := first - 1
	applied := s.ix.AppliedSeq()
	reason := fmt.Sprintf("the stream %s no longer holds seq %d (its first seq is %d): the index needs a snapshot "+
		"with seq >= %d: PUT /v1/replication/snapshot", s.cfg.Stream, applied+1, first, need)
	if s.cfg.SnapshotBucket != "" {
		reason += ", or crmauthz snapshot publish into the bucket " + s.cfg.SnapshotBucket
	}
	s.mu.Lock()
	changed := s.st.State != StateWaitingForSnapshot
	s.st.State, s.st.Reason = StateWaitingForSnapshot, reason
	s.mu.Unlock()
	if s.cfg.SnapshotBucket != "" {
		loaded, err := s.loadFromBucket(ctx, js, need)
		if err != nil {
			s.noteErr(err)
		}
		if loaded {
			return nil
		}
		s.mu.Lock()
		s.st.State, s.st.Reason = StateWaitingForSnapshot, reason
		s.mu.Unlock()
	}
	if changed {
		s.log.Warn("waiting for a snapshot", "reason", reason)
	}
	return s.waitForSeq(ctx, need)
}

// snapshotObject is an object of the bucket with its seq.
type snapshotObject struct {
	name string
	seq  uint64
}

// latestSnapshot lists the bucket and returns the object with the highest
// seq, ok false when it holds none.
func latestSnapshot(ctx context.Context, obs jetstream.ObjectStore) (snapshotObject, bool, error) {
	list, err := obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return snapshotObject{}, false, nil
	}
	if err != nil {
		return snapshotObject{}, false, fmt.Errorf("listing the snapshot bucket: %w", err)
	}
	var best snapshotObject
	found := false
	for _, o := range list {
		if o.Deleted {
			continue
		}
		seq, ok := objectSeq(o)
		if !ok {
			continue
		}
		if !found || seq > best.seq {
			best, found = snapshotObject{name: o.Name, seq: seq}, true
		}
	}
	return best, found, nil
}

func objectSeq(o *jetstream.ObjectInfo) (uint64, bool) {
	v := o.Metadata[SeqMetadata]
	if v == "" && o.Headers != nil {
		v = o.Headers.Get(SeqHeader)
	}
	seq, err := strconv.ParseUint(v, 10, 64)
	return seq, err == nil
}

// loadFromBucket loads the newest snapshot object if its seq is at least
// need and beyond applied_seq. loaded tells whether it did.
func (s *Source) loadFromBucket(ctx context.Context, js jetstream.JetStream, need uint64) (loaded bool, err error) {
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	obs, err := js.ObjectStore(tctx, s.cfg.SnapshotBucket)
	if err != nil {
		cancel()
		return false, fmt.Errorf("opening the snapshot bucket %s: %w", s.cfg.SnapshotBucket, err)
	}
	best, ok, err := latestSnapshot(tctx, obs)
	cancel()
	if err != nil || !ok {
		return false, err
	}
	applied := s.ix.AppliedSeq()
	if best.seq < need || best.seq <= applied {
		s.log.Debug("no snapshot object is recent enough", "newest", best.name, "seq", best.seq, "need", need)
		return false, nil
	}
	s.mu.Lock()
	s.st.State, s.st.Reason = StateLoadingSnapshot, ""
	s.mu.Unlock()
	s.log.Info("loading a snapshot from the bucket", "bucket", s.cfg.SnapshotBucket, "object", best.name, "seq", best.seq, "applied_seq", applied)
	obj, err := obs.Get(ctx, best.name)
	if err != nil {
		return false, fmt.Errorf("reading the snapshot object %s: %w", best.name, err)
	}
	defer obj.Close()
	br := bufio.NewReaderSize(obj, 64<<10)
	line, err := br.ReadSlice('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("reading the snapshot object %s: %w", best.name, err)
	}
	var hdr struct {
		Seq *uint64 `json:"seq"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(line), &hdr); err != nil || hdr.Seq == nil || *hdr.Seq != best.seq {
		got := "no {\"seq\": N} line"
		if hdr.Seq != nil {
			got = "seq " + strconv.FormatUint(*hdr.Seq, 10)
		}
		return false, fmt.Errorf("the snapshot object %s has %s=%d but its first line has %s", best.name, SeqMetadata, best.seq, got)
	}
	res, err := s.repl.LoadSnapshot(io.MultiReader(bytes.NewReader(bytes.Clone(line)), br))
	if errors.Is(err, replication.ErrSnapshotInProgress) {
		return false, nil // a PUT is loading one: look again after it
	}
	if err != nil {
		return false, fmt.Errorf("loading the snapshot object %s: %w", best.name, err)
	}
	c := s.ix.Counts()
	s.m.IndexState(s.ix.AppliedSeq(), c.Users, c.Records)
	s.mu.Lock()
	s.st.SnapshotsLoaded++
	s.st.LastError = ""
	s.mu.Unlock()
	s.log.Info("snapshot loaded from the bucket", "object", best.name, "applied_seq", res.AppliedSeq,
		"users", res.Users, "records", res.Records)
	return true, nil
}
