package sampler_test

import (
	"fmt"

	"github.com/shardstream/shardstream/sampler"
)

// A job plans an epoch over 4 shards for 2 ranks of 3, stops after one
// step, and resumes with 3 ranks of 2: the new ranks share exactly the
// samples nobody consumed.
func Example() {
	counts := []int64{5, 0, 7, 3} // samples per shard, manifest order
	job := sampler.Job{Fingerprint: "0123456789abcdef", Seed: 1, Epoch: 0, Window: sampler.DefaultWindow, Policy: sampler.DropLast}
	p, err := sampler.New(counts, job, nil, 2, 3)
	if err != nil {
		panic(err)
	}
	fmt.Println("steps", p.Steps(), "dropped", p.Dropped())
	fmt.Println("rank 1, step 0:", p.Batch(1, 0, nil))

	tok, err := sampler.ParseToken(p.Token(1).String()) // from a checkpoint
	if err != nil {
		panic(err)
	}
	q, err := sampler.New(counts, job, &tok, 3, 2)
	if err != nil {
		panic(err)
	}
	fmt.Println("after resize: steps", q.Steps(), "dropped", q.Dropped())
	// Output:
	// steps 2 dropped 3
	// rank 1, step 0: [{2 5} {2 4} {2 3}]
	// after resize: steps 1 dropped 3
}
