package postgres

import (
	"bytes"
	"fmt"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"
)

// relation is a table of the stream, with the positions of its mapped columns; kind "" for a
// table the mapping does not name (ignored).
type relation struct {
	kind string
	name string
	pos  map[string]int // fact field → column position
	oids []uint32
	// types decodes the columns' text. A pgtype.Map fills caches as it is used and is not safe
	// for concurrent use, so each relation has its own (a stream decodes on one goroutine).
	types *pgtype.Map
}

func newRelation(m *pglogrepl.RelationMessage, tables []table) *relation {
	r := &relation{name: m.Namespace + "." + m.RelationName, pos: map[string]int{}, types: pgtype.NewMap()}
	for _, t := range tables {
		if t.schema == m.Namespace && t.name == m.RelationName {
			r.kind = t.kind
			for i, col := range m.Columns {
				r.oids = append(r.oids, col.DataType)
				for f, name := range t.cols {
					if name == col.Name {
						r.pos[f] = i
					}
				}
			}
		}
	}
	return r
}

// value is one column of a tuple.
type value struct {
	null, unchanged bool
	text            string
	oid             uint32
	types           *pgtype.Map // its relation's
}

// tuple reads the mapped fields of a tuple; nil for none.
func (r *relation) tuple(td *pglogrepl.TupleData) map[string]value {
	if td == nil {
		return nil
	}
	out := map[string]value{}
	for f, i := range r.pos {
		if i >= len(td.Columns) {
			continue
		}
		col := td.Columns[i]
		v := value{oid: r.oids[i], types: r.types}
		switch col.DataType {
		case pglogrepl.TupleDataTypeNull:
			v.null = true
		case pglogrepl.TupleDataTypeToast:
			v.unchanged = true
		default:
			v.text = string(col.Data)
		}
		out[f] = v
	}
	return out
}

func (v value) str() *string {
	if v.null {
		return nil
	}
	s := v.text
	return &s
}

func (v value) boolean() (*bool, error) {
	if v.null {
		return nil, nil
	}
	var b bool
	if err := v.types.Scan(pgtype.BoolOID, pgtype.TextFormatCode, []byte(v.text), &b); err != nil {
		return nil, err
	}
	return &b, nil
}

func (v value) strings() ([]string, bool, error) {
	if v.null {
		return nil, true, nil
	}
	var out []*string
	err := v.types.Scan(v.oid, pgtype.TextFormatCode, []byte(v.text), &out)
	if err != nil {
		err = v.types.Scan(pgtype.TextArrayOID, pgtype.TextFormatCode, []byte(v.text), &out)
	}
	return flat(out), false, err
}

// apply applies one change of a source transaction to the copy, noting what it touched.
func (c *Connector) apply(s stx, msg pglogrepl.Message, rels map[uint32]*relation, t *touched) error {
	var rel *relation
	var oldT, newT *pglogrepl.TupleData
	switch m := msg.(type) {
	case *pglogrepl.TruncateMessage:
		for _, id := range m.RelationIDs {
			if r := rels[id]; r != nil && r.kind != "" {
				if err := c.truncate(s, r.kind, t); err != nil {
					return &stateError{err}
				}
			}
		}
		return nil
	case *pglogrepl.InsertMessage:
		rel, newT = rels[m.RelationID], m.Tuple
	case *pglogrepl.UpdateMessage:
		rel, oldT, newT = rels[m.RelationID], m.OldTuple, m.NewTuple
	case *pglogrepl.DeleteMessage:
		rel, oldT = rels[m.RelationID], m.OldTuple
	}
	if rel == nil {
		return fmt.Errorf("a change of relation %T before its relation message", msg)
	}
	if rel.kind == "" {
		return nil
	}
	oldV, newV := rel.tuple(oldT), rel.tuple(newT)
	if _, isUpdate := msg.(*pglogrepl.UpdateMessage); isUpdate && oldV == nil {
		// An update that kept its key: the message carries no old tuple.
		if rel.kind == kindFollowers {
			return nil
		}
		oldV = map[string]value{"id": newV["id"]}
	}
	// Unchanged TOASTed values of the new row: the old row's when the message carries the whole
	// old row (REPLICA IDENTITY FULL), else the copy's (applyUser, applyRecord keep them).
	if u, ok := msg.(*pglogrepl.UpdateMessage); ok && u.OldTupleType == pglogrepl.UpdateMessageTupleTypeOld {
		for f, v := range newV {
			if ov, ok := oldV[f]; ok && v.unchanged && !ov.unchanged {
				newV[f] = ov
			}
		}
	}
	var err error
	switch rel.kind {
	case kindUsers:
		err = c.applyUser(s, oldV, newV, t)
	case kindContacts, kindOpps:
		err = c.applyRecord(s, typeOf(rel.kind), oldV, newV, t)
	case kindFollowers:
		err = c.applyFollower(s, oldV, newV, t)
	}
	if err != nil {
		return &stateError{fmt.Errorf("%s: %w", rel.name, err)}
	}
	return nil
}

