package shuffle

import (
	"math"
	"slices"
	"testing"
)

func TestPermIsPermutation(t *testing.T) {
	for n := range 200 {
		src := NewSource(uint64(n), Stream(DomainShards, 7))
		p := Perm(make([]uint32, n), src)
		seen := make([]bool, n)
		for i, v := range p {
			if int(v) >= n || seen[v] {
				t.Fatalf("Perm(n=%d)[%d] = %d: out of range or repeated in %v", n, i, v, p)
			}
			seen[v] = true
		}
	}
}

func TestPermDeterministic(t *testing.T) {
	a := Perm(make([]uint32, 1000), NewSource(42, Stream(DomainBlock, 1, 2, 3)))
	b := Perm(make([]uint32, 1000), NewSource(42, Stream(DomainBlock, 1, 2, 3)))
	if !slices.Equal(a, b) {
		t.Fatal("same seed and stream gave different permutations")
	}
	c := Perm(make([]uint32, 1000), NewSource(42, Stream(DomainBlock, 1, 2, 4)))
	if slices.Equal(a, c) {
		t.Fatal("different streams gave the same permutation")
	}
	d := Perm(make([]uint32, 1000), NewSource(43, Stream(DomainBlock, 1, 2, 3)))
	if slices.Equal(a, d) {
		t.Fatal("different seeds gave the same permutation")
	}
}

// TestPermPinned pins the exact output: plans (and so resume tokens stored
// in checkpoints) must not change across Go releases or refactors.
func TestPermPinned(t *testing.T) {
	got := Perm(make([]uint32, 10), NewSource(1, Stream(DomainShards, 0)))
	want := []uint32{3, 8, 2, 4, 0, 1, 7, 5, 9, 6}
	if !slices.Equal(got, want) {
		t.Fatalf("Perm(10, seed 1, epoch 0) = %v, want %v", got, want)
	}
	if s, want := Stream(DomainShards, 0), uint64(0x7f46a57c92dbee5f); s != want {
		t.Fatalf("Stream(DomainShards, 0) = %#x, want %#x", s, want)
	}
}

// TestPermUniform checks that all 24 orders of 4 elements come out about
// equally often (chi-square, 23 degrees of freedom, p ≈ 0.0001 bound).
func TestPermUniform(t *testing.T) {
	const trials = 48000
	counts := map[[4]uint32]int{}
	src := NewSource(9, 9)
	var p [4]uint32
	for range trials {
		Perm(p[:], src)
		counts[p]++
	}
	if len(counts) != 24 {
		t.Fatalf("saw %d distinct orders of 4, want 24", len(counts))
	}
	exp := float64(trials) / 24
	var chi float64
	for _, c := range counts {
		d := float64(c) - exp
		chi += d * d / exp
	}
	if chi > 60 {
		t.Fatalf("chi-square %.1f over 24 orders: not uniform (%v)", chi, counts)
	}
}

func TestUint64NRange(t *testing.T) {
	src := NewSource(1, 2)
	for _, n := range []uint64{1, 2, 3, 7, 1 << 32, math.MaxUint64} {
		for range 1000 {
			if v := Uint64N(src, n); v >= n {
				t.Fatalf("Uint64N(%d) = %d", n, v)
			}
		}
	}
}

func TestMeasureEnds(t *testing.T) {
	const shards, per, batch = 100, 50, 16
	n := shards * per
	shardOf := func(p int64) int64 { return p / per }
	ident := make([]int64, n)
	for i := range ident {
		ident[i] = int64(i)
	}
	q := Measure(ident, shardOf, batch)
	if q.Displacement != 0 || q.Spearman != 1 || q.SameShardPairs < 0.8 || q.ShardsPerBatch > 1.5 {
		t.Errorf("storage order: %v, want displacement 0, spearman 1, ~1 shard per batch", q)
	}
	perm := Perm(make([]uint32, n), NewSource(3, 3))
	rnd := make([]int64, n)
	for i, v := range perm {
		rnd[i] = int64(v)
	}
	q = Measure(rnd, shardOf, batch)
	if math.Abs(q.Displacement-1.0/3) > 0.02 || math.Abs(q.Spearman) > 0.05 || q.SameShardPairs > 0.05 || q.ShardsPerBatch < 14 {
		t.Errorf("uniform permutation: %v, want displacement ≈ 1/3, spearman ≈ 0, many shards per batch", q)
	}
	rev := slices.Clone(ident)
	slices.Reverse(rev)
	if q := Measure(rev, shardOf, batch); math.Abs(q.Spearman+1) > 1e-9 {
		t.Errorf("reversed order: spearman %v, want -1", q.Spearman)
	}
	if q := Measure(nil, shardOf, batch); q.Samples != 0 {
		t.Errorf("empty order: %v", q)
	}
}

// BenchmarkPerm measures a window block's permutation (4 shards × 1000
// samples), built once per block a rank walks through.
func BenchmarkPerm(b *testing.B) {
	dst := make([]uint32, 4000)
	b.ReportAllocs()
	for i := range b.N {
		Perm(dst, NewSource(1, Stream(DomainBlock, 0, 0, uint64(i))))
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/4000, "ns/sample")
}
