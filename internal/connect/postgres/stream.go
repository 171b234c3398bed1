package postgres

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	bolt "go.etcd.io/bbolt"

	"github.com/crmauthz/crmauthz/internal/connect/sink"
	"github.com/crmauthz/crmauthz/internal/replication"
)

func parseDSN(dsn string) (*pgconn.Config, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres: --dsn: %w", err)
	}
	return cfg, nil
}

func where(cfg *pgconn.Config) string {
	return fmt.Sprintf("%s:%d/%s", cfg.Host, cfg.Port, cfg.Database)
}

// connectTimeout bounds a connection attempt to pc: by the DSN's connect_timeout, which pgx
// applies, or else by Config.ConnectTimeout (pgx has no default: a server that accepts and never
// answers held the attempt for ever, and the connector never reached its reconnect).
func (c *Connector) connectTimeout(ctx context.Context, pc *pgconn.Config) (context.Context, context.CancelFunc) {
	if pc.ConnectTimeout > 0 || c.cfg.ConnectTimeout <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, c.cfg.ConnectTimeout)
}

// connect opens the SQL connection.
func (c *Connector) connect(ctx context.Context) (*pgx.Conn, error) {
	pc, _ := parseDSN(c.cfg.DSN)
	ctx, cancel := c.connectTimeout(ctx, pc)
	defer cancel()
	cc, err := pgx.ConnectConfig(ctx, mustConnConfig(c.cfg.DSN))
	if err != nil {
		return nil, fmt.Errorf("connecting to PostgreSQL at %s: %w", where(pc), err)
	}
	return cc, nil
}

// connectReplication opens the replication connection (after check: its errors are clearer).
func (c *Connector) connectReplication(ctx context.Context) (*pgconn.PgConn, error) {
	pc, _ := parseDSN(c.cfg.DSN)
	pc.RuntimeParams["replication"] = "database"
	ctx, cancel := c.connectTimeout(ctx, pc)
	defer cancel()
	rc, err := pgconn.ConnectConfig(ctx, pc)
	if err != nil {
		return nil, fmt.Errorf("opening a replication connection to %s: %w", where(pc), err)
	}
	return rc, nil
}

func mustConnConfig(dsn string) *pgx.ConnConfig {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		panic(err) // checked by New
	}
	return cfg
}

// session runs one connection: checks, the first copy when needed, then the stream. progressed
// tells whether it got connected and checked.
func (c *Connector) session(ctx context.Context) (bool, error) {
	c.setState("connecting", nil)
	cc, err := c.connect(ctx)
	if err != nil {
		return false, err
	}
	defer cc.Close(context.Background())
	tables, err := check(ctx, cc, c.cfg.Mapping)
	if err != nil {
		return false, err
	}
	if err := c.ensurePublication(ctx, cc, tables); err != nil {
		return false, err
	}
	rc, err := c.connectReplication(ctx)
	if err != nil {
		return false, err
	}
	defer rc.Close(context.Background())
	sys, err := pglogrepl.IdentifySystem(ctx, rc)
	if err != nil {
		return false, fmt.Errorf("IDENTIFY_SYSTEM: %w", err)
	}
	source := fmt.Sprintf("%s/%s/%s", sys.SystemID, sys.DBName, c.cfg.Slot)
	var stored string
	var synced bool
	if err := c.db.View(func(tx *bolt.Tx) error {
		s := stx{tx}
		stored, synced = s.metaString(kSource), s.meta(kSynced) == 1
		return nil
	}); err != nil {
		return false, &stateError{err}
	}
	if stored != "" && stored != source {
		return false, configErr("%v: it follows %s, not %s (database system/name/slot); use an empty --state-dir for another source",
			errStateMismatch, stored, source)
	}
	var exists bool
	var walStatus *string
	err = cc.QueryRow(ctx, "SELECT true, wal_status FROM pg_replication_slots WHERE slot_name = $1", c.cfg.Slot).Scan(&exists, &walStatus)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return false, err
	}
	switch {
	case synced && !exists:
		c.log.Warn("the replication slot is gone (dropped?): copying the tables again")
		synced = false
	case synced && walStatus != nil && *walStatus == "lost":
		c.log.Warn("the replication slot lost WAL it needed (max_slot_wal_keep_size): dropping it and copying the tables again")
		synced = false
	}
	if !synced {
		if exists {
			// An interrupted first copy: its slot's snapshot is gone with it.
			c.log.Info("dropping the slot of an interrupted first copy")
			if err := pglogrepl.DropReplicationSlot(ctx, rc, c.cfg.Slot, pglogrepl.DropReplicationSlotOptions{}); err != nil {
				return true, fmt.Errorf("dropping the slot %s: %w", c.cfg.Slot, err)
			}
		}
		if err := c.firstCopy(ctx, cc, rc, tables, source); err != nil {
			return true, err
		}
	}
	if err := c.catchUpSink(ctx); err != nil {
		return true, err
	}
	return true, c.stream(ctx, rc, tables)
}

