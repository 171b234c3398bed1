package natssource

import (
	"fmt"
	"testing"
	"time"

	"github.com/crmauthz/crmauthz/internal/natstest"
)

func withTx(event, tx string) string {
	return event[:len(event)-1] + fmt.Sprintf(`,"tx":%q}`, tx)
}

// TestTxNotCut: the events of one source transaction (one "tx") are
// applied in one index transaction, even with a MaxBatch smaller than the
// transaction: a batch grows past MaxBatch to the end of its last tx, and the
// next tx starts the next batch.
func TestTxNotCut(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	js := natstest.JetStream(t, srv.URL())
	createStream(t, js, "TX", "tx.events")
	var events []string
	events = append(events, userEvents(1, 3)...)
	for _, e := range userEvents(10, 7) {
		events = append(events, withTx(e, "a"))
	}
	for _, e := range userEvents(20, 3) {
		events = append(events, withTx(e, "b"))
	}
	events = append(events, userEvents(30, 1)...)
	publish(t, js, "TX", "tx.events", events...)

	sc := newSidecar(t)
	src := sc.start(t, Config{URL: srv.URL(), Stream: "TX", Subject: "tx.events", MaxBatch: 2, BatchWait: time.Millisecond})
	waitApplied(t, sc, uint64(len(events)))
	waitFor(t, time.Minute, "counted", func() bool { return src.Status().EventsApplied == uint64(len(events)) })
	// Batches of at most 2 with a tx never cut: at most [1] [2] [3] [a×7] [b×3] [30], whatever the
	// timing; cutting at MaxBatch would take at least 7 (14 events, 2 at a time).
	if st := src.Status(); st.Batches > 6 {
		t.Fatalf("%d batches, want at most 6: a tx was cut", st.Batches)
	}
}

// TestInvalidEventInTx: an invalid event inside a transaction stops
// replication before the transaction's first event, not in its middle.
func TestInvalidEventInTx(t *testing.T) {
	cases := []struct{ name, bad string }{
		{"invalid against the index", `{"op":"follower.add","type":"contact","id":"nope","user_id":"u-1","tx":"t"}`},
		{"does not decode", `{"op":"user.rename","user_id":"u-1","tx":"t"}`},
	}
	srv := natstest.Start(t, natstest.Options{})
	js := natstest.JetStream(t, srv.URL())
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stream, subject := fmt.Sprintf("BADTX%d", i), fmt.Sprintf("badtx.%d", i)
			createStream(t, js, stream, subject)
			publish(t, js, stream, subject, userEvents(1, 2)...)                                          // 1, 2
			publish(t, js, stream, subject, withTx(userEvent("u-5"), "t"), withTx(userEvent("u-6"), "t")) // 3, 4
			if seq := publishRaw(t, js, subject, tc.bad); seq != 5 {
				t.Fatalf("bad event at seq %d", seq)
			}
			sc := newSidecar(t)
			sc.start(t, Config{URL: srv.URL(), Stream: stream, Subject: subject})
			st := waitState(t, sc, StateStopped)
			if sc.ix.AppliedSeq() != 2 || st.StoppedAtSeq != 5 || hasUser(t, sc.ix, "u-5") {
				t.Fatalf("applied_seq %d, stopped at %d, u-5 present %v; want 2, 5, false",
					sc.ix.AppliedSeq(), st.StoppedAtSeq, hasUser(t, sc.ix, "u-5"))
			}
		})
	}
}
