// Package sampler computes epoch plans: which samples every trainer rank
// gets at every step of an epoch. It is a pure function of the dataset's
// units (runs of consecutive samples of one shard: the manifest's chunks),
// the job (seed, window, last-batch policy), the epoch, the world and
// batch sizes and the resume history: no I/O, no clock, no logging, no
// global random source.
//
// # The plan
//
// The epoch's units are put in a seeded Fisher–Yates order; their samples,
// concatenated in that order, form the base sequence V₀. A segment — a
// stretch of the epoch run with one world size R and batch size B — splits
// its input sequence V (V₀ for the first) into R contiguous ranges of
// L = steps·B slots, so every rank gets the same number of full batches.
// Under DropLast (the default) steps = ⌊n/(R·B)⌋ and the tail past R·L is
// dropped; under Pad steps = ⌈n/(R·B)⌉ and the slots past a rank's real
// samples repeat its own samples. In the first segment every rank's range
// is shuffled in blocks: the part of the range that falls in one window of
// Window consecutive units (of the permuted order) is permuted by a PCG
// stream of (seed, epoch, rank, window).
//
// # Resume and resize
//
// A Token records the job and, per segment, the world size, batch size and
// the steps every rank consumed. Resuming with the token's last world and
// batch size continues that segment exactly. Resuming with another world or
// batch size starts a new segment whose input is, for each old rank in
// order, its not-yet-consumed samples in stream order, then the old
// segment's dropped tail: nothing consumed is repeated, nothing unconsumed
// is lost. Later segments re-divide already shuffled streams and add no
// shuffle of their own.
//
// Memory is O(units) (a uint32 order and an int64 prefix sum per unit; the
// caller's units slice is kept, not copied) plus O(world size) per resized
// segment; a lookup is a few binary searches. The only allocation
// proportional to samples is one window block's permutation, cached per
// rank.
//
// # Errors
//
// Bad arguments wrap ErrInvalid; a token of another dataset or job
// (Token.Check: a *MismatchError naming the field), or with more steps
// than its segment holds, wraps ErrTokenMismatch; a malformed token string
// wraps ErrBadToken; a token of version 1 (made by the planner that
// shuffled whole shards) is ErrOldToken: restart the epoch from its start
// or finish it with the old version.
//
// Example, with one unit per manifest chunk:
//
//	var units []sampler.Unit
//	for i, sh := range m.Shards {
//		for _, c := range sh.Chunks {
//			units = append(units, sampler.Unit{Shard: int64(i), First: c.FirstSample, Samples: c.Samples})
//		}
//	}
//	p, err := sampler.New(units, sampler.Job{Fingerprint: m.Fingerprint(),
//		Seed: 1, Epoch: 0, Window: sampler.DefaultWindow, Policy: sampler.DropLast}, nil, 8, 32)
//	for step := range p.Steps() {
//		batch := p.Batch(rank, step, nil)
//		last := p.LastUse(rank, step, nil) // free batch[i]'s chunk after step last[i]
//		…
//		checkpoint(p.Token(step + 1).String())
//	}
package sampler
