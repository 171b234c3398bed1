package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// refModel is the reference model of the index: SPEC §2's semantics applied
// to plain maps, for comparing with what the server holds after a crash.
type refModel struct {
	users   map[string]refUser
	records map[string]refRecord // key: type/id
}

type refUser struct {
	ID          string   `json:"id"`
	Role        string   `json:"role"`
	LocationIDs []string `json:"location_ids"`
	ADO         bool     `json:"assigned_data_only"`
	Contacts    bool     `json:"contacts_enabled"`
	Opps        bool     `json:"opportunities_enabled"`
}

type refRecord struct {
	Type       string   `json:"type"`
	ID         string   `json:"id"`
	LocationID string   `json:"location_id"`
	Owner      string   `json:"owner"`
	Followers  []string `json:"followers"`
}

func newRefModel() *refModel {
	return &refModel{users: map[string]refUser{}, records: map[string]refRecord{}}
}

type refEvent struct {
	Seq    int        `json:"seq"`
	Op     string     `json:"op"`
	User   *refUser   `json:"user,omitempty"`
	Record *refRecord `json:"record,omitempty"`
	Type   string     `json:"type,omitempty"`
	ID     string     `json:"id,omitempty"`
	UserID *string    `json:"user_id,omitempty"`
}

func (m *refModel) apply(e refEvent) {
	switch e.Op {
	case "user.upsert":
		m.users[e.User.ID] = *e.User
	case "user.delete":
		id := *e.UserID
		delete(m.users, id)
		for k, r := range m.records {
			if r.Owner == id {
				r.Owner = ""
			}
			r.Followers = slices.DeleteFunc(slices.Clone(r.Followers), func(f string) bool { return f == id })
			m.records[k] = r
		}
	case "record.upsert":
		m.records[e.Record.Type+"/"+e.Record.ID] = *e.Record
	case "record.delete":
		delete(m.records, e.Type+"/"+e.ID)
	case "follower.add":
		r := m.records[e.Type+"/"+e.ID]
		if *e.UserID != r.Owner && !slices.Contains(r.Followers, *e.UserID) {
			r.Followers = append(slices.Clone(r.Followers), *e.UserID)
		}
		m.records[e.Type+"/"+e.ID] = r
	case "follower.remove":
		r := m.records[e.Type+"/"+e.ID]
		r.Followers = slices.DeleteFunc(slices.Clone(r.Followers), func(f string) bool { return f == *e.UserID })
		m.records[e.Type+"/"+e.ID] = r
	case "owner.set":
		r := m.records[e.Type+"/"+e.ID]
		r.Owner = *e.UserID
		r.Followers = slices.DeleteFunc(slices.Clone(r.Followers), func(f string) bool { return f == *e.UserID })
		m.records[e.Type+"/"+e.ID] = r
	}
}

