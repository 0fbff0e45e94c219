package worker

import (
	"container/list"
	"context"
	"sync"
)

// chunkKey names one chunk of one shard.
type chunkKey struct{ shard, chunk int }

// chunkCache is an LRU of decoded chunks bounded by their decoded size,
// with single flight: concurrent callers of one chunk share one load.
// Errors are not cached.
type chunkCache struct {
	max int64 // <= 0: nothing is kept after its load completes

	mu      sync.Mutex
	size    int64
	entries map[chunkKey]*cacheEntry // loading and cached
	lru     list.List                // of *cacheEntry, cached only, most recent first
}

type cacheEntry struct {
	key   chunkKey
	done  chan struct{} // closed when chunk/err are set
	chunk *Chunk
	err   error
	size  int64
	el    *list.Element // nil unless cached
}

func newChunkCache(max int64) *chunkCache {
	return &chunkCache{max: max, entries: make(map[chunkKey]*cacheEntry)}
}

// get returns the chunk for key, from the cache, from a load already in
// flight, or by calling load, with a reference for the caller to Release.
// The cache holds a reference of its own to each chunk it keeps, released
// when the chunk is evicted. hit reports a cache hit. A caller that
// waited on a load whose own caller gave up loads again itself.
func (c *chunkCache) get(ctx context.Context, key chunkKey, load func(context.Context) (*Chunk, int64, error)) (ch *Chunk, hit bool, err error) {
	for {
		c.mu.Lock()
		e, ok := c.entries[key]
		if ok {
			if e.el != nil { // cached: the cache's reference keeps it alive
				c.lru.MoveToFront(e.el)
				e.chunk.retain()
				c.mu.Unlock()
				return e.chunk, true, nil
			}
			c.mu.Unlock()
			select {
			case <-e.done:
			case <-ctx.Done():
				return nil, false, ctx.Err()
			}
			if e.err == nil {
				if e.chunk.tryRetain() {
					return e.chunk, true, nil
				}
				continue // released by all before this caller woke: load it again
			}
			if KindOf(e.err) == Canceled && ctx.Err() == nil {
				continue // its caller left; this one still wants the chunk
			}
			return nil, false, e.err
		}
		e = &cacheEntry{key: key, done: make(chan struct{})}
		c.entries[key] = e
		c.mu.Unlock()

		ch, size, err := load(ctx)

		c.mu.Lock()
		e.chunk, e.size, e.err = ch, size, err
		if err != nil || size > c.max {
			delete(c.entries, key)
		} else {
			ch.retain() // the cache's reference
			e.el = c.lru.PushFront(e)
			c.size += size
			c.evictLocked()
		}
		close(e.done)
		c.mu.Unlock()
		return ch, false, err
	}
}

func (c *chunkCache) evictLocked() {
	for c.size > c.max {
		el := c.lru.Back()
		if el == nil {
			return
		}
		e := el.Value.(*cacheEntry)
		c.lru.Remove(el)
		e.el = nil
		delete(c.entries, e.key)
		c.size -= e.size
		e.chunk.Release()
	}
}

// clear drops every cached chunk; loads in flight complete normally.
func (c *chunkCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for el := c.lru.Front(); el != nil; el = el.Next() {
		e := el.Value.(*cacheEntry)
		e.el = nil
		delete(c.entries, e.key)
		e.chunk.Release()
	}
	c.lru.Init()
	c.size = 0
}
