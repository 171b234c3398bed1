package server

// Source is a replication source that feeds the index by itself, such as the
// NATS JetStream consumer of internal/natssource. /health/ready and
// /v1/status report it; the replication API stays open beside it (its seq
// checks keep both consistent), for snapshots above all.
type Source interface {
	// NotReady says why the source keeps the sidecar from being ready
	// (stopped at an invalid event, waiting for a snapshot, not caught up
	// yet), or "" when it does not.
	NotReady() string
	// Report is shown as "replication_source" in /v1/status; it must encode
	// to JSON.
	Report() any
}
