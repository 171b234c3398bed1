package highlevel

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

func (c *Connector) anomaly(kind, objKind, id, detail string) {
	c.anomalyAt("", kind, objKind, id, detail)
}

func (c *Connector) anomalyAt(location, kind, objKind, id, detail string) {
	c.m.anomalies.WithLabelValues(kind).Inc()
	c.log.Warn("source anomaly", "kind", kind, "location", location, "object", objKind, "id", id, "detail", detail)
}

// recordChange maps one listed or read record to its change (ok false: skip it).
func (c *Connector) recordChange(kind, location string, r hlRecord) (change, bool) {
	if !validID(r.ID) {
		c.anomalyAt(location, anomalyInvalidObject, kind, r.ID, "an invalid id: skipped")
		return change{}, false
	}
	if r.LocationID == "" {
		r.LocationID = location
	}
	if !slices.Contains(c.cfg.LocationIDs, r.LocationID) {
		// not one of ours (it moved, or the API answered for another location): absent here
		return change{kind: kind, id: r.ID}, true
	}
	report := func(kind, objKind, id, detail string) { c.anomalyAt(r.LocationID, kind, objKind, id, detail) }
	fact, _ := json.Marshal(recordFromAPI(kind, r, report))
	return change{kind: kind, id: r.ID, fact: fact}, true
}

func (c *Connector) userChange(u hlUser) (change, bool) {
	if !validID(u.ID) {
		c.anomaly(anomalyInvalidObject, kindUser, u.ID, "an invalid id: skipped")
		return change{}, false
	}
	f, ok := userFromAPI(u, c.anomaly)
	if !ok {
		return change{kind: kindUser, id: u.ID}, true
	}
	fact, _ := json.Marshal(f)
	return change{kind: kindUser, id: u.ID, fact: fact}, true
}

// reconcileAll pages through every location's users, contacts and opportunities and writes
// what differs from the copy: upserts, and deletes of what the listings no longer hold. With
// firstCopy the result is written as a snapshot.
func (c *Connector) reconcileAll(ctx context.Context, firstCopy bool) error {
	if err := c.learnCompany(ctx); err != nil {
		return err
	}
	startGen := c.seq()
	users := map[string]change{}
	usersComplete := true
	var errs []error
	var synced []string
	asked := map[string]bool{} // the locations whose company was looked up again (relearnCompany)
	for _, loc := range c.cfg.LocationIDs {
		if err := c.reconcileLocation(ctx, loc, startGen, firstCopy, users, asked); err != nil {
			if firstCopy || ctx.Err() != nil || errors.Is(err, errForeignWriter) || errors.Is(err, errCompanyMismatch) {
				return err
			}
			usersComplete = false
			errs = append(errs, fmt.Errorf("location %s: %w", loc, err))
			continue
		}
		synced = append(synced, loc)
	}
	var changes []change
	for _, id := range sortedKeys(users) {
		changes = append(changes, users[id])
	}
	if usersComplete {
		gone, err := c.absent(kindUser, "", users, startGen)
		if err != nil {
			return err
		}
		changes = append(changes, gone...)
	}
	for len(changes) > 0 {
		n := min(len(changes), 500)
		if err := c.commit(ctx, changes[:n], nil, firstCopy); err != nil {
			return err
		}
		changes = changes[n:]
	}
	if firstCopy {
		if err := c.finishFirstCopy(ctx); err != nil {
			return err
		}
	}
	now := float64(c.cfg.Now().UnixNano()) / 1e9
	for _, loc := range synced {
		c.m.lastSync.WithLabelValues(loc).Set(now)
	}
	if len(errs) == 0 {
		if err := c.purgeTombstones(startGen); err != nil {
			return err
		}
		c.ready.Store(true)
	}
	c.log.Info("reconciled", "locations", synced, "first_copy", firstCopy, "errors", len(errs))
	return errors.Join(errs...)
}

// reconcileLocation writes one location's records and collects its users. A users search that
// hints that the location left the learned company (companySuspect) makes it look the company
// up again, once per reconcile (asked), and search again when it changed.
func (c *Connector) reconcileLocation(ctx context.Context, loc string, startGen uint64, firstCopy bool, users map[string]change, asked map[string]bool) error {
	listed := 0
	list := func() error {
		listed = 0
		return c.api.listUsers(ctx, loc, func(u hlUser) error {
			listed++
			if ch, ok := c.userChange(u); ok {
				ch.guard, ch.guardGen = true, startGen
				if prev, seen := users[u.ID]; !seen || prev.fact == nil {
					users[u.ID] = ch
				}
			}
			return nil
		})
	}
	err := list()
	if why := companySuspect(err, listed); why != "" && !asked[loc] && ctx.Err() == nil {
		changed, lerr := c.relearnCompany(ctx, loc, why, asked)
		switch {
		case lerr != nil:
			// an empty listing is not taken as complete while its company is in doubt
			return errors.Join(err, lerr)
		case changed:
			err = list()
		}
	}
	if err != nil {
		return err
	}
	for _, kind := range []string{kindContact, kindOpportunity} {
		seen := map[string]change{}
		var changes []change // committed 1,000 at a time: one bbolt write (and fsync) for 10 pages
		page := func(rs []hlRecord) error {
			for _, r := range rs {
				if ch, ok := c.recordChange(kind, loc, r); ok {
					ch.guard, ch.guardGen = true, startGen
					seen[ch.id] = ch
					changes = append(changes, ch)
				}
			}
			if len(changes) < 1000 {
				return nil
			}
			err := c.commit(ctx, changes, nil, firstCopy)
			changes = nil
			return err
		}
		var err error
		if kind == kindContact {
			err = c.api.listContacts(ctx, loc, page)
		} else {
			err = c.api.listOpportunities(ctx, loc, page)
		}
		if err != nil {
			return err
		}
		if err := c.commit(ctx, changes, nil, firstCopy); err != nil {
			return err
		}
		gone, err := c.absent(kind, loc, seen, startGen)
		if err != nil {
			return err
		}
		if err := c.commit(ctx, gone, nil, firstCopy); err != nil {
			return err
		}
	}
	return nil
}

