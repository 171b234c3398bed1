package highlevel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/crmauthz/crmauthz/internal/connect/sink"
	"github.com/crmauthz/crmauthz/internal/replication"
)

// errForeignWriter: the sink holds events this connector did not write. A connector must be
// its sink's only writer (docs/highlevel.md, "Beside a fleet"); retrying cannot mend this.
var errForeignWriter = errors.New("the sink is ahead of this connector's state: another writer, or a state dir that is not this sink's")

// change is one object's new state from the source: Fact nil deletes it.
type change struct {
	kind, id string
	fact     json.RawMessage
	// guard: a reconcile's listing may be older than what a webhook wrote meanwhile; the change
	// is skipped when the copy was written after the reconcile started (gen > guardGen).
	guard    bool
	guardGen uint64
}

func (c *Connector) snapshotDone() (done bool) {
	c.st.db.View(func(tx *bolt.Tx) error { done = getMeta(tx, kSnapshot) == 1; return nil })
	return done
}

func (c *Connector) seq() (s uint64) {
	c.st.db.View(func(tx *bolt.Tx) error { s = getMeta(tx, kSeq); return nil })
	return s
}

// commit records changes in the copy and their events in the outbox in one transaction, marks
// the work items done, then writes the outbox to the sink. With firstCopy it only fills the
// copy (the first copy reaches the sink as a snapshot).
func (c *Connector) commit(ctx context.Context, changes []change, done []queued, firstCopy bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	// Most of a reconcile's objects are unchanged: find those in a read transaction, so that
	// a page with nothing new costs no write (and no fsync).
	err := c.st.db.View(func(tx *bolt.Tx) error {
		kept := changes[:0:0]
		for _, ch := range changes {
			e, ok, err := getEntry(tx, ch.kind, ch.id)
			if err != nil {
				return err
			}
			same := ch.fact == nil && (!ok || e.Deleted) || ch.fact != nil && ok && !e.Deleted && bytes.Equal(e.Fact, ch.fact)
			if !same && !(ch.guard && ok && e.Gen > ch.guardGen) {
				kept = append(kept, ch)
			}
		}
		changes = kept
		return nil
	})
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if len(changes) == 0 && len(done) == 0 {
		if firstCopy {
			return nil
		}
		return c.flush(ctx)
	}
	err = c.st.db.Update(func(tx *bolt.Tx) error {
		seq := getMeta(tx, kSeq)
		out := tx.Bucket(bOutbox)
		emit := func(ev replication.Event) error {
			seq++
			ev.Seq = seq
			raw, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			return out.Put(be(seq), raw)
		}
		for _, ch := range changes {
			e, ok, err := getEntry(tx, ch.kind, ch.id)
			if err != nil {
				return err
			}
			if ch.guard && ok && e.Gen > ch.guardGen {
				continue
			}
			if !firstCopy {
				c.log.Debug("write", "kind", ch.kind, "id", ch.id, "delete", ch.fact == nil)
			}
			if ch.fact == nil {
				switch {
				case !ok || e.Deleted:
				case firstCopy:
					err = tx.Bucket(factBucket(ch.kind)).Delete(factKey(ch.kind, ch.id))
				default:
					if err = emit(deleteEvent(ch.kind, ch.id)); err == nil {
						err = putEntry(tx, ch.kind, ch.id, entry{Gen: seq, Deleted: true})
					}
				}
			} else if !ok || e.Deleted || !bytes.Equal(e.Fact, ch.fact) {
				if firstCopy {
					err = putEntry(tx, ch.kind, ch.id, entry{Fact: ch.fact})
				} else {
					var ev replication.Event
					if ev, err = upsertEvent(ch.kind, ch.fact); err == nil {
						if err = emit(ev); err == nil {
							err = putEntry(tx, ch.kind, ch.id, entry{Gen: seq, Fact: ch.fact})
						}
					}
				}
			}
			if err != nil {
				return err
			}
		}
		if err := doneWork(tx, done); err != nil {
			return err
		}
		return putMeta(tx, kSeq, seq)
	})
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	if len(done) > 0 {
		c.m.pending.Set(float64(c.st.pending()))
	}
	if firstCopy {
		return nil
	}
	return c.flush(ctx)
}

// resume reads the sink's head and writes what the outbox still holds (at start).
func (c *Connector) resume(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.headKnown = false
	if !c.snapshotDone() {
		return nil
	}
	return c.flush(ctx)
}

// flush writes the outbox to the sink, oldest first. c.mu is held.
func (c *Connector) flush(ctx context.Context) error {
	resynced := false
	for {
		if !c.headKnown {
			if err := c.syncHead(ctx); err != nil {
				return err
			}
		}
		var evs []replication.Event
		err := c.st.db.View(func(tx *bolt.Tx) error {
			cur := tx.Bucket(bOutbox).Cursor()
			for k, v := cur.First(); k != nil && len(evs) < 1000; k, v = cur.Next() {
				var ev replication.Event
				if err := json.Unmarshal(v, &ev); err != nil {
					return fmt.Errorf("outbox %d: %w", u64(k), err)
				}
				evs = append(evs, ev)
			}
			return nil
		})
		if err != nil || len(evs) == 0 {
			return err
		}
		if err := c.retrySink(ctx, "write", func() error { return c.cfg.Sink.Write(ctx, evs) }); err != nil {
			c.headKnown = false
			var gap *sink.GapError
			if errors.As(err, &gap) && !resynced {
				// the sink is not where the outbox continues: compare heads again (the sink may
				// have the events already, or need a snapshot), once per flush
				resynced = true
				c.log.Warn("sink: not where the outbox continues", "sink_head", gap.Head, "first", evs[0].Seq)
				continue
			}
			return err
		}
		last := evs[len(evs)-1].Seq
		if err := c.dropOutbox(last); err != nil {
			return err
		}
		for _, ev := range evs {
			c.m.eventsWritten.WithLabelValues(ev.Op).Inc()
		}
		c.m.writtenSeq.Set(float64(last))
	}
}

