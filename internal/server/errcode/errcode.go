// Package errcode holds the error codes of docs/reference.md §2.6, the
// "code" of every error body, in one block. internal/server's error table
// (errors.go, toAPIError) maps errors to them and their statuses; the gateways
// (internal/server/gateway) use them as the reasons of their denies.
package errcode

// The error codes.
const (
	CompileError         = "compile_error"
	Denied               = "denied"
	EvaluationError      = "evaluation_error"
	EvaluationTimeout    = "evaluation_timeout"
	FilterNotDefined     = "filter_not_defined"
	FilterUntranslatable = "filter_untranslatable"
	IndexBehind          = "index_behind"
	IndexClosed          = "index_closed"
	IndexReadOnly        = "index_read_only"
	IndexUnwritable      = "index_unwritable"
	InsufficientStorage  = "insufficient_storage"
	InternalError        = "internal_error"
	InvalidEvent         = "invalid_event"
	InvalidRequest       = "invalid_request"
	InvalidSnapshot      = "invalid_snapshot"
	MalformedJSON        = "malformed_json"
	MethodNotAllowed     = "method_not_allowed"
	NotFound             = "not_found"
	NotReady             = "not_ready"
	Overloaded           = "overloaded"
	PathNotAllowed       = "path_not_allowed"
	PayloadTooLarge      = "payload_too_large"
	RequestTimeout       = "request_timeout"
	SequenceGap          = "sequence_gap"
	SnapshotInProgress   = "snapshot_in_progress"
	Timeout              = "timeout"
	Truncated            = "truncated"
	Unauthenticated      = "unauthenticated"
	Unauthorized         = "unauthorized"
	UnknownSubject       = "unknown_subject"
)