// absent lists the deletes of objects of kind (in loc, for records) that the copy holds, that a
// listing did not return, and that were written before the listing began.
func (c *Connector) absent(kind, loc string, seen map[string]change, startGen uint64) ([]change, error) {
	var out []change
	prefix := []byte(kind + "\x00")
	if kind == kindUser {
		prefix = nil
	}
	err := c.st.db.View(func(tx *bolt.Tx) error {
		cur := tx.Bucket(factBucket(kind)).Cursor()
		for k, v := cur.Seek(prefix); k != nil && len(k) >= len(prefix) && string(k[:len(prefix)]) == string(prefix); k, v = cur.Next() {
			id := string(k[len(prefix):])
			if _, ok := seen[id]; ok {
				continue
			}
			var e entry
			if err := json.Unmarshal(v, &e); err != nil {
				return err
			}
			if e.Deleted || e.Gen > startGen {
				continue
			}
			if kind != kindUser {
				var r recordFact
				if err := json.Unmarshal(e.Fact, &r); err != nil {
					return err
				}
				if r.LocationID != loc {
					continue
				}
			}
			out = append(out, change{kind: kind, id: id, guard: true, guardGen: startGen})
		}
		return nil
	})
	return out, err
}

// purgeTombstones forgets deletes written before a complete reconcile began.
func (c *Connector) purgeTombstones(startGen uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.st.db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bUsers, bRecords} {
			cur := tx.Bucket(b).Cursor()
			for k, v := cur.First(); k != nil; {
				var e entry
				if err := json.Unmarshal(v, &e); err != nil {
					return err
				}
				if e.Deleted && e.Gen <= startGen {
					if err := cur.Delete(); err != nil {
						return err
					}
					k, v = cur.Seek(k)
					continue
				}
				k, v = cur.Next()
			}
		}
		return nil
	})
}

// drainWork serves the webhook work waiting in the state dir until none is left. An item whose
// refresh fails stays queued (never dropped) and the error is returned after the others.
func (c *Connector) drainWork(ctx context.Context) error {
	var failed error
	skip := map[uint64]bool{}
	for {
		items, err := c.st.takeWork(64 + len(skip))
		if err != nil {
			return err
		}
		var todo []queued
		for _, q := range items {
			if !skip[q.n] {
				todo = append(todo, q)
			}
		}
		if len(todo) == 0 {
			return failed
		}
		var changes []change
		var done []queued
		for _, q := range todo {
			ch, ok, err := c.refresh(ctx, q.workItem)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				c.log.Warn("refresh failed: kept for later", "kind", q.Kind, "id", q.ID, "location", q.Location, "err", err)
				skip[q.n] = true
				failed = fmt.Errorf("refresh of %s %s: %w", q.Kind, q.ID, err)
				continue
			}
			if ok {
				changes = append(changes, ch)
			}
			done = append(done, q)
		}
		if err := c.commit(ctx, changes, done, false); err != nil {
			return err
		}
	}
}

// refresh turns one work item into a change: a delete as is, a refresh from the API.
func (c *Connector) refresh(ctx context.Context, w workItem) (change, bool, error) {
	if w.Op == "delete" {
		return change{kind: w.Kind, id: w.ID}, true, nil
	}
	loc := w.Location
	switch w.Kind {
	case kindUser:
		co := c.api.companyID()
		switch {
		case loc != "" || w.Company == "": // a location's, or checked when taken
		case co == "": // taken before the company was known, and it still is not
			return change{}, false, errors.New("the company is not known yet")
		case w.Company != co:
			c.log.Info("ignored: a company-level webhook of another company", "kind", w.Kind, "id", w.ID, "company", w.Company)
			return change{}, false, nil
		}
		tokLoc := loc
		if tokLoc == "" && c.cfg.TokenDir != "" {
			tokLoc = c.cfg.LocationIDs[0]
		}
		u, err := c.api.getUser(ctx, tokLoc, w.ID)
		if errors.Is(err, errNotFound) {
			return change{kind: kindUser, id: w.ID}, true, nil
		}
		if err != nil {
			return change{}, false, err
		}
		if u.ID == "" {
			u.ID = w.ID
		}
		ch, ok := c.userChange(u)
		return ch, ok, nil
	case kindContact, kindOpportunity:
		get := c.api.getContact
		if w.Kind == kindOpportunity {
			get = c.api.getOpportunity
		}
		r, err := get(ctx, loc, w.ID)
		if errors.Is(err, errNotFound) {
			return change{kind: w.Kind, id: w.ID}, true, nil
		}
		if err != nil {
			return change{}, false, err
		}
		ch, ok := c.recordChange(w.Kind, loc, r)
		return ch, ok, nil
	}
	return change{}, false, fmt.Errorf("unknown kind %q", w.Kind)
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}