// positions reads the last commit LSN and end LSN written.
func (c *Connector) positions() (lsn, end pglogrepl.LSN, err error) {
	err = c.db.View(func(tx *bolt.Tx) error {
		s := stx{tx}
		lsn, end = pglogrepl.LSN(s.meta(kLSN)), pglogrepl.LSN(s.meta(kEndLSN))
		return nil
	})
	return lsn, end, err
}

// txn is a source transaction being received, then committed.
type txn struct {
	final   pglogrepl.LSN
	changes []change
	cm      *pglogrepl.CommitMessage
}

// change is one row change with the relations as they were when it arrived.
type change struct {
	msg  pglogrepl.Message
	rels map[uint32]*relation
}

// Group commit: committed source transactions that arrive back to back are written together
// (one state transaction, one sink write, each with its own tx), up to these bounds.
const (
	groupWait       = 3 * time.Millisecond
	groupMaxTxs     = 1000
	groupMaxChanges = 5000
)

// stream reads the slot from the last end LSN written, writing each transaction at its commit.
func (c *Connector) stream(ctx context.Context, rc *pgconn.PgConn, tables []table) error {
	lastLSN, end, err := c.positions()
	if err != nil {
		return &stateError{err}
	}
	err = pglogrepl.StartReplication(ctx, rc, c.cfg.Slot, end, pglogrepl.StartReplicationOptions{
		Mode:       pglogrepl.LogicalReplication,
		PluginArgs: []string{"proto_version '1'", "publication_names '" + c.cfg.Publication + "'"},
	})
	if err != nil {
		return fmt.Errorf("START_REPLICATION: %w", err)
	}
	c.setState("streaming", nil)
	c.log.Info("streaming", "from_lsn", end.String())
	confirmed := end
	rels := map[uint32]*relation{}
	var cur *txn
	var pending []*txn // committed, not yet written
	var flushAt time.Time
	changes := 0
	send := func() error {
		c.m.confirmedLSN.Set(float64(confirmed))
		return pglogrepl.SendStandbyStatusUpdate(ctx, rc, pglogrepl.StandbyStatusUpdate{WALWritePosition: confirmed})
	}
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		group := pending
		pending, changes = nil, 0
		t0 := time.Now()
		defer func() { c.log.Debug("flush", "txs", len(group), "took", time.Since(t0)) }()
		if err := c.whileConfirming(ctx, rc, &confirmed, func() error { return c.commit(ctx, group) }); err != nil {
			return err
		}
		last := group[len(group)-1].cm
		lastLSN = last.CommitLSN
		confirmed = max(confirmed, last.TransactionEndLSN)
		c.m.lastSync.SetToCurrentTime()
		return nil
	}
	if err := send(); err != nil {
		return err
	}
	next := time.Now().Add(c.cfg.StatusInterval)
	for {
		if len(pending) > 0 && !time.Now().Before(flushAt) {
			if err := flush(); err != nil {
				return err
			}
		}
		if time.Now().After(next) {
			if cur == nil && len(pending) == 0 {
				// Idle: the sink holds everything received from the slot, so the sync is current
				// (an idle database does not look stale; docs/connectors.md).
				c.m.lastSync.SetToCurrentTime()
			}
			if err := send(); err != nil {
				return fmt.Errorf("sending the standby status: %w", err)
			}
			next = time.Now().Add(c.cfg.StatusInterval)
		}
		deadline := next
		if len(pending) > 0 && flushAt.Before(deadline) {
			deadline = flushAt
		}
		rctx, cancel := context.WithDeadline(ctx, deadline)
		raw, err := rc.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receiving from the slot: %w", err)
		}
		switch msg := raw.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("the server: %s (%s)", msg.Message, msg.Code)
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				pkm, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return err
				}
				// The server sends one whenever it caught up and our position is behind: it does
				// not end a group (the group's window does), and it moves the position only when
				// nothing received is unwritten.
				if cur == nil && len(pending) == 0 && pkm.ServerWALEnd > confirmed {
					// Idle: everything sent before this point is written; release the WAL.
					confirmed = pkm.ServerWALEnd
				}
				if pkm.ReplyRequested {
					next = time.Time{}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return err
				}
				lm, err := pglogrepl.Parse(bytes.Clone(xld.WALData))
				if err != nil {
					return fmt.Errorf("decoding a pgoutput message: %w", err)
				}
				switch m := lm.(type) {
				case *pglogrepl.RelationMessage:
					rels = maps.Clone(rels) // the changes received so far keep theirs
					rels[m.RelationID] = newRelation(m, tables)
				case *pglogrepl.BeginMessage:
					cur = &txn{final: m.FinalLSN}
				case *pglogrepl.InsertMessage, *pglogrepl.UpdateMessage, *pglogrepl.DeleteMessage, *pglogrepl.TruncateMessage:
					if cur != nil {
						cur.changes = append(cur.changes, change{lm, rels})
					}
				case *pglogrepl.CommitMessage:
					if cur == nil {
						continue
					}
					t := cur
					cur = nil
					if m.CommitLSN <= lastLSN {
						c.m.txs.WithLabelValues("replayed").Inc()
						if len(pending) == 0 {
							confirmed = max(confirmed, m.TransactionEndLSN)
						}
						continue
					}
					t.cm = m
					if len(pending) == 0 {
						flushAt = time.Now().Add(groupWait)
					}
					pending = append(pending, t)
					changes += len(t.changes)
					if len(pending) >= groupMaxTxs || changes >= groupMaxChanges {
						if err := flush(); err != nil {
							return err
						}
					}
				}
			}
		}
	}
}

