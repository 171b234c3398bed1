package tracing

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Span names (docs/operations.md, "Tracing"). A decision span is named
// after its endpoint, the label of crmauthz_decisions_total.
const (
	SpanDecision     = "crmauthz.decision"       // POST /v1/decision
	SpanDecisions    = "crmauthz.decisions"      // POST /v1/decisions
	SpanData         = "crmauthz.data"           // POST /v1/data/{path}
	SpanForwardAuth  = "crmauthz.forward_auth"   // /v1/forward-auth
	SpanExtAuthzHTTP = "crmauthz.ext_authz_http" // /v1/ext-authz/…
	SpanExtAuthzGRPC = "crmauthz.ext_authz_grpc" // envoy.service.auth.v3.Authorization/Check
	SpanReplication  = "crmauthz.replication.batch"
	SpanSnapshotLoad = "crmauthz.snapshot.load"
	SpanSinkWrite    = "crmauthz.sink.write" // a connector's batch to the HTTP sink
	// SpanSnapshotPublish is a snapshot object stored in the NATS bucket
	// (internal/natspub.PutSnapshot); SpanPublish is crmauthz publish.
	SpanSnapshotPublish = "crmauthz.snapshot.publish"
	SpanPublish         = "crmauthz.publish"
	attrPrefix          = "crmauthz."
	attrAllow           = attrPrefix + "decision.allow"
	attrReason          = attrPrefix + "decision.reason"
	attrAction          = attrPrefix + "decision.action"
	attrResourceType    = attrPrefix + "resource.type"
	attrRevision        = attrPrefix + "policy.revision"
	attrAppliedSeq      = attrPrefix + "applied_seq"
	attrDecisionID      = attrPrefix + "decision_id"
	attrStatus          = attrPrefix + "gateway.status"
	attrDataPath        = attrPrefix + "data.path"
	attrChecks          = attrPrefix + "decisions.checks"
	attrSource          = attrPrefix + "replication.source"
	attrEvents          = attrPrefix + "replication.events"
	attrApplied         = attrPrefix + "replication.applied"
	attrSkipped         = attrPrefix + "replication.skipped"
	attrSnapshotUsers   = attrPrefix + "snapshot.users"
	attrSnapshotRecord  = attrPrefix + "snapshot.records"
	attrSnapshotBytes   = attrPrefix + "snapshot.bytes"
)

// Decision is what a decision span tells: never the subject, a resource id,
// a body or a header's value.
type Decision struct {
	ID           string // decision_id, as in the reply and the decision log
	Allow        bool
	Reason       string
	Action       string // "" when unknown (a gateway request denied before the route was mapped)
	ResourceType string
	Revision     string
	AppliedSeq   uint64
	Status       int    // a gateway's HTTP status (200, 401, 403, 413); 0 elsewhere
	DataPath     string // the Data API's path
	// Error is the error code of a decision that could not be made
	// (evaluation_error, …): the span's status is Error with it.
	Error string
}

// EndDecision sets d on sp and ends it.
func EndDecision(sp trace.Span, d Decision) {
	if !sp.IsRecording() { // not sampled: nothing to build
		sp.End()
		return
	}
	attrs := make([]attribute.KeyValue, 0, 10)
	attrs = append(attrs,
		attribute.String(attrDecisionID, d.ID),
		attribute.Bool(attrAllow, d.Allow),
		attribute.String(attrReason, d.Reason),
		attribute.String(attrRevision, d.Revision),
		attribute.Int64(attrAppliedSeq, int64(d.AppliedSeq)))
	if d.Action != "" {
		attrs = append(attrs, attribute.String(attrAction, d.Action))
	}
	if d.ResourceType != "" {
		attrs = append(attrs, attribute.String(attrResourceType, d.ResourceType))
	}
	if d.Status != 0 {
		attrs = append(attrs, attribute.Int(attrStatus, d.Status))
	}
	if d.DataPath != "" {
		attrs = append(attrs, attribute.String(attrDataPath, d.DataPath))
	}
	sp.SetAttributes(attrs...)
	endWith(sp, d.Error)
}

// Check is one check of a POST /v1/decisions.
type Check struct {
	Allow        bool
	Reason       string
	Action       string
	ResourceType string
}

// EndDecisions sets a batch's outcome on sp and ends it: the checks'
// fields as arrays in the checks' order, beside the batch's decision id,
// revision and applied_seq.
func EndDecisions(sp trace.Span, d Decision, checks []Check) {
	if !sp.IsRecording() {
		sp.End()
		return
	}
	allow := make([]bool, len(checks))
	reason := make([]string, len(checks))
	action := make([]string, len(checks))
	typ := make([]string, len(checks))
	for i, c := range checks {
		allow[i], reason[i], action[i], typ[i] = c.Allow, c.Reason, c.Action, c.ResourceType
	}
	sp.SetAttributes(
		attribute.String(attrDecisionID, d.ID),
		attribute.Int(attrChecks, len(checks)),
		attribute.BoolSlice(attrAllow, allow),
		attribute.StringSlice(attrReason, reason),
		attribute.StringSlice(attrAction, action),
		attribute.StringSlice(attrResourceType, typ),
		attribute.String(attrRevision, d.Revision),
		attribute.Int64(attrAppliedSeq, int64(d.AppliedSeq)))
	endWith(sp, d.Error)
}

// Batch is the outcome of a replication batch or a snapshot load.
type Batch struct {
	Source     string // "http", "nats", or "file" (serve --load-snapshot)
	Events     int    // events in the batch (0 for a snapshot)
	Applied    int
	Skipped    int
	Users      int // of a snapshot
	Records    int
	AppliedSeq uint64
	Error      string // the error's code or kind; "" when it succeeded
}

// EndBatch sets a replication batch's outcome on sp and ends it.
func EndBatch(sp trace.Span, b Batch) {
	sp.SetAttributes(
		attribute.String(attrSource, b.Source),
		attribute.Int(attrEvents, b.Events),
		attribute.Int(attrApplied, b.Applied),
		attribute.Int(attrSkipped, b.Skipped),
		attribute.Int64(attrAppliedSeq, int64(b.AppliedSeq)))
	endWith(sp, b.Error)
}

// EndSnapshot sets a snapshot load's outcome on sp and ends it.
func EndSnapshot(sp trace.Span, b Batch) {
	sp.SetAttributes(
		attribute.String(attrSource, b.Source),
		attribute.Int(attrSnapshotUsers, b.Users),
		attribute.Int(attrSnapshotRecord, b.Records),
		attribute.Int64(attrAppliedSeq, int64(b.AppliedSeq)))
	endWith(sp, b.Error)
}

func endWith(sp trace.Span, errCode string) {
	if errCode != "" {
		sp.SetStatus(codes.Error, errCode)
	}
	sp.End()
}

// EndSnapshotPublish sets a snapshot object's put on sp and ends it: its seq
// (crmauthz.applied_seq) and size in bytes; an err makes the span an error
// (publish_failed), never with the error's text.
func EndSnapshotPublish(sp trace.Span, seq, size uint64, err error) {
	sp.SetAttributes(
		attribute.String(attrSource, "nats"),
		attribute.Int64(attrAppliedSeq, int64(seq)),
		attribute.Int64(attrSnapshotBytes, int64(size)))
	code := ""
	if err != nil {
		code = "publish_failed"
	}
	endWith(sp, code)
}