func (c *Connector) applyUser(s stx, oldV, newV map[string]value, t *touched) error {
	oldID := oldV["id"].str()
	if oldID != nil && (newV == nil || newV["id"].str() == nil || *newV["id"].str() != *oldID) {
		t.users[*oldID] = true
		if err := s.delUser(*oldID); err != nil {
			return err
		}
	}
	if newV == nil {
		return nil
	}
	id := newV["id"].str()
	if id == nil {
		return nil
	}
	row, _, err := s.user(*id)
	if err != nil {
		return err
	}
	if v := newV["role"]; !v.unchanged {
		row.Role = v.str()
	}
	if v := newV["location_ids"]; !v.unchanged {
		locs, null, err := v.strings()
		if err != nil {
			return fmt.Errorf("location_ids of user %s: %w", *id, err)
		}
		row.Locs, row.NoLoc = locs, null
	}
	for f, dst := range map[string]**bool{"assigned_data_only": &row.ADO, "contacts_enabled": &row.CE, "opportunities_enabled": &row.OE} {
		if v := newV[f]; !v.unchanged {
			b, err := v.boolean()
			if err != nil {
				return fmt.Errorf("%s of user %s: %w", f, *id, err)
			}
			*dst = b
		}
	}
	t.users[*id] = true
	return s.putUser(*id, row)
}

func (c *Connector) applyRecord(s stx, typ string, oldV, newV map[string]value, t *touched) error {
	if oldID := oldV["id"].str(); oldID != nil && (newV == nil || newV["id"].str() == nil || *newV["id"].str() != *oldID) {
		k := recKey{typ, *oldID}
		t.records[k] = true
		if err := s.delRec(k); err != nil {
			return err
		}
	}
	if newV == nil {
		return nil
	}
	id := newV["id"].str()
	if id == nil {
		return nil
	}
	k := recKey{typ, *id}
	row, _, err := s.rec(k)
	if err != nil {
		return err
	}
	if v := newV["location_id"]; !v.unchanged {
		row.Loc = v.str()
	}
	if v := newV["owner"]; !v.unchanged {
		row.Owner = v.str()
	}
	if v, ok := newV["contact_id"]; ok && !v.unchanged {
		row.Contact = v.str()
	}
	t.records[k] = true
	return s.putRec(k, row)
}

func (c *Connector) applyFollower(s stx, oldV, newV map[string]value, t *touched) error {
	key := func(v map[string]value) [3]*string {
		return [3]*string{v["record_type"].str(), v["record_id"].str(), v["user_id"].str()}
	}
	if oldV != nil && newV != nil {
		o, n := key(oldV), key(newV)
		same := true
		for i := range o {
			if (o[i] == nil) != (n[i] == nil) || (o[i] != nil && *o[i] != *n[i]) {
				same = false
			}
		}
		if same {
			return nil // an update of other columns
		}
	}
	if oldV != nil {
		k := key(oldV)
		if k[0] != nil && k[1] != nil && k[2] != nil {
			rk := recKey{*k[0], *k[1]}
			if err := s.removeFollower(rk, *k[2]); err != nil {
				return err
			}
			t.records[rk] = true
		}
	}
	if newV != nil {
		k := key(newV)
		return c.addFollowerRow(s, k[0], k[1], k[2], t)
	}
	return nil
}

// truncate removes every row of a kind from the copy (TRUNCATE of its table).
func (c *Connector) truncate(s stx, kind string, t *touched) error {
	switch kind {
	case kindUsers:
		return s.clear(bUsers, func(k []byte) error {
			t.users[string(k)] = true
			return nil
		})
	case kindFollowers:
		return s.clear(bFollowers, func(k []byte) error {
			if p := splitKey(k, 3); len(p) == 3 {
				t.records[recKey{p[0], p[1]}] = true
			}
			return nil
		})
	}
	typ := typeOf(kind)
	prefix := []byte(typ + "\x00")
	b := s.b(bRecords)
	var keys [][]byte
	cur := b.Cursor()
	for k, _ := cur.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = cur.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		t.records[recKey{typ, string(k[len(prefix):])}] = true
		if err := b.Delete(k); err != nil {
			return err
		}
	}
	return nil
}