// dropOutbox removes the outbox's events up to seq.
func (c *Connector) dropOutbox(upTo uint64) error {
	return c.st.db.Update(func(tx *bolt.Tx) error {
		cur := tx.Bucket(bOutbox).Cursor()
		for k, _ := cur.First(); k != nil && u64(k) <= upTo; k, _ = cur.First() {
			if err := cur.Delete(); err != nil {
				return err
			}
		}
		return nil
	})
}

// syncHead compares the sink's head with the state: events the sink has leave the outbox; a
// sink behind what was written (a replica that lost its data dir) gets a snapshot of the copy.
func (c *Connector) syncHead(ctx context.Context) error {
	var head uint64
	if err := c.retrySink(ctx, "head", func() (err error) { head, err = c.cfg.Sink.Head(ctx); return err }); err != nil {
		return err
	}
	var seq, first uint64
	c.st.db.View(func(tx *bolt.Tx) error {
		seq = getMeta(tx, kSeq)
		first = seq + 1
		if k, _ := tx.Bucket(bOutbox).Cursor().First(); k != nil {
			first = u64(k)
		}
		return nil
	})
	switch {
	case head > seq:
		return fmt.Errorf("%w (sink head %d, written %d)", errForeignWriter, head, seq)
	case head+1 >= first:
		if err := c.dropOutbox(head); err != nil {
			return err
		}
	default:
		c.log.Warn("the sink is behind what this connector wrote: writing a snapshot of the copy", "sink_head", head, "written", first-1)
		if err := c.writeSnapshot(ctx, seq); err != nil {
			return err
		}
		if err := c.dropOutbox(seq); err != nil {
			return err
		}
	}
	c.headKnown = true
	c.m.writtenSeq.Set(float64(head))
	return nil
}

// retrySink runs a sink call, retrying with backoff (up to MaxAttempts).
func (c *Connector) retrySink(ctx context.Context, what string, f func() error) error {
	backoff := 200 * time.Millisecond
	for attempt := 1; ; attempt++ {
		err := f()
		if err == nil {
			return nil
		}
		c.m.sinkErrors.Inc()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if gap := (*sink.GapError)(nil); errors.As(err, &gap) {
			return err // retrying the same write cannot help
		}
		if c.cfg.MaxAttempts > 0 && attempt >= c.cfg.MaxAttempts {
			return fmt.Errorf("sink %s: %w", what, err)
		}
		c.log.Warn("sink: retrying", "op", what, "attempt", attempt, "err", err)
		if !sleep(ctx, jitter(backoff)) {
			return ctx.Err()
		}
		backoff = min(backoff*2, 30*time.Second)
	}
}

// writeSnapshot writes the whole copy to the sink as a snapshot at seq.
func (c *Connector) writeSnapshot(ctx context.Context, seq uint64) error {
	lines := 0
	err := c.retrySink(ctx, "snapshot", func() error {
		lines = 0
		return c.cfg.Sink.Snapshot(ctx, seq, func(w io.Writer) error {
			for _, b := range [][]byte{bUsers, bRecords} {
				name := "record"
				if bytes.Equal(b, bUsers) {
					name = "user"
				}
				var after []byte
				for {
					n := 0
					err := c.st.db.View(func(tx *bolt.Tx) error {
						cur := tx.Bucket(b).Cursor()
						k, v := cur.First()
						if after != nil {
							if k, v = cur.Seek(after); k != nil && bytes.Equal(k, after) {
								k, v = cur.Next()
							}
						}
						for ; k != nil && n < 1000; k, v = cur.Next() {
							n++
							after = append(after[:0], k...)
							var e entry
							if err := json.Unmarshal(v, &e); err != nil {
								return err
							}
							if e.Deleted {
								continue
							}
							if _, err := fmt.Fprintf(w, "{%q:%s}\n", name, e.Fact); err != nil {
								return err
							}
							lines++
						}
						return nil
					})
					if err != nil {
						return err
					}
					if n < 1000 {
						break
					}
				}
			}
			return nil
		})
	})
	if err == nil {
		c.m.eventsWritten.WithLabelValues("snapshot").Add(float64(lines))
		c.m.writtenSeq.Set(float64(seq))
		c.log.Info("snapshot written", "seq", seq, "lines", lines)
	}
	return err
}

// finishFirstCopy writes the first copy as a snapshot after the sink's head, and records it.
func (c *Connector) finishFirstCopy(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var head uint64
	if err := c.retrySink(ctx, "head", func() (err error) { head, err = c.cfg.Sink.Head(ctx); return err }); err != nil {
		return err
	}
	seq := head + 1
	if err := c.writeSnapshot(ctx, seq); err != nil {
		return err
	}
	err := c.st.db.Update(func(tx *bolt.Tx) error {
		if err := putMeta(tx, kSeq, seq); err != nil {
			return err
		}
		return putMeta(tx, kSnapshot, 1)
	})
	if err != nil {
		return fmt.Errorf("state: %w", err)
	}
	c.headKnown = true
	return nil
}

// jitter is d/2 plus a random part of d/2.
func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }
