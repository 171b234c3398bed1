package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	bolt "go.etcd.io/bbolt"

	"github.com/crmauthz/crmauthz/internal/index"
)

// firstCopy creates the slot, reads the tables in its exported snapshot into a fresh copy and
// writes it to the sink as one snapshot.
func (c *Connector) firstCopy(ctx context.Context, cc *pgx.Conn, rc *pgconn.PgConn, tables []table, source string) error {
	c.setState("copying", nil)
	slot, err := pglogrepl.CreateReplicationSlot(ctx, rc, c.cfg.Slot, "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Mode: pglogrepl.LogicalReplication, SnapshotAction: "EXPORT_SNAPSHOT"})
	if err != nil {
		return fmt.Errorf("creating the replication slot %s: %w", c.cfg.Slot, err)
	}
	start, err := pglogrepl.ParseLSN(slot.ConsistentPoint)
	if err != nil {
		return err
	}
	c.log.Info("created the replication slot; copying the tables in its snapshot", "consistent_point", slot.ConsistentPoint)
	tx, err := cc.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return err
	}
	defer tx.Rollback(context.Background())
	if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+slot.SnapshotName+"'"); err != nil {
		return fmt.Errorf("SET TRANSACTION SNAPSHOT: %w", err)
	}
	var s0 uint64
	err = c.db.Update(func(btx *bolt.Tx) error {
		s := stx{btx}
		for _, b := range [][]byte{bUsers, bRecords, bFollowers, bWritten, bByUser} {
			if err := s.clear(b, nil); err != nil {
				return &stateError{err}
			}
		}
		t := newTouched()
		for _, tb := range tables {
			if err := c.copyTable(ctx, tx, s, tb, t); err != nil {
				return err
			}
		}
		if _, err := s.events(t, c.anomaly); err != nil {
			return &stateError{err}
		}
		head, err := c.cfg.Sink.Head(ctx)
		if err != nil {
			return &sinkError{err}
		}
		seq := max(head, s.meta(kSeq)) + 1
		s0 = seq
		if err := c.cfg.Sink.Snapshot(ctx, seq, func(w io.Writer) error { return writeFacts(s, w) }); err != nil {
			return &sinkError{err}
		}
		c.m.snapshots.Inc()
		for k, v := range map[string]uint64{kLSN: uint64(start), kEndLSN: uint64(start), kSeq: seq, kSynced: 1} {
			if err := s.setMeta(k, v); err != nil {
				return err
			}
		}
		if err := s.setMetaString(kSource, source); err != nil {
			return err
		}
		c.log.Info("the first copy reached the sink", "seq", seq, "users", len(t.users), "records", len(t.records))
		c.noteWritten(seq, false)
		return nil
	})
	if err == nil {
		c.noteWritten(s0, true)
	}
	return err
}

func (c *Connector) noteWritten(seq uint64, synced bool) {
	c.m.writtenSeq.Set(float64(seq))
	c.m.lastSync.SetToCurrentTime()
	if synced {
		c.mu.Lock()
		c.synced = true
		c.mu.Unlock()
	}
}

