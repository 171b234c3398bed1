// Bootstrap and stops: load a snapshot object from Config.SnapshotBucket, or
// wait for the index to get past a seq by a snapshot.

package natssource

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/natspub"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/strictjson"
	"github.com/crmauthz/crmauthz/internal/tracing"
)

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
	// headers are the object's: its publisher's trace context
	// (natspub.PutSnapshot).
	headers map[string][]string
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
			best, found = snapshotObject{name: o.Name, seq: seq, headers: o.Headers}, true
		}
	}
	return best, found, nil
}

func objectSeq(o *jetstream.ObjectInfo) (uint64, bool) {
	v := o.Metadata[natspub.SeqMetadata]
	if v == "" && o.Headers != nil {
		v = o.Headers.Get(natspub.SeqHeader)
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
	if err := strictjson.Unmarshal(line, &hdr); err != nil || hdr.Seq == nil || *hdr.Seq != best.seq {
		got := "no {\"seq\": N} line"
		if hdr.Seq != nil {
			got = "seq " + strconv.FormatUint(*hdr.Seq, 10)
		}
		return false, fmt.Errorf("the snapshot object %s has %s=%d but its first line has %s", best.name, natspub.SeqMetadata, best.seq, got)
	}
	var sp trace.Span // nil: tracing off
	if s.cfg.Tracer != nil {
		_, sp = s.cfg.Tracer.StartSampled(ctx, tracing.SpanSnapshotLoad, trace.SpanKindConsumer, s.objectParent(best))
	}
	res, err := s.repl.LoadSnapshot(io.MultiReader(bytes.NewReader(bytes.Clone(line)), br))
	if sp != nil {
		b := tracing.Batch{Source: "nats", Users: res.Users, Records: res.Records, AppliedSeq: s.ix.AppliedSeq()}
		if err != nil {
			b.Error = "load_failed"
		}
		tracing.EndSnapshot(sp, b)
	}
	if errors.Is(err, replication.ErrSnapshotInProgress) {
		return false, nil // a PUT is loading one: look again after it
	}
	s.m.SnapshotLoad(metrics.SnapshotSourceNATS, err == nil)
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
