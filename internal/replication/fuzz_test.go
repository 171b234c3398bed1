package replication

import (
	"bytes"
	"errors"
	"testing"

	"github.com/crmauthz/crmauthz/internal/strictjson"
)

// FuzzDecodeBatch feeds arbitrary bodies to the batch decoder and applies
// what it accepts to a real index. Whatever the input: no panic; a decoded
// event is valid; Apply either succeeds or fails with a client error and
// leaves the index exactly as it was.
func FuzzDecodeBatch(f *testing.F) {
	for _, s := range []string{
		`{"events": []}`,
		`{"events": [{"seq": 1, "op": "user.upsert", "user": {"id": "u-1", "role": "user", "location_ids": ["l"]}}]}`,
		`{"events": [{"seq": 1, "op": "record.upsert", "record": {"type": "contact", "id": "c-1", "location_id": "l", "owner": "u-1", "followers": ["u-2","u-2","u-1"]}}, {"seq": 2, "op": "follower.add", "type": "contact", "id": "c-1", "user_id": "u-3"}]}`,
		`{"events": [{"seq": 1, "op": "owner.set", "type": "opportunity", "id": "o", "user_id": ""}]}`,
		`{"events": [{"seq": 1, "op": "user.delete", "user_id": "u-1"}, {"seq": 3, "op": "user.delete", "user_id": "u-1"}]}`,
		`{"events": [{"seq": 1, "op": "record.delete", "type": "contact", "id": "c\u0000"}]}`,
		`{"events": [{"seq": 1, "op": "nope"}]}`,
		`{"events": [{"seq": 1, "op": "user.delete", "user_id": "u-1", "user_id": "u-2"}]}`,
		`{"events": [{"seq": 1, "op": "user.delete", "USER_ID": "u-1"}]}`,
		`{"EVENTS": [], "events": []}`,
		`{"events": [`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	r, _ := newReplicator(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		events, err := r.DecodeBatch(bytes.NewReader(body))
		if err != nil {
			if !isClientError(err) {
				t.Fatalf("decode: unexpected error type %T: %v", err, err)
			}
			return
		}
		for i := range events {
			if verr := events[i].Validate(); verr != nil {
				t.Fatalf("decoded event %d does not validate: %v", i, verr)
			}
		}
		before := dump(t, r)
		if _, err := r.Apply(events); err != nil {
			if !isClientError(err) {
				t.Fatalf("apply: unexpected error type %T: %v", err, err)
			}
			if after := dump(t, r); after != before {
				t.Fatalf("a rejected batch changed the index")
			}
		}
	})
}

// FuzzSnapshot feeds arbitrary NDJSON to the snapshot loader: no panic; a
// rejected snapshot leaves the index as it was; an accepted one exports to
// a snapshot that loads back to the same index.
func FuzzSnapshot(f *testing.F) {
	for _, s := range []string{
		"{\"seq\": 3}\n{\"user\": {\"id\": \"u\", \"role\": \"admin\", \"location_ids\": [\"l\"]}}\n",
		"{\"seq\": 1}\n{\"record\": {\"type\": \"opportunity\", \"id\": \"o\", \"location_id\": \"l\", \"owner\": \"u\", \"followers\": [\"a\", \"u\"], \"contact_id\": \"c\"}}\n",
		"{\"seq\": 0}\n\n\n",
		"{\"seq\": 1}\n{\"user\": {}}\n",
		"{\"seq\": 1}\n{\"user\": {\"id\": \"u\", \"role\": \"user\", \"location_ids\": []}, \"record\": {}}\n",
		"{\"seq\": -1}\n",
		"{\"seq\": 1, \"seq\": 2}\n",
		"{\"seq\": 1}\n{\"user\": {\"id\": \"u\", \"ID\": \"v\", \"role\": \"user\", \"location_ids\": []}}\n",
		"not json\n",
	} {
		f.Add([]byte(s))
	}
	r, _ := newReplicator(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		before := dump(t, r)
		_, err := r.LoadSnapshot(bytes.NewReader(body))
		if err != nil {
			var le *SnapshotLineError
			if !errors.As(err, &le) || le.Line < 1 {
				t.Fatalf("unexpected error %T: %v", err, err)
			}
			if after := dump(t, r); after != before {
				t.Fatalf("a rejected snapshot changed the index")
			}
			return
		}
		exported := dump(t, r)
		if _, err := r.LoadSnapshot(bytes.NewReader([]byte(exported))); err != nil {
			t.Fatalf("the export does not load back: %v\n%s", err, exported)
		}
		if again := dump(t, r); again != exported {
			t.Fatalf("export → load → export differs:\n%s\n%s", exported, again)
		}
	})
}

// isClientError tells the errors a client's bad input causes.
func isClientError(err error) bool {
	var (
		mal *MalformedError
		fe  *strictjson.Error
		gap *GapError
		inv *InvalidEventError
	)
	return errors.As(err, &mal) || errors.As(err, &fe) || errors.As(err, &gap) || errors.As(err, &inv) ||
		errors.Is(err, ErrTooManyEvents)
}