// copyTable reads one mapped table into the copy.
func (c *Connector) copyTable(ctx context.Context, tx pgx.Tx, s stx, tb table, t *touched) error {
	col := func(f string) string { return pgx.Identifier{tb.cols[f]}.Sanitize() }
	var sql string
	switch tb.kind {
	case kindUsers:
		sql = fmt.Sprintf("SELECT %s::text, %s::text, %s::text[], %s, %s, %s FROM %s", col("id"), col("role"), col("location_ids"),
			col("assigned_data_only"), col("contacts_enabled"), col("opportunities_enabled"), tb.ident())
	case kindContacts:
		sql = fmt.Sprintf("SELECT %s::text, %s::text, %s::text, NULL::text FROM %s", col("id"), col("location_id"), col("owner"), tb.ident())
	case kindOpps:
		sql = fmt.Sprintf("SELECT %s::text, %s::text, %s::text, %s::text FROM %s", col("id"), col("location_id"), col("owner"), col("contact_id"), tb.ident())
	case kindFollowers:
		sql = fmt.Sprintf("SELECT %s::text, %s::text, %s::text FROM %s", col("record_type"), col("record_id"), col("user_id"), tb.ident())
	}
	rows, err := tx.Query(ctx, sql)
	if err != nil {
		return fmt.Errorf("reading %s: %w", tb.ident(), err)
	}
	defer rows.Close()
	for rows.Next() {
		var err error
		switch tb.kind {
		case kindUsers:
			var id *string
			var r userRow
			var locs []*string
			if err := rows.Scan(&id, &r.Role, &locs, &r.ADO, &r.CE, &r.OE); err != nil {
				return fmt.Errorf("reading %s: %w", tb.ident(), err)
			}
			if id == nil {
				continue
			}
			r.Locs, r.NoLoc = flat(locs), locs == nil
			t.users[*id] = true
			err = s.putUser(*id, r)
		case kindContacts, kindOpps:
			var id *string
			var r recRow
			if err := rows.Scan(&id, &r.Loc, &r.Owner, &r.Contact); err != nil {
				return fmt.Errorf("reading %s: %w", tb.ident(), err)
			}
			if id == nil {
				continue
			}
			k := recKey{typeOf(tb.kind), *id}
			t.records[k] = true
			err = s.putRec(k, r)
		case kindFollowers:
			var typ, id, user *string
			if err := rows.Scan(&typ, &id, &user); err != nil {
				return fmt.Errorf("reading %s: %w", tb.ident(), err)
			}
			err = c.addFollowerRow(s, typ, id, user, t)
		}
		if err != nil {
			return &stateError{err}
		}
	}
	return rows.Err()
}

func flat(in []*string) []string {
	out := make([]string, 0, len(in))
	for _, s := range in {
		if s != nil {
			out = append(out, *s)
		}
	}
	return out
}

func typeOf(kind string) string {
	if kind == kindOpps {
		return index.TypeOpportunity
	}
	return index.TypeContact
}

// addFollowerRow adds one follower row to the copy.
func (c *Connector) addFollowerRow(s stx, typ, id, user *string, t *touched) error {
	if typ == nil || id == nil || user == nil || (*typ != index.TypeContact && *typ != index.TypeOpportunity) {
		c.anomaly(AnomalyUnknownRecordType, fmt.Sprintf("%s/%s follower %s", deref(typ), deref(id), deref(user)),
			"a follower row whose record type is not contact or opportunity (or NULL) is ignored")
		return nil
	}
	k := recKey{*typ, *id}
	dup, err := s.addFollower(k, *user)
	if err != nil {
		return err
	}
	if dup {
		c.anomaly(AnomalyDuplicateFollower, k.String(), "the follower "+*user+" is there twice")
	}
	if _, ok, _ := s.rec(k); !ok {
		c.anomaly(AnomalyFollowerOfNoRecord, k.String(), "a follower of a record not there (yet): it waits for the record")
	}
	t.records[k] = true
	return nil
}

func deref(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}

func (c *Connector) anomaly(kind, key, detail string) {
	c.m.anomalies.WithLabelValues(kind).Inc()
	c.log.Warn("a bad fact in the source", "kind", kind, "key", key, "detail", detail)
}

// writeFacts writes the written facts as snapshot lines.
func writeFacts(s stx, w io.Writer) error {
	enc := json.NewEncoder(w)
	return s.b(bWritten).ForEach(func(k, v []byte) error {
		var err error
		switch {
		case bytes.HasPrefix(k, []byte("u\x00")):
			err = enc.Encode(map[string]json.RawMessage{"user": v})
		case bytes.HasPrefix(k, []byte("r\x00")):
			err = enc.Encode(map[string]json.RawMessage{"record": v})
		}
		return err
	})
}

// catchUpSink writes a full snapshot from the copy when the sink is behind what the connector
// wrote (a replica that lost its data, a purged stream).
func (c *Connector) catchUpSink(ctx context.Context) error {
	head, err := c.cfg.Sink.Head(ctx)
	if err != nil {
		return &sinkError{err}
	}
	return c.db.Update(func(tx *bolt.Tx) error {
		s := stx{tx}
		written := s.meta(kSeq)
		if head >= written {
			return nil
		}
		seq := written + 1
		c.log.Warn("the sink is behind what was written: writing a full snapshot from the copy", "sink_head", head, "written_seq", written, "snapshot_seq", seq)
		if err := c.cfg.Sink.Snapshot(ctx, seq, func(w io.Writer) error { return writeFacts(s, w) }); err != nil {
			return &sinkError{err}
		}
		c.m.snapshots.Inc()
		c.noteWritten(seq, false)
		return s.setMeta(kSeq, seq)
	})
}
