package highlevel

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// limiter keeps each resource (a location, or the company) within HighLevel's limits
// (docs/highlevel.md, "Request budget"): at most max requests in any window (a log of the send
// times of the last max requests: a request waits until the oldest of them is a window old, plus
// a margin for the time a request takes to arrive), at most daily requests per UTC day, and a
// pause when the API says its remaining burst is 0.
type limiter struct {
	mu     sync.Mutex
	max    int
	window time.Duration
	margin time.Duration
	daily  int
	now    func() time.Time
	res    map[string]*resLimit
}

type resLimit struct {
	sent       []time.Time // send times of the last max requests, oldest first
	day        string      // UTC day of dayCount
	dayCount   int
	pauseUntil time.Time
}

func newLimiter(max int, window time.Duration, daily int, now func() time.Time) *limiter {
	return &limiter{max: max, window: window, margin: window / 40, daily: daily, now: now, res: map[string]*resLimit{}}
}

func (l *limiter) get(res string) *resLimit {
	r := l.res[res]
	if r == nil {
		r = &resLimit{}
		l.res[res] = r
	}
	return r
}

// wait blocks until one more request to res is allowed, and counts it as sent.
func (l *limiter) wait(ctx context.Context, res string) error {
	for {
		l.mu.Lock()
		r := l.get(res)
		now := l.now()
		day := now.UTC().Format(time.DateOnly)
		if r.day != day {
			r.day, r.dayCount = day, 0
		}
		var until time.Time
		switch {
		case now.Before(r.pauseUntil):
			until = r.pauseUntil
		case l.daily > 0 && r.dayCount >= l.daily:
			y, m, d := now.UTC().Date()
			until = time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
		case len(r.sent) >= l.max && now.Sub(r.sent[0]) < l.window+l.margin:
			until = r.sent[0].Add(l.window + l.margin)
		default:
			if len(r.sent) >= l.max {
				r.sent = r.sent[1:]
			}
			r.sent = append(r.sent, now)
			r.dayCount++
			l.mu.Unlock()
			return nil
		}
		l.mu.Unlock()
		t := time.NewTimer(until.Sub(now))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for the request budget of %s: %w", res, ctx.Err())
		case <-t.C:
		}
	}
}

// pause makes res wait d before its next request (X-RateLimit-Remaining: 0, or a 429).
func (l *limiter) pause(res string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.get(res)
	if until := l.now().Add(d); until.After(r.pauseUntil) {
		r.pauseUntil = until
	}
}

// exhaustDay stops requests to res until the next UTC day (X-RateLimit-Daily-Remaining: 0).
func (l *limiter) exhaustDay(res string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	r := l.get(res)
	if l.daily > 0 {
		r.day, r.dayCount = l.now().UTC().Format(time.DateOnly), l.daily
	} else {
		y, m, d := l.now().UTC().Date()
		r.pauseUntil = time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
	}
}
