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
	streams [][]refItem // per rank, the remaining stream from the resume point
	dropped int64
	padded  int64
}

// refItem is one position of a sequence: the sample, what the reference
// knows of where it came from, and whether it is a Pad repeat.
type refItem struct {
	id   SampleID
	unit int  // index in the units slice
	win  int  // window of the unit in the epoch's permuted unit order
	wrap bool // a Pad repeat of the rank's stream (slots past its real samples)
}

func (r *refPlan) batchOf(rank int, step int64) []SampleID {
	b := int64(r.batch)
	var ids []SampleID
	for _, it := range r.streams[rank][step*b : (step+1)*b] {
		ids = append(ids, it.id)
	}
	return ids
}

// refSplit splits v among world ranks of batch. With shuffled (first
// segment), each rank's range is permuted block by block, a block being
// the range's positions of one window.
func refSplit(v []refItem, shuffled bool, job Job, world, batch int) (streams [][]refItem, real []int, tail []refItem, steps int64) {
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
		s := make([]refItem, 0, slots)
		if !shuffled {
			s = append(s, v[lo:hi]...)
		} else {
			for blo := lo; blo < hi; {
				bhi := blo
				for bhi < hi && v[bhi].win == v[blo].win {
					bhi++
				}
				perm := shuffle.Perm(make([]uint32, bhi-blo),
					shuffle.NewSource(job.Seed, shuffle.Stream(shuffle.DomainBlock, job.Epoch, uint64(r), uint64(v[blo].win))))
				for _, q := range perm {
					s = append(s, v[blo+int(q)])
				}
				blo = bhi
			}
		}
		c := len(s)
		for p := c; p < slots; p++ {
			var it refItem
			if c == 0 {
				it = v[(r*slots+p)%n]
			} else {
				it = s[(p-c)%c]
			}
			it.wrap = true
			s = append(s, it)
		}
		streams = append(streams, s)
		real = append(real, c)
	}
	if job.Policy == DropLast {
		tail = v[world*slots:]
	}
	return streams, real, tail, steps
}

func newRef(units []Unit, job Job, history []Segment, world, batch int) *refPlan {
	order := shuffle.Perm(make([]uint32, len(units)), shuffle.NewSource(job.Seed, shuffle.Stream(shuffle.DomainShards, job.Epoch)))
	var v []refItem
	for j, s := range order {
		u := units[s]
		for i := range u.Samples {
			v = append(v, refItem{id: SampleID{Shard: u.Shard, Index: u.First + i}, unit: int(s), win: j / job.Window})
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
		streams, real, tail, steps := refSplit(v, i == 0, job, seg.WorldSize, seg.BatchSize)
		if i == len(segs)-1 {
			rp := &refPlan{steps: steps - start, batch: batch, dropped: int64(len(tail))}
			for r, s := range streams {
				from := int(start) * batch
				rp.streams = append(rp.streams, s[from:])
				rp.padded += int64(len(s) - max(real[r], from))
			}
			return rp
		}
		var next []refItem
		for r, s := range streams {
			next = append(next, s[min(int(seg.Steps)*seg.BatchSize, real[r]):real[r]]...)
		}
		v = append(next, tail...)
	}
	panic("unreachable")
}

// lastUse is the brute-force answer to Plan.LastUse for rank's remaining
// stream, slot by slot: for a real slot, the last step holding a real
// sample of a unit of the same window; for a Pad repeat, its own step.
func (r *refPlan) lastUse(rank int) []int64 {
	s := r.streams[rank]
	b := int64(r.batch)
	lastOfWin := map[int]int64{}
	for p, it := range s {
		if !it.wrap {
			lastOfWin[it.win] = int64(p) / b
		}
	}
	out := make([]int64, len(s))
	for p, it := range s {
		out[p] = int64(p) / b
		if !it.wrap {
			out[p] = lastOfWin[it.win]
		}
	}
	return out
}
