package refmodel

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// GenConfig parameterizes Gen. Zero fields take the defaults.
type GenConfig struct {
	// Seed seeds the random source: the same config makes the same events.
	Seed uint64
	// Users is the number of user ids, u-0 … u-(Users-1); default 40.
	Users int
	// RecordIDs is the number of record ids of each type (c-0 …, o-0 …); default 60.
	RecordIDs int
	// Locations are the location ids of users and records; default {"loc-1"}. With more than one,
	// a user gets a random non-empty subset and a record a random one.
	Locations []string
	// MaxFollowers is the maximum of the model Events applies its events to (Next respects the
	// maximum of the model it is given); default DefaultMaxFollowers.
	MaxFollowers int
}

// Gen makes random events that are valid against a model: follower and owner events only on
// records that exist, never a follower beyond the maximum; a record.upsert's followers may name
// the owner or a user twice. The mix (in percent): user.upsert 20,
// record.upsert 25, follower.add 25, follower.remove 12, owner.set 10, record.delete 4,
// user.delete 4; until a record exists, user.upsert and record.upsert only.
type Gen struct {
	cfg GenConfig
	rng *rand.Rand
}

// NewGen returns a generator for cfg.
func NewGen(cfg GenConfig) *Gen {
	if cfg.Users <= 0 {
		cfg.Users = 40
	}
	if cfg.RecordIDs <= 0 {
		cfg.RecordIDs = 60
	}
	if len(cfg.Locations) == 0 {
		cfg.Locations = []string{"loc-1"}
	}
	if cfg.MaxFollowers <= 0 {
		cfg.MaxFollowers = DefaultMaxFollowers
	}
	return &Gen{cfg: cfg, rng: rand.New(rand.NewPCG(cfg.Seed, 99))}
}

// Events returns n events with seqs 1 … n, each valid against the model of the events before it.
func Events(tb testing.TB, cfg GenConfig, n int) []Event {
	tb.Helper()
	g := NewGen(cfg)
	m := New()
	m.MaxFollowers = g.cfg.MaxFollowers
	events := make([]Event, 0, n)
	for seq := 1; seq <= n; seq++ {
		e := g.Next(m)
		e.Seq = uint64(seq)
		if err := m.Apply(e); err != nil {
			tb.Fatalf("refmodel: the generator made an invalid event %+v: %v", e, err)
		}
		events = append(events, e)
	}
	return events
}

func (g *Gen) user() string { return fmt.Sprintf("u-%d", g.rng.IntN(g.cfg.Users)) }

// location picks a location; with only one it draws nothing from the random source.
func (g *Gen) location() string {
	if len(g.cfg.Locations) == 1 {
		return g.cfg.Locations[0]
	}
	return g.cfg.Locations[g.rng.IntN(len(g.cfg.Locations))]
}

func (g *Gen) userLocations() []string {
	if len(g.cfg.Locations) == 1 {
		return []string{g.cfg.Locations[0]}
	}
	var locs []string
	for len(locs) == 0 {
		for _, l := range g.cfg.Locations {
			if g.rng.IntN(2) == 0 {
				locs = append(locs, l)
			}
		}
	}
	return locs
}

// Next returns an event (with seq 0) valid against m; it does not apply it.
func (g *Gen) Next(m *Model) Event {
	rng := g.rng
	var e Event
	none := len(m.Records) == 0
	// record picks one of m's records at random (by its rank in key order, for the same events
	// from the same seed); the keys are sorted only when a record is needed.
	record := func() Record {
		keys := m.Keys()
		return m.Records[keys[rng.IntN(len(keys))]]
	}
	str := func(s string) *string { return &s }
	pick := rng.IntN(100)
	switch {
	case pick < 20 || none && pick < 50:
		e.Op = OpUserUpsert
		e.User = &User{ID: g.user(), Role: []string{"user", "admin"}[rng.IntN(2)], LocationIDs: g.userLocations(),
			AssignedDataOnly: rng.IntN(2) == 0, ContactsEnabled: true, OpportunitiesEnabled: rng.IntN(4) > 0}
	case pick < 45 || none:
		typ := []string{TypeContact, TypeOpportunity}[rng.IntN(2)]
		r := Record{Type: typ, ID: fmt.Sprintf("%s-%d", typ[:1], rng.IntN(g.cfg.RecordIDs)), LocationID: g.location(), Owner: g.user(), Followers: []string{}}
		// Followers as drawn: now and then the owner or a duplicate, which the upsert's
		// normalisation drops; never more distinct ones than the maximum.
		for f := rng.IntN(min(6, m.max()+1)); f > 0; f-- {
			r.Followers = append(r.Followers, g.user())
		}
		e.Op, e.Record = OpRecordUpsert, &r
	case pick < 70:
		r := record()
		e.Op, e.Type, e.ID, e.UserID = OpFollowerAdd, r.Type, r.ID, str(g.user())
		if len(r.Followers) >= m.max() {
			e.Op = OpFollowerRemove
		}
	case pick < 82:
		r := record()
		e.Op, e.Type, e.ID, e.UserID = OpFollowerRemove, r.Type, r.ID, str(g.user())
	case pick < 92:
		r := record()
		e.Op, e.Type, e.ID, e.UserID = OpOwnerSet, r.Type, r.ID, str(g.user())
	case pick < 96:
		r := record()
		e.Op, e.Type, e.ID = OpRecordDelete, r.Type, r.ID
	default:
		e.Op, e.UserID = OpUserDelete, str(g.user())
	}
	return e
}
