package policy

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/crmauthz/crmauthz/internal/policy/guard"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// The bounds of one evaluation (docs/policies.md "What is bounded"). A
// policy is trusted code, but a mistake in it must cost one request a
// denial, not the process its memory or every client its latency.

// DefaultEvalTimeout is Config.EvalTimeout's default.
const DefaultEvalTimeout = time.Second

// ErrEvalTimeout is the error of an evaluation that ran longer than
// Config.EvalTimeout: the request is denied.
var ErrEvalTimeout = errors.New("the policy evaluation took longer than its time limit")

// ErrBuiltinLimit is the error of a built-in call refused because its
// result would be too large (internal/policy/guard): the request is denied.
var ErrBuiltinLimit = guard.ErrBuiltinLimit

// LimitStats counts the evaluations stopped by a bound since New.
type LimitStats struct {
	Timeouts uint64 // over Config.EvalTimeout
	Builtins uint64 // a built-in call over its size limit
}

// limitCounters is shared by every revision of one Engine.
type limitCounters struct {
	timeouts, builtins atomic.Uint64
}

// count classifies an evaluation's error and counts it.
func (c *limitCounters) count(err error) {
	switch {
	case err == nil:
	case errors.Is(err, ErrEvalTimeout):
		c.timeouts.Add(1)
	case errors.Is(err, ErrBuiltinLimit):
		c.builtins.Add(1)
	}
}

// LimitStats returns how many evaluations were stopped by a bound.
func (e *Engine) LimitStats() LimitStats {
	c := e.cur.Load().limits
	return LimitStats{Timeouts: c.timeouts.Load(), Builtins: c.builtins.Load()}
}

// EvalTimeout is Config.EvalTimeout (with its default): a caller that
// evaluates several times for one request (a batch) bounds the request by
// it too, with WithEvalDeadline.
func (e *Engine) EvalTimeout() time.Duration { return e.cfg.EvalTimeout }

// WithEvalDeadline bounds ctx by d for evaluations made with it: past d, an
// evaluation stops with ErrEvalTimeout (and is counted) like one that ran
// past Config.EvalTimeout itself.
func WithEvalDeadline(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeoutCause(ctx, d, fmt.Errorf("%w (%s for the request)", ErrEvalTimeout, d))
}

// stopped returns an evaluation's error, as ErrEvalTimeout (the cause) for
// one stopped by a WithEvalDeadline context, and counts it.
func (p *prepared) stopped(ctx context.Context, err error) error {
	if err != nil && !errors.Is(err, ErrEvalTimeout) && ctx.Err() != nil {
		if cause := context.Cause(ctx); errors.Is(cause, ErrEvalTimeout) {
			err = cause
		}
	}
	p.limits.count(err)
	return err
}

// evalDeadline cancels one topdown evaluation when its time is up.
type evalDeadline struct {
	cancel  topdown.Cancel
	expired atomic.Bool
	timer   *time.Timer
}

func newEvalDeadline(d time.Duration) *evalDeadline {
	dl := &evalDeadline{cancel: topdown.NewCancel()}
	dl.timer = time.AfterFunc(d, dl.fire)
	return dl
}

func (dl *evalDeadline) fire() {
	dl.expired.Store(true)
	dl.cancel.Cancel()
}

func (dl *evalDeadline) stop() { dl.timer.Stop() }
