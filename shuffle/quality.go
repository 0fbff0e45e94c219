package shuffle

import (
	"fmt"
	"slices"
)

// Quality describes how far a delivery order is from storage order. Each
// figure has known values at the two ends: storage order (no shuffle) and a
// uniformly random permutation of all samples (the ideal global shuffle).
type Quality struct {
	// Samples is how many delivered samples were measured.
	Samples int
	// Displacement is the mean |delivery rank − storage rank| / Samples:
	// 0 for storage order, about 1/3 for a uniform permutation.
	Displacement float64
	// Spearman is the rank correlation between storage order and delivery
	// order: 1 for storage order, about 0 for a uniform permutation.
	Spearman float64
	// ShardsPerBatch is the mean number of distinct shards in a batch:
	// about 1 for storage order with batches smaller than shards, close to
	// the batch size for a uniform permutation over many shards.
	ShardsPerBatch float64
	// SameShardPairs is the mean, over batches, of the fraction of sample
	// pairs in the batch that come from one shard: 1 for storage order with
	// batches smaller than shards, about 1/shards for a uniform permutation.
	SameShardPairs float64
}

func (q Quality) String() string {
	return fmt.Sprintf("samples=%d displacement=%.4f spearman=%.4f shards/batch=%.2f same-shard-pairs=%.4f",
		q.Samples, q.Displacement, q.Spearman, q.ShardsPerBatch, q.SameShardPairs)
}

// Measure computes the quality of a delivery order. order[i] is the storage
// position (the sample's index in the dataset's storage order: shards in
// manifest order, samples in shard order) of the i-th delivered sample;
// positions must be distinct but need not cover every position (a dropped
// tail is fine). shardOf maps a storage position to its shard. Consecutive
// runs of batch delivered samples form a batch; a short last run is
// ignored for the batch figures.
func Measure(order []int64, shardOf func(pos int64) int64, batch int) Quality {
	n := len(order)
	q := Quality{Samples: n}
	if n == 0 {
		return q
	}
	// Storage rank of each delivered sample among the delivered ones.
	idx := make([]int32, n)
	for i := range idx {
		idx[i] = int32(i)
	}
	slices.SortFunc(idx, func(a, b int32) int {
		switch {
		case order[a] < order[b]:
			return -1
		case order[a] > order[b]:
			return 1
		}
		return 0
	})
	rank := make([]int64, n)
	for r, i := range idx {
		rank[i] = int64(r)
	}
	var disp, d2 float64
	for i, r := range rank {
		d := float64(int64(i) - r)
		if d < 0 {
			disp -= d
		} else {
			disp += d
		}
		d2 += d * d
	}
	fn := float64(n)
	q.Displacement = disp / fn / fn
	if n > 1 {
		q.Spearman = 1 - 6*d2/(fn*(fn*fn-1))
	} else {
		q.Spearman = 1
	}

	if batch < 1 {
		return q
	}
	batches := n / batch
	if batches == 0 {
		return q
	}
	counts := make(map[int64]int, batch)
	var shards, pairs float64
	for b := range batches {
		clear(counts)
		for _, pos := range order[b*batch : (b+1)*batch] {
			counts[shardOf(pos)]++
		}
		shards += float64(len(counts))
		if batch > 1 {
			same := 0
			for _, c := range counts {
				same += c * (c - 1) / 2
			}
			pairs += float64(same) / float64(batch*(batch-1)/2)
		}
	}
	q.ShardsPerBatch = shards / float64(batches)
	if batch > 1 {
		q.SameShardPairs = pairs / float64(batches)
	} else {
		q.SameShardPairs = 0
	}
	return q
}