// whileConfirming runs f (the sink may be slow) while the standby status keeps being sent with
// the position already confirmed, so that PostgreSQL does not end the connection.
func (c *Connector) whileConfirming(ctx context.Context, rc *pgconn.PgConn, confirmed *pglogrepl.LSN, f func() error) error {
	done := make(chan error, 1)
	go func() { done <- f() }()
	t := time.NewTicker(c.cfg.StatusInterval)
	defer t.Stop()
	for {
		select {
		case err := <-done:
			return err
		case <-t.C:
			if err := pglogrepl.SendStandbyStatusUpdate(ctx, rc, pglogrepl.StandbyStatusUpdate{WALWritePosition: *confirmed}); err != nil {
				c.log.Warn("sending the standby status while the sink writes", "err", err)
			}
		}
	}
}

// commit applies committed source transactions to the copy, writes their events to the sink
// (each transaction's events with its own tx) and commits the copy with the positions, in one
// state transaction: the state never says a transaction was written that the sink does not hold.
// A sink found behind gets a snapshot first.
func (c *Connector) commit(ctx context.Context, group []*txn) error {
	for attempt := 1; ; attempt++ {
		var events []replication.Event
		var written []bool
		err := c.db.Update(func(btx *bolt.Tx) error {
			s := stx{btx}
			seq := s.meta(kSeq)
			events, written = nil, nil
			for _, t := range group {
				touched := newTouched()
				for _, ch := range t.changes {
					if err := c.apply(s, ch.msg, ch.rels, touched); err != nil {
						return err
					}
				}
				evs, err := s.events(touched, c.anomaly)
				if err != nil {
					return &stateError{err}
				}
				txid := replication.TxID(t.cm.CommitLSN.String())
				for i := range evs {
					seq++
					evs[i].Seq, evs[i].Tx = seq, txid
				}
				events = append(events, evs...)
				written = append(written, len(evs) > 0)
			}
			if len(events) > 0 {
				c.m.pending.Set(float64(len(events)))
				if err := c.cfg.Sink.Write(ctx, events); err != nil {
					return &sinkError{err}
				}
			}
			last := group[len(group)-1].cm
			for k, v := range map[string]uint64{kLSN: uint64(last.CommitLSN), kEndLSN: uint64(last.TransactionEndLSN), kSeq: seq} {
				if err := s.setMeta(k, v); err != nil {
					return &stateError{err}
				}
			}
			c.noteWritten(seq, false)
			return nil
		})
		c.m.pending.Set(0)
		if err == nil {
			for _, e := range events {
				c.m.events.WithLabelValues(e.Op).Inc()
			}
			for _, w := range written {
				if w {
					c.m.txs.WithLabelValues("written").Inc()
				} else {
					c.m.txs.WithLabelValues("unchanged").Inc()
				}
			}
			return nil
		}
		var gap *sink.GapError
		if !errors.As(err, &gap) || attempt > 3 {
			return err
		}
		c.log.Warn("the sink is not where the connector left it", "err", err)
		if err := c.catchUpSink(ctx); err != nil {
			return err
		}
	}
}
