package worker

import (
	"math/bits"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// minPooled is the smallest buffer worth keeping: below it allocation is
// cheap and the free list would fill with slivers.
const minPooled = 64 << 10

// bufPool is a free list of chunk buffers bounded in bytes. Buffers come
// in size classes eight to an octave (8, 9, 10, … 15 MiB, then 16, 18, …),
// so a chunk a little larger or smaller than the last one still reuses its
// buffer, wasting at most an eighth. Reusing buffers saves the zeroing a
// fresh allocation of megabytes costs (a fifth of the read path's CPU on
// loopback) and the GC cycles it triggers.
type bufPool struct {
	max int64 // bytes kept idle; <= 0 keeps none
	// inUse and idle gauges: bytes of buffers taken and not put back
	// (fetching, or holding a chunk's samples), and bytes free.
	inUse, idleG prometheus.Gauge

	mu   sync.Mutex
	size int64
	free map[int][][]byte // by capacity (a class size)
}

// newBufPool makes a pool keeping at most max idle bytes; the gauges may
// be nil.
func newBufPool(max int64, inUse, idle prometheus.Gauge) *bufPool {
	if inUse == nil {
		inUse = prometheus.NewGauge(prometheus.GaugeOpts{Name: "unregistered"})
	}
	if idle == nil {
		idle = prometheus.NewGauge(prometheus.GaugeOpts{Name: "unregistered"})
	}
	return &bufPool{max: max, inUse: inUse, idleG: idle, free: make(map[int][][]byte)}
}

// reuseClasses is how many classes above its own a get may take a free
// buffer from (wasting up to a quarter), so that chunks of varying size
// still find buffers.
const reuseClasses = 2

// classSize is the size class of n: n rounded up to an eighth of its
// octave.
func classSize(n int) int {
	if n <= minPooled {
		return n
	}
	step := 1 << (bits.Len(uint(n-1)) - 4)
	return (n + step - 1) &^ (step - 1)
}

// get returns a buffer of length n, not zeroed when reused; reused
// reports whether it came from the free list.
func (p *bufPool) get(n int) (b []byte, reused bool) {
	c := classSize(n)
	defer func() { p.inUse.Add(float64(cap(b))) }()
	if n <= minPooled {
		return make([]byte, n), false
	}
	p.mu.Lock()
	for k, cc := 0, c; k <= reuseClasses; k, cc = k+1, classSize(cc+1) {
		if l := p.free[cc]; len(l) > 0 {
			b := l[len(l)-1]
			l[len(l)-1] = nil
			p.free[cc] = l[:len(l)-1]
			p.size -= int64(cc)
			p.idleG.Sub(float64(cc))
			p.mu.Unlock()
			return b[:n], true
		}
	}
	p.mu.Unlock()
	return make([]byte, n, c), false
}

// put gives back a buffer from get, for reuse; small ones, and any over
// the bound, are left to the GC. The caller must hold no other reference
// to b.
func (p *bufPool) put(b []byte) {
	c := cap(b)
	p.inUse.Sub(float64(c))
	if c <= minPooled || classSize(c) != c {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.size+int64(c) > p.max {
		return
	}
	p.free[c] = append(p.free[c], b[:0])
	p.size += int64(c)
	p.idleG.Add(float64(c))
}

// idle is the bytes held in the free list.
func (p *bufPool) idle() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.size
}
