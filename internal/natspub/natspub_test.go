package natspub

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/crmauthz/crmauthz/internal/natstest"
)

// TestPublish: the publisher's seq checks keep the stream's seqs equal to the
// file's, and re-running a file resumes it.
func TestPublish(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	js := natstest.JetStream(t, srv.URL())
	createStream(t, js, "P", "p.events")
	ctx := context.Background()
	run := func(body string) (PublishResult, error) {
		return Publish(ctx, js, NewEventReader(strings.NewReader(body)), PublishOptions{Stream: "P", Subject: "p.events"})
	}
	withSeq := func(seq int, e string) string {
		return `{"seq":` + strconv.Itoa(seq) + `,` + strings.TrimPrefix(e, "{")
	}
	u := userEvents(1, 6)
	cases := []struct {
		name     string
		body     string
		err      string
		pub, skp int
		last     uint64
	}{
		{name: "NDJSON without seqs", body: u[0] + "\n\n" + u[1] + "\n", pub: 2, last: 2},
		{name: "a batch document with seqs", body: `{"events": [` + withSeq(3, u[2]) + `,` + withSeq(4, u[3]) + `]}`, pub: 2, last: 4},
		{name: "re-running resumes", body: withSeq(3, u[2]) + "\n" + withSeq(4, u[3]) + "\n" + withSeq(5, u[4]), pub: 1, skp: 2, last: 5},
		{name: "a gap is refused", body: withSeq(7, u[5]), err: "the stream's next seq is 6", last: 5},
		{name: "an invalid event stops, after the valid ones", body: u[5] + "\n" + `{"op":"nope"}` + "\n" + u[0], err: "event 2 (line 2) is invalid", pub: 1, last: 6},
		{name: "neither format", body: `[1, 2]`, err: "neither NDJSON", last: 6},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			res, err := run(tc.body)
			if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
			if res.Published != tc.pub || res.Skipped != tc.skp || res.LastSeq != tc.last {
				t.Fatalf("result %+v, want published %d, skipped %d, last seq %d", res, tc.pub, tc.skp, tc.last)
			}
		})
	}
}

func createStream(tb testing.TB, js jetstream.JetStream, name, subject string) jetstream.Stream {
	tb.Helper()
	s, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: name, Subjects: []string{subject}, Storage: jetstream.FileStorage})
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

func userEvents(from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf(`{"op":"user.upsert","user":{"id":"u-%d","role":"user","location_ids":["loc-1"],"assigned_data_only":true}}`, from+i)
	}
	return out
}
