package service

import (
	"container/list"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// planCache is a small LRU of plans keyed by job. Concurrent requests for
// the same plan wait for one computation.
type planCache struct {
	planner planner
	max     int
	misses  func() // metric hook

	mu      sync.Mutex
	entries map[planKey]*list.Element // of *planEntry
	lru     list.List                 // front: most recently used
}

// planEntry is one cached plan, or the error computing it gave; once
// makes concurrent requests for it wait for one computation.
type planEntry struct {
	key  planKey
	once sync.Once
	plan epochPlan
	err  error
}

func newPlanCache(p planner, max int, misses func()) *planCache {
	return &planCache{planner: p, max: max, misses: misses, entries: make(map[planKey]*list.Element)}
}

// get returns j's plan, computing it at most once while it stays cached.
// Errors are gRPC statuses.
func (c *planCache) get(j *job) (epochPlan, error) {
	c.mu.Lock()
	el, ok := c.entries[j.key]
	if ok {
		c.lru.MoveToFront(el)
	} else {
		el = c.lru.PushFront(&planEntry{key: j.key})
		c.entries[j.key] = el
		for c.lru.Len() > c.max {
			old := c.lru.Back()
			c.lru.Remove(old)
			delete(c.entries, old.Value.(*planEntry).key)
		}
	}
	e := el.Value.(*planEntry)
	c.mu.Unlock()

	e.once.Do(func() {
		c.misses()
		e.plan, e.err = c.planner.newPlan(j.ds.units, j.sjob, j.resume, j.key.worldSize, j.key.batchSize)
		if e.err != nil {
			e.err = planStatus(e.err)
		}
	})
	if e.err != nil {
		return nil, e.err
	}
	if e.plan == nil { // newPlan panicked inside once.Do on an earlier call
		return nil, status.Errorf(codes.Internal, "plan %v: planner failed", j.key)
	}
	return e.plan, nil
}
