package postgres

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/crmauthz/crmauthz/internal/index"
)

// gen writes random transactions to the source: owner changes, follower moves between records,
// deletes, users with an unknown role, more than 10 followers, multi-statement transactions.
type gen struct {
	rng *rand.Rand
}

func (g *gen) user() string { return fmt.Sprintf("u-%d", g.rng.IntN(30)) }
func (g *gen) contact() string {
	return fmt.Sprintf("c-%d", g.rng.IntN(25))
}
func (g *gen) opp() string { return fmt.Sprintf("o-%d", g.rng.IntN(10)) }
func (g *gen) loc() string { return fmt.Sprintf("loc-%d", g.rng.IntN(3)) }

// statement returns one random statement.
func (g *gen) statement() string {
	switch g.rng.IntN(12) {
	case 0, 1:
		role := []string{"user", "user", "admin", "guest"}[g.rng.IntN(4)]
		return fmt.Sprintf(`INSERT INTO crm_users VALUES ('%s','%s','{%s}',%v,true,%v) ON CONFLICT (id) DO UPDATE SET role = excluded.role, location_ids = excluded.location_ids`,
			g.user(), role, g.loc(), g.rng.IntN(2) == 0, g.rng.IntN(4) != 0)
	case 2:
		return fmt.Sprintf(`DELETE FROM crm_users WHERE id = '%s'`, g.user())
	case 3, 4:
		return fmt.Sprintf(`INSERT INTO crm_contacts VALUES ('%s','%s','%s') ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id`,
			g.contact(), g.loc(), g.user())
	case 5:
		return fmt.Sprintf(`INSERT INTO crm_opportunities VALUES ('%s','%s','%s','%s') ON CONFLICT (id) DO UPDATE SET owner_id = excluded.owner_id, contact_id = excluded.contact_id`,
			g.opp(), g.loc(), g.user(), g.contact())
	case 6:
		return fmt.Sprintf(`DELETE FROM crm_contacts WHERE id = '%s'`, g.contact())
	case 7, 8, 9:
		typ, id := "contact", g.contact()
		if g.rng.IntN(3) == 0 {
			typ, id = "opportunity", g.opp()
		}
		return fmt.Sprintf(`INSERT INTO crm_record_followers VALUES ('%s','%s','%s') ON CONFLICT DO NOTHING`, typ, id, g.user())
	case 10:
		return fmt.Sprintf(`DELETE FROM crm_record_followers WHERE record_type = 'contact' AND record_id = '%s' AND user_id IN ('%s','%s')`,
			g.contact(), g.user(), g.user())
	default: // a follower moves to another record
		return fmt.Sprintf(`UPDATE crm_record_followers SET record_id = '%s' WHERE record_type = 'contact' AND record_id = '%s' AND user_id = '%s'
			AND NOT EXISTS (SELECT 1 FROM crm_record_followers f WHERE f.record_type = 'contact' AND f.record_id = '%[1]s' AND f.user_id = '%[3]s')`,
			g.contact(), g.contact(), g.user())
	}
}

func (g *gen) tx(ctx context.Context, tb testing.TB, conn *pgx.Conn) {
	tb.Helper()
	tx, err := conn.Begin(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	for range 1 + g.rng.IntN(5) {
		if _, err := tx.Exec(ctx, g.statement()); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		tb.Fatal(err)
	}
}

// TestRandomTransactions: after random transactions the replica holds the source's facts; a
// transaction that swaps the owners of two contacts (and their followers) is never seen half
// applied; many followers on one record keep the 10 smallest; TRUNCATE of the followers removes
// every follower.
func TestRandomTransactions(t *testing.T) {
	ctx := context.Background()
	pg := crmDB(t)
	conn := pg.Conn(t, "crm")
	g := &gen{rng: rand.New(rand.NewPCG(1, 2))}
	pg.Exec(t, "crm",
		`INSERT INTO crm_users VALUES ('sa','user','{loc-1}',true,true,true), ('sb','user','{loc-1}',true,true,true)`,
		`INSERT INTO crm_contacts VALUES ('swap-1','loc-1','sa'), ('swap-2','loc-1','sb')`,
		`INSERT INTO crm_record_followers VALUES ('contact','swap-1','sb'), ('contact','swap-2','sa')`)
	for range 40 {
		g.tx(ctx, t, conn)
	}
	rep := newReplica(t)
	run := startConnector(t, Config{DSN: pg.DSN("postgres", "crm"), Sink: rep.sink(t), StateDir: t.TempDir()})
	waitEqual(t, rep, conn, "after the snapshot")

	// A reader checks the swap invariant on every committed state of the replica.
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Value
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stop.Load() {
			_ = rep.ix.View(func(tx *index.ReadTx) error {
				a, _, _ := tx.Record("contact", "swap-1")
				b, _, _ := tx.Record("contact", "swap-2")
				ok := (a.Owner == "sa" && b.Owner == "sb" && len(a.Followers) == 1 && a.Followers[0] == "sb" && b.Followers[0] == "sa") ||
					(a.Owner == "sb" && b.Owner == "sa" && len(a.Followers) == 1 && a.Followers[0] == "sa" && b.Followers[0] == "sb")
				if !ok {
					bad.Store(fmt.Sprintf("swap-1 %+v, swap-2 %+v", a, b))
				}
				return nil
			})
		}
	}()
	swap := func(x, y string) {
		pg.Exec(t, "crm", "BEGIN",
			fmt.Sprintf(`UPDATE crm_contacts SET owner_id = '%s' WHERE id = 'swap-1'`, y),
			fmt.Sprintf(`UPDATE crm_contacts SET owner_id = '%s' WHERE id = 'swap-2'`, x),
			fmt.Sprintf(`UPDATE crm_record_followers SET user_id = '%s' WHERE record_id = 'swap-1'`, x),
			fmt.Sprintf(`UPDATE crm_record_followers SET user_id = '%s' WHERE record_id = 'swap-2'`, y),
			"COMMIT")
	}
	for i := range 60 {
		g.tx(ctx, t, conn)
		if i%3 == 0 {
			if i%2 == 0 {
				swap("sa", "sb")
			} else {
				swap("sb", "sa")
			}
		}
	}
	waitEqual(t, rep, conn, "after random transactions")
	stop.Store(true)
	wg.Wait()
	if b := bad.Load(); b != nil {
		t.Fatalf("a swap was seen half applied: %s", b)
	}
	// 14 followers on one record: the 10 smallest ids.
	for i := range 14 {
		pg.Exec(t, "crm", fmt.Sprintf(`INSERT INTO crm_record_followers VALUES ('contact','swap-1','x-%02d')`, i))
	}
	waitEqual(t, rep, conn, "after 14 followers")
	if v := counter(t, run, "crmauthz_connector_source_anomalies_total", "too_many_followers"); v < 1 {
		t.Errorf("too_many_followers counted %v times", v)
	}
	if v := counter(t, run, "crmauthz_connector_source_anomalies_total", "unknown_role"); v < 1 {
		t.Errorf("unknown_role counted %v times (the generator writes role guest)", v)
	}
	pg.Exec(t, "crm", `TRUNCATE crm_record_followers`)
	waitEqual(t, rep, conn, "after TRUNCATE of the followers")
	for _, r := range rep.model(t).Records {
		if len(r.Followers) != 0 {
			t.Fatalf("%s/%s keeps followers after TRUNCATE: %v", r.Type, r.ID, r.Followers)
		}
	}
}

// counter reads a counter with one label value.
func counter(tb testing.TB, r *running, name, label string) float64 {
	tb.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}
