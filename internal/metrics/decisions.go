package metrics

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// maxTableReasons bounds the reasons a DecisionTable keeps per action and
// outcome. A policy gives a handful; past the bound a reason is counted
// through Decision (its map), so a policy with unbounded reasons costs a
// lookup, never an unbounded scan.
const maxTableReasons = 32

// DecisionTable is the crmauthz_decisions_total counters of one endpoint,
// indexed by the caller's action id and the outcome: Count finds the
// counter of a (action, allow, reason) in a short list of the reasons seen
// so far — a few string compares, no hash of the labels and no map — and
// increments it. The series are those of Decision (the same children of the
// same vector): a table changes how a counter is found, not what /metrics
// shows; no series appears before its first decision
// (TestDecisionTableExposition).
type DecisionTable struct {
	m        *Metrics
	endpoint string
	actions  []string     // action id i is actions[i]; len(actions) is "other"
	rows     []reasonList // [2*action + allow]
	duration atomic.Pointer[prometheus.Observer]
}

// reasonList is the counters of one (action, allow), copy on write: a
// reader loads the slice and scans it without a lock.
type reasonList struct {
	l  atomic.Pointer[[]reasonCounter]
	mu sync.Mutex // serialises writers
}

type reasonCounter struct {
	reason string
	c      prometheus.Counter
}

// DecisionTable returns the decision counters of endpoint for the actions
// (ids 0..len(actions)-1 are those labels, id len(actions) is "other").
// The caller keeps actions bounded.
func (m *Metrics) DecisionTable(endpoint string, actions []string) *DecisionTable {
	return &DecisionTable{m: m, endpoint: endpoint, actions: append([]string(nil), actions...),
		rows: make([]reasonList, 2*(len(actions)+1))}
}

// Count counts one decision of action id action (an id out of range counts
// as "other").
func (t *DecisionTable) Count(action int, allow bool, reason string) {
	if uint(action) > uint(len(t.actions)) {
		action = len(t.actions)
	}
	row := &t.rows[2*action+b2i(allow)]
	if l := row.l.Load(); l != nil {
		for i := range *l {
			if (*l)[i].reason == reason {
				(*l)[i].c.Inc()
				return
			}
		}
	}
	t.slow(row, action, allow, reason).Inc()
}

// CountLabel counts one decision of the action label action: one of the
// table's actions or "other" (any other label is counted through Decision).
func (t *DecisionTable) CountLabel(action string, allow bool, reason string) {
	for i, a := range t.actions {
		if a == action {
			t.Count(i, allow, reason)
			return
		}
	}
	if action != "other" {
		t.m.Decision(t.endpoint, action, allow, reason)
		return
	}
	t.Count(len(t.actions), allow, reason)
}

// Duration observes the handling time of one decision request of the
// endpoint (DecisionDuration, its observer resolved once).
func (t *DecisionTable) Duration(d time.Duration) {
	t.m.observeDuration(&t.duration, t.endpoint, d)
}

// slow finds or creates the counter of a reason not in row's list, and adds
// it to the list unless the list is full.
func (t *DecisionTable) slow(row *reasonList, action int, allow bool, reason string) prometheus.Counter {
	label := "other"
	if action < len(t.actions) {
		label = t.actions[action]
	}
	row.mu.Lock()
	defer row.mu.Unlock()
	var old []reasonCounter
	if l := row.l.Load(); l != nil {
		old = *l
		for _, rc := range old {
			if rc.reason == reason {
				return rc.c
			}
		}
	}
	c := t.m.decisions.WithLabelValues(t.endpoint, label, strconv.FormatBool(allow), reason)
	if len(old) >= maxTableReasons {
		return c
	}
	l := make([]reasonCounter, len(old), len(old)+1)
	copy(l, old)
	l = append(l, reasonCounter{reason: strings.Clone(reason), c: c})
	row.l.Store(&l)
	return c
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
