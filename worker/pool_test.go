package worker

import (
	"math/rand/v2"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestClassSize(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		n := 1 + rng.IntN(1<<30)
		c := classSize(n)
		if c < n {
			t.Fatalf("classSize(%d) = %d, smaller", n, c)
		}
		if n > minPooled && float64(c) > float64(n)*(1+1.0/8) {
			t.Fatalf("classSize(%d) = %d, more than an eighth larger", n, c)
		}
		if classSize(c) != c {
			t.Fatalf("classSize(%d) = %d, but classSize(%d) = %d", n, c, c, classSize(c))
		}
	}
	// Eight classes to an octave.
	var classes []int
	for n := 8 << 20; n <= 16<<20; n += 4096 {
		if c := classSize(n); len(classes) == 0 || classes[len(classes)-1] != c {
			classes = append(classes, c)
		}
	}
	if len(classes) != 9 || classes[0] != 8<<20 || classes[1] != 9<<20 || classes[8] != 16<<20 {
		t.Fatalf("classes from 8 to 16 MiB: %v", classes)
	}
}

func TestBufPoolReuses(t *testing.T) {
	p := newBufPool(64<<20, nil, nil)
	a, reused := p.get(8<<20 + 1000)
	if reused || len(a) != 8<<20+1000 || cap(a) != 9<<20 {
		t.Fatalf("first get: len %d cap %d reused %v", len(a), cap(a), reused)
	}
	a[0] = 7
	p.put(a)
	if p.idle() != 9<<20 {
		t.Fatalf("idle %d after one put, want %d", p.idle(), 9<<20)
	}
	// Another size in the same class gets the same buffer, unzeroed.
	b, reused := p.get(9 << 20)
	if !reused || &b[0] != &a[0] || b[0] != 7 || len(b) != 9<<20 {
		t.Fatalf("second get: reused %v, same buffer %v, len %d", reused, &b[0] == &a[0], len(b))
	}
	if p.idle() != 0 {
		t.Fatalf("idle %d after taking the only buffer", p.idle())
	}
	// A get may take a buffer up to two classes larger, not more.
	p.put(b)
	c, reused := p.get(8 << 20)
	if !reused || &c[0] != &a[0] || len(c) != 8<<20 {
		t.Fatalf("an 8 MiB get did not reuse the free 9 MiB buffer (reused %v)", reused)
	}
	p.put(c)
	if _, reused := p.get(7 << 20); reused {
		t.Fatal("a 7 MiB get took a 9 MiB buffer, three classes up")
	}
}

func TestBufPoolGauges(t *testing.T) {
	inUse := prometheus.NewGauge(prometheus.GaugeOpts{Name: "in_use"})
	idle := prometheus.NewGauge(prometheus.GaugeOpts{Name: "idle"})
	p := newBufPool(10<<20, inUse, idle)
	a, _ := p.get(8 << 20)
	b, _ := p.get(8 << 20)
	small, _ := p.get(1000)
	if got := testutil.ToFloat64(inUse); got != 16<<20+1000 {
		t.Fatalf("in use %v, want %v", got, 16<<20+1000)
	}
	p.put(a)
	p.put(b) // over the bound: dropped
	p.put(small)
	if got, idleNow := testutil.ToFloat64(inUse), testutil.ToFloat64(idle); got != 0 || idleNow != 8<<20 {
		t.Fatalf("after putting all back: in use %v, idle %v; want 0 and %v", got, idleNow, 8<<20)
	}
}

func TestBufPoolBound(t *testing.T) {
	p := newBufPool(20<<20, nil, nil)
	var bufs [][]byte
	for range 4 {
		b, _ := p.get(8 << 20)
		bufs = append(bufs, b)
	}
	for _, b := range bufs {
		p.put(b)
	}
	if p.idle() != 16<<20 {
		t.Fatalf("idle %d, want two 8 MiB buffers (bound 20 MiB)", p.idle())
	}
	// Foreign buffers (not a class size) and small ones are not kept.
	p.put(make([]byte, 1<<20+1))
	p.put(make([]byte, 1000))
	if p.idle() != 16<<20 {
		t.Fatalf("idle %d after putting foreign buffers", p.idle())
	}
	off := newBufPool(-1, nil, nil)
	b, _ := off.get(8 << 20)
	off.put(b)
	if off.idle() != 0 {
		t.Fatalf("a pool bounded at -1 keeps %d bytes", off.idle())
	}
}

func TestChunkRelease(t *testing.T) {
	p := newBufPool(64<<20, nil, nil)
	buf, _ := p.get(1 << 20)
	c := newChunk(0, []Sample{{Key: "a"}}, buf, p)
	c.retain()
	c.Release()
	if p.idle() != 0 || c.Samples == nil {
		t.Fatal("buffer returned while a reference is held")
	}
	c.Release()
	if p.idle() != 1<<20 || c.Samples != nil {
		t.Fatalf("after the last Release: idle %d, samples %v", p.idle(), c.Samples)
	}
	if c.tryRetain() {
		t.Fatal("tryRetain succeeded on a released chunk")
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a third Release did not panic")
		}
	}()
	c.Release()
}

func TestLiteralChunkRelease(t *testing.T) {
	c := &Chunk{Samples: []Sample{{Key: "a"}}}
	c.Release()
	c.Release()
	if c.Samples == nil {
		t.Fatal("Release changed a chunk not made by a Reader")
	}
	var nilChunk *Chunk
	nilChunk.Release()
}
