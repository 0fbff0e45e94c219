package sampler_test

import (
	"fmt"

	"github.com/shardstream/shardstream/sampler"
)

// A job plans an epoch over 4 shards for 2 ranks of 3, stops after one
// step, and resumes with 3 ranks of 2: the new ranks share exactly the
// samples nobody consumed.
func Example() {
	// Shard 0 holds 5 samples in two chunks, shard 1 none, shard 2 seven in
	// three chunks (one empty), shard 3 three in one.
	units := []sampler.Unit{{Shard: 0, First: 0, Samples: 2}, {Shard: 0, First: 2, Samples: 3},
		{Shard: 2, First: 0, Samples: 4}, {Shard: 2, First: 4, Samples: 0}, {Shard: 2, First: 4, Samples: 3},
		{Shard: 3, First: 0, Samples: 3}}
	job := sampler.Job{Fingerprint: "0123456789abcdef", Seed: 1, Epoch: 0, Window: sampler.DefaultWindow, Policy: sampler.DropLast}
	p, err := sampler.New(units, job, nil, 2, 3)
	if err != nil {
		panic(err)
	}
	fmt.Println("steps", p.Steps(), "dropped", p.Dropped())
	fmt.Println("rank 1, step 0:", p.Batch(1, 0, nil))
	// The loader may free each sample's unit after this step of rank 1.
	fmt.Println("last use:", p.LastUse(1, 0, nil))

	tok, err := sampler.ParseToken(p.Token(1).String()) // from a checkpoint
	if err != nil {
		panic(err)
	}
	q, err := sampler.New(units, job, &tok, 3, 2)
	if err != nil {
		panic(err)
	}
	fmt.Println("after resize: steps", q.Steps(), "dropped", q.Dropped())
	// Output:
	// steps 2 dropped 3
	// rank 1, step 0: [{2 5} {2 4} {2 3}]
	// last use: [1 1 1]
	// after resize: steps 1 dropped 3
}
