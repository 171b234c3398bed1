// Package sink is where a connector writes (docs/connectors.md): the replication events of
// docs/reference.md, in order, to either a NATS JetStream stream (the fleet reads it) or one
// crmauthz's replication API. Both connectors (internal/connect/highlevel, internal/connect/postgres)
// write through this one interface; a connector is the only writer of its sink.
package sink

import (
	"context"
	"io"

	"github.com/crmauthz/crmauthz/internal/replication"
)

// Sink is one destination of replication events.
type Sink interface {
	// Head is the seq of the last event durable in the sink: the replica's applied_seq (HTTP), or
	// the stream's last sequence (NATS). 0 for an empty sink.
	Head(ctx context.Context) (uint64, error)
	// Write appends events whose seqs continue Head()+1 consecutively, and returns once they are
	// durable. Events that share a Tx are written so that no reader applies part of them alone.
	Write(ctx context.Context, events []replication.Event) error
	// Snapshot replaces the sink's whole state by a snapshot at seq: write produces the NDJSON
	// lines after the header ({"user": …} or {"record": …} per line). Atomic: an interrupted
	// snapshot leaves nothing half-written.
	Snapshot(ctx context.Context, seq uint64, write func(w io.Writer) error) error
	Close() error
}
