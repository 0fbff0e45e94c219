package service

import (
	"container/list"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// planCache is an LRU of plans keyed by job, bounded by entries and by
// the plans' estimated bytes (Limits.PlanCacheBytes). Concurrent requests
// for the same plan wait for one computation; computations of different
// plans take one of Limits.MaxConcurrentPlans slots or are refused.
type planCache struct {
	planner  planner
	max      int
	maxBytes int64
	slots    planSlots
	misses   func() // metric hook

	mu      sync.Mutex
	entries map[planKey]*list.Element // of *planEntry
	lru     list.List                 // front: most recently used
	bytes   int64                     // estimated bytes of the entries
}

// planEntry is one cached plan, or the error computing it gave; once
// makes concurrent requests for it wait for one computation.
type planEntry struct {
	key   planKey
	bytes int64 // planBytes
	once  sync.Once
	plan  epochPlan
	err   error
}

func newPlanCache(p planner, max int, maxBytes int64, slots planSlots, misses func()) *planCache {
	return &planCache{planner: p, max: max, maxBytes: maxBytes, slots: slots, misses: misses, entries: make(map[planKey]*list.Element)}
}

// get returns j's plan, computing it at most once while it stays cached.
// Errors are gRPC statuses.
func (c *planCache) get(j *job) (epochPlan, error) {
	c.mu.Lock()
	el, ok := c.entries[j.key]
	if ok {
		c.lru.MoveToFront(el)
	} else {
		b := planBytes(j)
		el = c.lru.PushFront(&planEntry{key: j.key, bytes: b})
		c.entries[j.key] = el
		c.bytes += b
		for c.lru.Len() > c.max || (c.bytes > c.maxBytes && c.lru.Len() > 1) {
			c.remove(c.lru.Back())
		}
	}
	e := el.Value.(*planEntry)
	c.mu.Unlock()

	busy := false
	e.once.Do(func() {
		if !c.slots.try() {
			busy, e.err = true, errPlansBusy(cap(c.slots))
			return
		}
		defer c.slots.done()
		c.misses()
		e.plan, e.err = c.planner.newPlan(j.ds.units, j.sjob, j.resume, j.key.worldSize, j.key.batchSize)
		if e.err != nil {
			e.err = planStatus(e.err)
		}
	})
	if busy { // not a property of the plan: forget the entry, a retry computes it
		c.mu.Lock()
		if el, ok := c.entries[j.key]; ok && el.Value.(*planEntry) == e {
			c.remove(el)
		}
		c.mu.Unlock()
	}
	if e.err != nil {
		return nil, e.err
	}
	if e.plan == nil { // newPlan panicked inside once.Do on an earlier call
		return nil, status.Errorf(codes.Internal, "plan %v: planner failed", j.key)
	}
	return e.plan, nil
}

// remove drops an entry; c.mu must be held.
func (c *planCache) remove(el *list.Element) {
	e := c.lru.Remove(el).(*planEntry)
	delete(c.entries, e.key)
	c.bytes -= e.bytes
}
