package metrics

import (
	"sync"
	"sync/atomic"
)

// maxCachedChildren bounds a children cache. Past it, lookups go to the vector
// (WithLabelValues) each time: a label whose values are unbounded costs its
// own series anyway, and the cache never grows without limit.
const maxCachedChildren = 4096

// children caches the child metric (Counter, Observer) of each label tuple of
// a vector, so that the request path pays one map read instead of
// WithLabelValues (a variadic slice, a hash of the label values and a locked
// map lookup). Reads take no lock: the map is replaced whole, copy on write,
// and new label tuples are rare after the first requests.
type children[K comparable, V any] struct {
	m  atomic.Pointer[map[K]V]
	mu sync.Mutex // serialises writers
}

// get returns the child of k, creating it with create on first use.
func (c *children[K, V]) get(k K, create func() V) V {
	if m := c.m.Load(); m != nil {
		if v, ok := (*m)[k]; ok {
			return v
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	var n int
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
		n = len(*old)
	}
	v := create()
	if n >= maxCachedChildren {
		return v
	}
	m := make(map[K]V, n+1)
	if old != nil {
		for ok, ov := range *old {
			m[ok] = ov
		}
	}
	m[k] = v
	c.m.Store(&m)
	return v
}
