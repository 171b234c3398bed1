package natssource

import (
	"bytes"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/strictjson"
)

// MaxTxEvents bounds the events of one source transaction applied together
// (completeTx); a longer transaction is applied in parts.
const MaxTxEvents = 100_000

// completeTx never lets a batch end inside a source transaction (events
// sharing a "tx", docs/connectors.md): while the last message belongs to a
// tx and the stream holds more after it, it reads on, adding the messages of
// that tx; the first message of another tx comes back as carry, the start of
// the next batch. A tx at the stream's very end is complete: a connector
// publishes a tx as one atomic batch (internal/connect/sink).
func (s *Source) completeTx(it jetstream.MessagesContext, batch []jetstream.Msg) ([]jetstream.Msg, jetstream.Msg, error) {
	for len(batch) < MaxTxEvents {
		last := batch[len(batch)-1]
		tx := txOf(last.Data())
		if tx == "" {
			return batch, nil, nil
		}
		md, err := last.Metadata()
		if err != nil || md.NumPending == 0 {
			return batch, nil, nil
		}
		msg, err := it.Next(jetstream.NextMaxWait(5 * time.Second))
		if err != nil {
			if errors.Is(err, nats.ErrTimeout) {
				return batch, nil, nil
			}
			return batch, nil, err
		}
		if txOf(msg.Data()) != tx {
			return batch, msg, nil
		}
		batch = append(batch, msg)
	}
	return batch, nil, nil
}

// txOf reads an event's "tx" ("" when absent or unreadable) without
// decoding the rest, spelt exactly, as DecodeEvent reads it.
func txOf(data []byte) string {
	if !bytes.Contains(data, []byte(`"tx"`)) && !bytes.Contains(data, []byte(`\u`)) {
		return ""
	}
	tx, _ := strictjson.StringMember(data, "tx")
	return tx
}

// txStart returns the position of the first event of the run of events
// sharing events[i]'s tx that ends at i (i itself when it has none).
func txStart(events []replication.Event, i int) int {
	tx := events[i].Tx
	if tx == "" {
		return i
	}
	for i > 0 && events[i-1].Tx == tx {
		i--
	}
	return i
}
