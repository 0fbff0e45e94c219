package worker

import "sync/atomic"

// Chunk is one decoded chunk of a shard: the samples that start in it.
// Chunks are shared between callers (and the cache): read-only.
//
// A Chunk from Reader.Chunk holds a reference to a pooled buffer that its
// samples' bytes live in. Release gives the reference back, so the buffer
// can be reused once the cache and every other caller are done with it.
// Releasing is optional (an unreleased chunk is garbage collected like any
// value) but using a chunk's samples after releasing it is a bug: their
// bytes may already belong to another chunk.
type Chunk struct {
	FirstSample int64
	Samples     []Sample

	counted bool         // made by a Reader: refs counts its holders
	refs    atomic.Int64 // holders: callers and the cache
	buf     []byte       // the samples' bytes, back to pool at the last Release
	pool    *bufPool
}

// newChunk makes a chunk with one reference, its caller's.
func newChunk(first int64, samples []Sample, buf []byte, pool *bufPool) *Chunk {
	c := &Chunk{FirstSample: first, Samples: samples, counted: true, buf: buf, pool: pool}
	c.refs.Store(1)
	return c
}

// Release says the caller is done with the chunk. Call it at most once
// per Chunk result; a Chunk not made by a Reader ignores it.
func (c *Chunk) Release() {
	if c == nil || !c.counted {
		return
	}
	switch n := c.refs.Add(-1); {
	case n > 0:
		return
	case n < 0:
		panic("worker: Chunk released more than once")
	}
	buf := c.buf
	c.buf, c.Samples = nil, nil // a use after the last Release fails loudly instead of reading reused bytes
	if c.pool != nil && buf != nil {
		c.pool.put(buf)
	}
}

// retain adds a reference; the caller must already hold one (or the
// cache's lock, with the cache holding one).
func (c *Chunk) retain() { c.refs.Add(1) }

// tryRetain adds a reference unless the last one is gone, when the chunk's
// buffer may already be reused.
func (c *Chunk) tryRetain() bool {
	for {
		n := c.refs.Load()
		if n <= 0 {
			return false
		}
		if c.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}
