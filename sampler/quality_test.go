package sampler

import (
	"testing"

	"github.com/shardstream/shardstream/shuffle"
)

// TestShuffleQuality measures (and logs; run with -v) how well a plan
// shuffles, next to storage order and a uniform permutation of all
// samples, on 1000 shards × 100 samples, 8 ranks × 32. The figures are in
// docs/planner.md. Quality is measured, not asserted: the checks below
// only catch a plan that does not shuffle at all.
//
//	go test ./sampler -run ShuffleQuality -v
func TestShuffleQuality(t *testing.T) {
	const shards, per, world, batch = 1000, 100, 8, 32
	counts := make([]int64, shards)
	for i := range counts {
		counts[i] = per
	}
	shardOf := func(pos int64) int64 { return pos / per }
	n := shards * per

	storage := make([]int64, n)
	for i := range storage {
		storage[i] = int64(i)
	}
	perm := shuffle.Perm(make([]uint32, n), shuffle.NewSource(1, 1))
	uniform := make([]int64, n)
	for i, v := range perm {
		uniform[i] = int64(v)
	}
	t.Logf("%-28s %v", "storage order", shuffle.Measure(storage, shardOf, batch))
	t.Logf("%-28s %v", "uniform permutation", shuffle.Measure(uniform, shardOf, batch))

	for _, w := range []int{1, DefaultWindow, 16} {
		job := Job{Seed: 1, Epoch: 0, Window: w, Policy: DropLast}
		p := mustNew(t, counts, job, nil, world, batch)
		// Delivery order: step by step, rank by rank within a step — the
		// order the whole job sees samples.
		var order []int64
		for s := range p.Steps() {
			for r := range world {
				for _, id := range p.Batch(r, s, nil) {
					order = append(order, id.Shard*per+id.Index)
				}
			}
		}
		q := shuffle.Measure(order, shardOf, batch)
		t.Logf("plan, window %-2d              %v", w, q)
		if q.Spearman > 0.5 || q.Displacement < 0.1 {
			t.Errorf("window %d: %v: the plan is close to storage order", w, q)
		}
		if w > 1 && q.ShardsPerBatch < 2 {
			t.Errorf("window %d: %v: batches do not mix shards", w, q)
		}
	}
}