// genEvents makes n valid events (seq 1..n) at random, valid against the
// model as it evolves: follower ops only on existing records, never an 11th follower.
func genEvents(n int, seed uint64) []refEvent {
	rng := rand.New(rand.NewPCG(seed, 99))
	m := newRefModel()
	events := make([]refEvent, 0, n)
	user := func() string { return fmt.Sprintf("u-%d", rng.IntN(40)) }
	str := func(s string) *string { return &s }
	for seq := 1; seq <= n; seq++ {
		e := refEvent{Seq: seq}
		keys := make([]string, 0, len(m.records))
		for k := range m.records {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		pick := rng.IntN(100)
		switch {
		case pick < 20 || len(keys) == 0 && pick < 50:
			e.Op = "user.upsert"
			e.User = &refUser{ID: user(), Role: []string{"user", "admin"}[rng.IntN(2)], LocationIDs: []string{"loc-1"},
				ADO: rng.IntN(2) == 0, Contacts: true, Opps: rng.IntN(4) > 0}
		case pick < 45 || len(keys) == 0:
			typ := []string{"contact", "opportunity"}[rng.IntN(2)]
			r := refRecord{Type: typ, ID: fmt.Sprintf("%s-%d", typ[:1], rng.IntN(60)), LocationID: "loc-1", Owner: user(), Followers: []string{}}
			for f := rng.IntN(6); f > 0; f-- {
				if u := user(); u != r.Owner && !slices.Contains(r.Followers, u) {
					r.Followers = append(r.Followers, u)
				}
			}
			e.Op, e.Record = "record.upsert", &r
		case pick < 70:
			k := keys[rng.IntN(len(keys))]
			r := m.records[k]
			e.Op, e.Type, e.ID, e.UserID = "follower.add", r.Type, r.ID, str(user())
			if len(r.Followers) >= 10 {
				e.Op = "follower.remove"
			}
		case pick < 82:
			r := m.records[keys[rng.IntN(len(keys))]]
			e.Op, e.Type, e.ID, e.UserID = "follower.remove", r.Type, r.ID, str(user())
		case pick < 92:
			r := m.records[keys[rng.IntN(len(keys))]]
			e.Op, e.Type, e.ID, e.UserID = "owner.set", r.Type, r.ID, str(user())
		case pick < 96:
			r := m.records[keys[rng.IntN(len(keys))]]
			e.Op, e.Type, e.ID = "record.delete", r.Type, r.ID
		default:
			e.Op, e.UserID = "user.delete", str(user())
		}
		m.apply(e)
		events = append(events, e)
	}
	return events
}

// canonical renders a model as sorted lines, followers sorted (their order is
// not part of the contract).
func (m *refModel) canonical() string {
	var lines []string
	for _, u := range m.users {
		b, _ := json.Marshal(u)
		lines = append(lines, "U"+string(b))
	}
	for _, r := range m.records {
		r.Followers = slices.Sorted(slices.Values(r.Followers))
		b, _ := json.Marshal(r)
		lines = append(lines, "R"+string(b))
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// exported reads the server's snapshot export into a model.
func exported(t testing.TB, p *proc) (int, *refModel) {
	t.Helper()
	code, raw := callRaw(t, http.MethodGet, p.admin+"/v1/replication/snapshot", nil, authz)
	if code != 200 {
		t.Fatalf("export: %d %s", code, raw)
	}
	m := newRefModel()
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	var hdr struct{ Seq int }
	for i := 0; sc.Scan(); i++ {
		if i == 0 {
			if err := json.Unmarshal(sc.Bytes(), &hdr); err != nil {
				t.Fatal(err)
			}
			continue
		}
		var line struct {
			User   *refUser
			Record *refRecord
		}
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		if line.User != nil {
			m.users[line.User.ID] = *line.User
		} else {
			m.records[line.Record.Type+"/"+line.Record.ID] = *line.Record
		}
	}
	return hdr.Seq, m
}

func snapshotOf(m *refModel, seq int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "{\"seq\": %d}\n", seq)
	for _, u := range m.users {
		j, _ := json.Marshal(map[string]any{"user": u})
		b.Write(j)
		b.WriteByte('\n')
	}
	for _, r := range m.records {
		j, _ := json.Marshal(map[string]any{"record": r})
		b.Write(j)
		b.WriteByte('\n')
	}
	return b.String()
}

// TestCrashRecovery streams batches into the real binary, kills it with
// SIGKILL at random moments (sometimes during a snapshot load), restarts it,
// and checks after every restart that applied_seq covers every acknowledged
// batch and that the whole index equals the reference model at applied_seq:
// nothing lost, nothing half-applied.
func TestCrashRecovery(t *testing.T) {
	const kills = 24
	events := genEvents(30000, 7)
	modelAt := func(seq int) *refModel {
		m := newRefModel()
		for _, e := range events[:seq] {
			m.apply(e)
		}
		return m
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(42, 1))
	acked := 0
	for round := 0; round < kills; round++ {
		p := startServer(t, dir)
		seq, got := exported(t, p)
		if seq < acked {
			t.Fatalf("round %d: applied_seq %d after restart, but seq %d was acknowledged", round, seq, acked)
		}
		if want := modelAt(seq); got.canonical() != want.canonical() {
			t.Fatalf("round %d: the index at applied_seq %d differs from the reference model", round, seq)
		}
		acked = seq
		if seq >= len(events) {
			p.stop()
			break
		}

		var ackedNow atomic.Int64
		ackedNow.Store(int64(seq))
		done := make(chan struct{})
		feedRng := rand.New(rand.NewPCG(uint64(round), 3))
		go func() { // the feeder: batches of 1–60 events until the process dies
			defer close(done)
			rng := feedRng
			next := seq + 1
			if round%6 == 5 { // a snapshot of an earlier state, then the events after it
				back := max(0, seq-rng.IntN(50))
				ackedNow.Store(int64(back)) // once sent, the index may hold either state
				req, _ := http.NewRequest(http.MethodPut, p.admin+"/v1/replication/snapshot", strings.NewReader(snapshotOf(modelAt(back), back)))
				req.Header.Set("Authorization", "Bearer "+testToken)
				resp, err := client.Do(req)
				if err != nil {
					return
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					return
				}
				next = back + 1
			}
			for next <= len(events) {
				n := 1 + rng.IntN(60)
				end := min(next+n-1, len(events))
				body, _ := json.Marshal(map[string]any{"events": events[next-1 : end]})
				req, _ := http.NewRequest(http.MethodPost, p.admin+"/v1/replication/events", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+testToken)
				resp, err := client.Do(req)
				if err != nil {
					return // killed
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("round %d: batch %d..%d: status %d", round, next, end, resp.StatusCode)
					return
				}
				ackedNow.Store(int64(end))
				next = end + 1
			}
		}()
		time.Sleep(time.Duration(5+rng.IntN(120)) * time.Millisecond)
		p.kill()
		<-done
		acked = int(ackedNow.Load())
	}
	p := startServer(t, dir)
	seq, got := exported(t, p)
	if seq < acked || got.canonical() != modelAt(seq).canonical() {
		t.Fatalf("final: applied_seq %d (acknowledged %d), index equal to the model: %v", seq, acked, got.canonical() == modelAt(seq).canonical())
	}
	t.Logf("%d kills, final applied_seq %d of %d events", kills, seq, len(events))
}
