package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/crmauthz/crmauthz/internal/dataset"
	"github.com/crmauthz/crmauthz/internal/replication"
)

// soakEvents generates the soak's replication (soak.go): batches of events
// for POST /v1/replication/events (SPEC "Replication API"), valid against
// the world the index was loaded with. A share newShare of the events upsert
// a new record (record i of the world for i from Records on, so that the
// index file grows as in production); the rest change a random record of
// the loaded world, in equal parts owner.set, follower.add and
// follower.remove. The records changed so far are tracked, so that no
// follower.add makes an 11th follower (which would reject the whole batch)
// and every follower.remove names a present follower: each event changes
// the index.
type soakEvents struct {
	w        dataset.World
	rng      *rand.Rand
	newShare float64
	next     int                 // the next new record
	changed  map[int]*soakRecord // the records of the world changed so far, as they now are
}

// soakRecord is the owner and followers of one record as the events left it.
type soakRecord struct {
	typ, id, owner string
	followers      []string
}

// soakMaxFollowers is the most followers a record may have besides its
// owner (SPEC "Replication API": an 11th is invalid).
const soakMaxFollowers = 10

func newSoakEvents(w dataset.World, newShare float64, seed uint64) *soakEvents {
	return &soakEvents{w: w, rng: rand.New(rand.NewPCG(seed, 0x50a4)), newShare: newShare,
		next: w.Config().Records, changed: map[int]*soakRecord{}}
}

// batch appends the JSON body of one batch of n events, numbered from seq
// on, to b.
func (g *soakEvents) batch(b []byte, seq uint64, n int) []byte {
	b = append(b, `{"events":[`...)
	for i := range n {
		if i > 0 {
			b = append(b, ',')
		}
		b = g.event(b, seq+uint64(i))
	}
	return append(b, "]}"...)
}

// event appends one event with sequence number seq.
func (g *soakEvents) event(b []byte, seq uint64) []byte {
	b = append(b, `{"seq":`...)
	b = strconv.AppendUint(b, seq, 10)
	if g.rng.Float64() < g.newShare {
		b = append(b, `,"op":"`+replication.OpRecordUpsert+`","record":`...)
		b = g.w.RecordAt(g.next).AppendJSON(b)
		g.next++
		return append(b, '}')
	}
	c := g.world().Records
	r := g.record(g.rng.IntN(c))
	user := "u-" + strconv.Itoa(g.rng.IntN(g.world().Users))
	op := []string{replication.OpOwnerSet, replication.OpFollowerAdd, replication.OpFollowerRemove}[g.rng.IntN(3)]
	if op == replication.OpFollowerAdd && len(r.followers) >= soakMaxFollowers {
		op = replication.OpFollowerRemove
	}
	if op == replication.OpFollowerRemove && len(r.followers) == 0 {
		op = replication.OpFollowerAdd
	}
	switch op {
	case replication.OpOwnerSet:
		// owner.set makes a follower the owner and drops it from the
		// followers; the owner again changes nothing, so another is taken.
		for user == r.owner {
			user = "u-" + strconv.Itoa(g.rng.IntN(g.world().Users))
		}
		r.owner = user
		r.followers = slices.DeleteFunc(r.followers, func(f string) bool { return f == user })
	case replication.OpFollowerAdd:
		// Adding the owner or a present follower changes nothing; so
		// that every event changes the index, another user is taken.
		for r.owner == user || slices.Contains(r.followers, user) {
			user = "u-" + strconv.Itoa(g.rng.IntN(g.world().Users))
		}
		r.followers = append(r.followers, user)
	case replication.OpFollowerRemove:
		k := g.rng.IntN(len(r.followers))
		user = r.followers[k]
		r.followers = slices.Delete(r.followers, k, k+1)
	}
	b = append(b, `,"op":"`...)
	b = append(b, op...)
	b = append(b, `","type":`...)
	b = strconv.AppendQuote(b, r.typ)
	b = append(b, `,"id":`...)
	b = strconv.AppendQuote(b, r.id)
	b = append(b, `,"user_id":`...)
	b = strconv.AppendQuote(b, user)
	return append(b, '}')
}

func (g *soakEvents) world() dataset.Config { return g.w.Config() }

// record is record i of the world as the events so far left it.
func (g *soakEvents) record(i int) *soakRecord {
	if r, ok := g.changed[i]; ok {
		return r
	}
	d := g.w.RecordAt(i)
	r := &soakRecord{typ: d.Type, id: d.ID, owner: d.Owner, followers: slices.Clone(d.Followers)}
	g.changed[i] = r
	return r
}

// replicator posts the soak's batches, one at a time, one every every (a
// tick that finds the previous batch still in flight is dropped: a slow
// commit lowers the rate reached, as in session 11's runs), continuing
// from the server's applied_seq. It stops at the first batch not applied
// (any answer but 200, or no answer): the events generated since would no
// longer match the index.
type replicator struct {
	admin  string // crmauthz's admin root URL
	client *http.Client
	gen    *soakEvents
	batch  int
	every  time.Duration

	mu      sync.Mutex
	applied int64           // since the last take
	lat     []time.Duration // round trips of the batches applied since the last take
	total   replStats
}

// replStats is what the replication did over the whole soak.
type replStats struct {
	batches int64
	applied int64
	err     string // why it stopped early; "": it did not
}

func newReplicator(admin string, gen *soakEvents, batch int, every time.Duration) *replicator {
	return &replicator{admin: admin, client: &http.Client{Timeout: time.Minute}, gen: gen, batch: batch, every: every}
}

// run posts batches until ctx ends or a batch fails.
func (r *replicator) run(ctx context.Context) {
	seq, err := r.appliedSeq(ctx)
	if err != nil {
		r.fail(ctx, err)
		return
	}
	tick := time.NewTicker(r.every)
	defer tick.Stop()
	var body []byte
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		body = r.gen.batch(body[:0], seq+1, r.batch)
		t0 := time.Now()
		if err := r.post(ctx, body); err != nil {
			r.fail(ctx, fmt.Errorf("the batch from seq %d: %w", seq+1, err))
			return
		}
		seq += uint64(r.batch)
		r.mu.Lock()
		r.applied += int64(r.batch)
		r.lat = append(r.lat, time.Since(t0))
		r.total.batches++
		r.total.applied += int64(r.batch)
		r.mu.Unlock()
	}
}

// post sends one batch; nil when it was applied.
func (r *replicator) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.admin+"/v1/replication/events", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, reply, err := roundTrip(r.client, req)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%d %.300s", resp.StatusCode, reply)
	}
	return nil
}

// appliedSeq reads the server's applied_seq (/v1/replication/status).
func (r *replicator) appliedSeq(ctx context.Context) (uint64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.admin+"/v1/replication/status", nil)
	if err != nil {
		return 0, err
	}
	resp, body, err := roundTrip(r.client, req)
	if err != nil {
		return 0, fmt.Errorf("replication status: %w", err)
	}
	var st struct {
		AppliedSeq *uint64 `json:"applied_seq"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &st) != nil || st.AppliedSeq == nil {
		return 0, fmt.Errorf("replication status: %d %.300s", resp.StatusCode, body)
	}
	return *st.AppliedSeq, nil
}

// fail notes why the replication stopped, unless the soak ended it.
func (r *replicator) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	r.mu.Lock()
	r.total.err = err.Error()
	r.mu.Unlock()
}

// take returns the events applied and the batches' round trips since the
// last take.
func (r *replicator) take() (applied int64, lat []time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	applied, lat = r.applied, r.lat
	r.applied, r.lat = 0, nil
	return applied, lat
}

func (r *replicator) stats() replStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}
