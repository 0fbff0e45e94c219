package sampler

import (
	"github.com/shardstream/shardstream/shuffle"
)

// refPlan is the naive planner the fast one must agree with: it
// materialises every sequence as a slice and follows the algorithm as
// docs/planner.md states it, sharing only the random primitives.
type refPlan struct {
	steps   int64
	batch   int
	streams [][]SampleID // per rank, the remaining stream from the resume point
	dropped int64
	padded  int64
}

func (r *refPlan) batchOf(rank int, step int64) []SampleID {
	b := int64(r.batch)
	return r.streams[rank][step*b : (step+1)*b]
}

// refSplit splits v among world ranks of batch. win, when not nil, gives
// every position's window index in v (first segment): each rank's range is
// then permuted block by block.
func refSplit(v []SampleID, win []int, job Job, world, batch int) (streams [][]SampleID, real []int, tail []SampleID, steps int64) {
	n := len(v)
	rb := world * batch
	steps = int64(n / rb)
	if job.Policy == Pad && n%rb != 0 {
		steps++
	}
	slots := int(steps) * batch
	for r := range world {
		lo, hi := r*slots, (r+1)*slots // DropLast: full ranges, then the tail
		if job.Policy == Pad {         // Pad: n split evenly
			lo = r*(n/world) + min(r, n%world)
			hi = lo + n/world
			if r < n%world {
				hi++
			}
		}
		s := make([]SampleID, 0, slots)
		if win == nil {
			s = append(s, v[lo:hi]...)
		} else {
			for blo := lo; blo < hi; {
				bhi := blo
				for bhi < hi && win[bhi] == win[blo] {
					bhi++
				}
				perm := shuffle.Perm(make([]uint32, bhi-blo),
					shuffle.NewSource(job.Seed, shuffle.Stream(shuffle.DomainBlock, job.Epoch, uint64(r), uint64(win[blo]))))
				for _, q := range perm {
					s = append(s, v[blo+int(q)])
				}
				blo = bhi
			}
		}
		c := len(s)
		for p := c; p < slots; p++ {
			if c == 0 {
				s = append(s, v[(r*slots+p)%n])
			} else {
				s = append(s, s[(p-c)%c])
			}
		}
		streams = append(streams, s)
		real = append(real, c)
	}
	if job.Policy == DropLast {
		tail = v[world*slots:]
	}
	return streams, real, tail, steps
}

func newRef(counts []int64, job Job, history []Segment, world, batch int) *refPlan {
	order := shuffle.Perm(make([]uint32, len(counts)), shuffle.NewSource(job.Seed, shuffle.Stream(shuffle.DomainShards, job.Epoch)))
	var v []SampleID
	var win []int
	for j, s := range order {
		for i := range counts[s] {
			v = append(v, SampleID{Shard: int64(s), Index: i})
			win = append(win, j/job.Window)
		}
	}
	segs := append(append([]Segment(nil), history...), Segment{WorldSize: world, BatchSize: batch})
	var start int64
	if len(history) > 0 {
		if last := history[len(history)-1]; last.WorldSize == world && last.BatchSize == batch {
			segs = history
			start = last.Steps
		}
	}
	for i, seg := range segs {
		streams, real, tail, steps := refSplit(v, win, job, seg.WorldSize, seg.BatchSize)
		win = nil
		if i == len(segs)-1 {
			rp := &refPlan{steps: steps - start, batch: batch, dropped: int64(len(tail))}
			for r, s := range streams {
				from := int(start) * batch
				rp.streams = append(rp.streams, s[from:])
				rp.padded += int64(len(s) - max(real[r], from))
			}
			return rp
		}
		var next []SampleID
		for r, s := range streams {
			next = append(next, s[min(int(seg.Steps)*seg.BatchSize, real[r]):real[r]]...)
		}
		v = append(next, tail...)
	}
	panic("unreachable")
}
