package sampler

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// dataset is one random test case.
type dataset struct {
	counts []int64 // samples per shard
	units  []Unit  // the shards cut into units
	job    Job
	world  int
	batch  int
}

func (d dataset) String() string {
	return fmt.Sprintf("units=%v job=%+v world=%d batch=%d", d.units, d.job, d.world, d.batch)
}

func (d dataset) total() int64 {
	var n int64
	for _, c := range d.counts {
		n += c
	}
	return n
}

// randomDataset draws shard counts 0..50 of sizes 0..40 (empty shards
// included), cuts each shard into 1..5 units at random points (empty units
// included; sometimes one unit a shard), and draws world 1..8, batch 1..7,
// window 1..6 and either policy.
func randomDataset(rng *rand.Rand) dataset {
	counts := make([]int64, rng.IntN(51))
	for i := range counts {
		switch rng.IntN(5) {
		case 0:
			counts[i] = 0
		default:
			counts[i] = rng.Int64N(41)
		}
	}
	if rng.IntN(10) == 0 && len(counts) > 0 { // one shard
		counts = counts[:1]
	}
	pol := DropLast
	if rng.IntN(2) == 0 {
		pol = Pad
	}
	return dataset{
		counts: counts,
		units:  randomUnits(rng, counts),
		job:    Job{Fingerprint: "0123456789abcdef", Seed: rng.Uint64(), Epoch: rng.Uint64N(5), Window: 1 + rng.IntN(6), Policy: pol},
		world:  1 + rng.IntN(8),
		batch:  1 + rng.IntN(7),
	}
}

// randomUnits cuts every shard into 1..5 runs of consecutive samples (a
// run may be empty), in shard order; one time in five, every shard is one
// unit.
func randomUnits(rng *rand.Rand, counts []int64) []Unit {
	if rng.IntN(5) == 0 {
		return ShardUnits(counts)
	}
	var units []Unit
	for s, c := range counts {
		cuts := []int64{0, c}
		for range rng.IntN(5) {
			cuts = append(cuts, rng.Int64N(c+1))
		}
		slices.Sort(cuts)
		for i := 1; i < len(cuts); i++ {
			units = append(units, Unit{Shard: int64(s), First: cuts[i-1], Samples: cuts[i] - cuts[i-1]})
		}
	}
	return units
}

func mustNew(t testing.TB, units []Unit, job Job, resume *Token, world, batch int) *Plan {
	t.Helper()
	p, err := New(units, job, resume, world, batch)
	if err != nil {
		t.Fatalf("New(%v, %+v, %v, %d, %d): %v", units, job, resume, world, batch, err)
	}
	return p
}

// randomHistory draws a resume history for d: up to 3 segments with random
// world and batch sizes, each consumed a random number of its steps; one
// time in three, d's sizes become the last segment's (the plan continues
// it rather than resizing).
func randomHistory(t *testing.T, rng *rand.Rand, d *dataset) []Segment {
	var hist []Segment
	for range rng.IntN(4) {
		w, b := 1+rng.IntN(8), 1+rng.IntN(7)
		p := mustNew(t, d.units, d.job, &Token{Job: d.job, Segments: hist}, w, b)
		if p.Steps() == 0 && rng.IntN(2) == 0 {
			continue
		}
		hist = p.Token(rng.Int64N(p.Steps() + 1)).Segments
	}
	if len(hist) > 0 && rng.IntN(3) == 0 {
		d.world, d.batch = hist[len(hist)-1].WorldSize, hist[len(hist)-1].BatchSize
	}
	return hist
}

// all returns every rank's remaining batches of p: [rank][step][i].
func all(p *Plan) [][][]SampleID {
	out := make([][][]SampleID, p.WorldSize())
	for r := range out {
		for s := range p.Steps() {
			out[r] = append(out[r], p.Batch(r, s, nil))
		}
	}
	return out
}

// steps returns the batches of steps [from, to) of every rank: [rank][…].
func steps(p *Plan, from, to int64) [][]SampleID {
	out := make([][]SampleID, p.WorldSize())
	for r := range out {
		for s := from; s < to; s++ {
			out[r] = p.Batch(r, s, out[r])
		}
	}
	return out
}

func TestAgreesWithReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for i := range 400 {
		d := randomDataset(rng)
		hist := randomHistory(t, rng, &d)
		p := mustNew(t, d.units, d.job, &Token{Job: d.job, Segments: hist}, d.world, d.batch)
		ref := newRef(d.units, d.job, hist, d.world, d.batch)
		if p.Steps() != ref.steps || p.Dropped() != ref.dropped || p.Padded() != ref.padded {
			t.Fatalf("case %d %v history %v: steps/dropped/padded = %d/%d/%d, reference %d/%d/%d",
				i, d, hist, p.Steps(), p.Dropped(), p.Padded(), ref.steps, ref.dropped, ref.padded)
		}
		for r := range d.world {
			for s := range p.Steps() {
				if diff := cmp.Diff(ref.batchOf(r, s), p.Batch(r, s, nil)); diff != "" {
					t.Fatalf("case %d %v history %v: Batch(%d, %d) differs from the reference (-ref +got):\n%s",
						i, d, hist, r, s, diff)
				}
			}
		}
	}
}

// checkEpoch checks exactly-once and balance for delivered samples of a
// whole epoch: under DropLast every sample at most once and delivered +
// dropped = all; under Pad every sample at least once and the repeats are
// exactly padded.
func checkEpoch(t *testing.T, d dataset, delivered []SampleID, dropped, padded int64) {
	t.Helper()
	seen := map[SampleID]int{}
	for _, id := range delivered {
		if id.Shard < 0 || id.Shard >= int64(len(d.counts)) || id.Index < 0 || id.Index >= d.counts[id.Shard] {
			t.Fatalf("%v: delivered %v, not a sample of the dataset", d, id)
		}
		seen[id]++
	}
	n := d.total()
	switch d.job.Policy {
	case DropLast:
		for id, c := range seen {
			if c > 1 {
				t.Fatalf("%v: sample %v delivered %d times", d, id, c)
			}
		}
		if int64(len(delivered))+dropped != n {
			t.Fatalf("%v: delivered %d + dropped %d != %d samples", d, len(delivered), dropped, n)
		}
		if padded != 0 {
			t.Fatalf("%v: padded %d under drop-last", d, padded)
		}
	case Pad:
		if int64(len(seen)) != n {
			t.Fatalf("%v: %d distinct samples delivered, want all %d", d, len(seen), n)
		}
		if repeats := int64(len(delivered)) - n; repeats != padded {
			t.Fatalf("%v: %d repeats, Padded says %d", d, repeats, padded)
		}
		if dropped != 0 {
			t.Fatalf("%v: dropped %d under pad", d, dropped)
		}
	}
}

func TestExactlyOnceAndBalance(t *testing.T) {
	rng := rand.New(rand.NewPCG(2, 2))
	for range 500 {
		d := randomDataset(rng)
		p := mustNew(t, d.units, d.job, nil, d.world, d.batch)
		if want := int64(d.world) * p.Steps() * int64(d.batch); p.Samples() != want {
			t.Fatalf("%v: Samples %d, want %d", d, p.Samples(), want)
		}
		var delivered []SampleID
		for r := range d.world {
			for s := range p.Steps() {
				b := p.Batch(r, s, nil)
				if len(b) != d.batch {
					t.Fatalf("%v: rank %d step %d has %d samples, want %d", d, r, s, len(b), d.batch)
				}
				delivered = append(delivered, b...)
			}
		}
		checkEpoch(t, d, delivered, p.Dropped(), p.Padded())
		// Fewer samples than one step: DropLast has no step, Pad one.
		if n := d.total(); n < int64(d.world*d.batch) {
			want := int64(0)
			if d.job.Policy == Pad && n > 0 {
				want = 1
			}
			if p.Steps() != want {
				t.Fatalf("%v: %d samples < world×batch, Steps = %d, want %d", d, n, p.Steps(), want)
			}
		}
	}
}

func TestDeterministicAndVaries(t *testing.T) {
	counts := make([]int64, 40)
	for i := range counts {
		counts[i] = 25
	}
	units := ShardUnits(counts)
	job := Job{Fingerprint: "aa", Seed: 7, Epoch: 3, Window: 2, Policy: DropLast}
	a := all(mustNew(t, units, job, nil, 4, 8))
	if diff := cmp.Diff(a, all(mustNew(t, units, job, nil, 4, 8))); diff != "" {
		t.Fatalf("two plans of the same job differ:\n%s", diff)
	}
	for _, other := range []Job{
		{Fingerprint: "aa", Seed: 7, Epoch: 4, Window: 2, Policy: DropLast},
		{Fingerprint: "aa", Seed: 8, Epoch: 3, Window: 2, Policy: DropLast},
	} {
		if cmp.Equal(a, all(mustNew(t, units, other, nil, 4, 8))) {
			t.Errorf("plan of %+v equals the plan of %+v", other, job)
		}
	}
}

func TestResumeAtEveryStep(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	for range 60 {
		d := randomDataset(rng)
		p := mustNew(t, d.units, d.job, nil, d.world, d.batch)
		whole := steps(p, 0, p.Steps())
		for k := range p.Steps() + 1 {
			tok, err := ParseToken(p.Token(k).String())
			if err != nil {
				t.Fatalf("%v: ParseToken(Token(%d)): %v", d, k, err)
			}
			q := mustNew(t, d.units, d.job, &tok, d.world, d.batch)
			if q.Steps() != p.Steps()-k {
				t.Fatalf("%v: resumed at %d: %d steps, want %d", d, k, q.Steps(), p.Steps()-k)
			}
			got := steps(q, 0, q.Steps())
			for r := range d.world {
				want := whole[r][k*int64(d.batch):]
				if !slices.Equal(got[r], want) {
					t.Fatalf("%v: resumed at step %d, rank %d gets %v, uninterrupted %v", d, k, r, got[r], want)
				}
			}
			if k == p.Steps() && q.Padded() != 0 {
				t.Fatalf("%v: resumed at the end, Padded %d", d, q.Padded())
			}
		}
	}
}

func TestChainedResume(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	for range 100 {
		d := randomDataset(rng)
		p := mustNew(t, d.units, d.job, nil, d.world, d.batch)
		whole := steps(p, 0, p.Steps())
		got := make([][]SampleID, d.world)
		cur := p
		for cur.Steps() > 0 {
			k := 1 + rng.Int64N(cur.Steps())
			part := steps(cur, 0, k)
			for r := range got {
				got[r] = append(got[r], part[r]...)
			}
			tok, err := ParseToken(cur.Token(k).String())
			if err != nil {
				t.Fatal(err)
			}
			if len(tok.Segments) != 1 {
				t.Fatalf("%v: chained resume with the same sizes made %d segments", d, len(tok.Segments))
			}
			cur = mustNew(t, d.units, d.job, &tok, d.world, d.batch)
		}
		if diff := cmp.Diff(whole, got); diff != "" && d.total() > 0 && p.Steps() > 0 {
			t.Fatalf("%v: chained resumes differ from the uninterrupted run:\n%s", d, diff)
		}
	}
}

// TestResize resumes at random steps with random world and batch sizes,
// several times in one epoch, and checks exactly-once and balance over
// everything delivered.
func TestResize(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	for range 300 {
		d := randomDataset(rng)
		var delivered []SampleID
		var padded int64
		var tok *Token
		world, batch := d.world, d.batch
		for range rng.IntN(5) {
			p := mustNew(t, d.units, d.job, tok, world, batch)
			k := int64(0)
			if p.Steps() > 0 {
				k = rng.Int64N(p.Steps() + 1)
			}
			for _, b := range steps(p, 0, k) {
				delivered = append(delivered, b...)
			}
			rest := mustNew(t, d.units, d.job, ptr(p.Token(k)), world, batch)
			padded += p.Padded() - rest.Padded() // padding consumed in [0, k)
			s, err := ParseToken(p.Token(k).String())
			if err != nil {
				t.Fatal(err)
			}
			tok = &s
			if rng.IntN(2) == 0 {
				world = 1 + rng.IntN(8)
			} else {
				batch = 1 + rng.IntN(7)
			}
		}
		p := mustNew(t, d.units, d.job, tok, world, batch)
		for r := range world {
			for s := range p.Steps() {
				b := p.Batch(r, s, nil)
				if len(b) != batch {
					t.Fatalf("%v: after resizes to world %d batch %d, rank %d step %d has %d samples", d, world, batch, r, s, len(b))
				}
				delivered = append(delivered, b...)
			}
		}
		padded += p.Padded()
		d.world, d.batch = world, batch
		checkEpoch(t, d, delivered, p.Dropped(), padded)
	}
}

func ptr[T any](v T) *T { return &v }

func TestConcurrentBatch(t *testing.T) {
	counts := make([]int64, 200)
	for i := range counts {
		counts[i] = int64(10 + i%17)
	}
	units := ShardUnits(counts)
	job := Job{Fingerprint: "ff", Seed: 1, Epoch: 1, Window: 3, Policy: Pad}
	want := all(mustNew(t, units, job, nil, 5, 7))
	p := mustNew(t, units, job, nil, 5, 7)
	got := make([][][]SampleID, 5*3)
	var wg sync.WaitGroup
	for g := range got {
		wg.Go(func() {
			r := g % 5
			for s := range p.Steps() {
				got[g] = append(got[g], p.Batch(r, s, nil))
			}
		})
	}
	wg.Wait()
	for g := range got {
		if diff := cmp.Diff(want[g%5], got[g]); diff != "" {
			t.Fatalf("goroutine %d (rank %d) saw a different plan:\n%s", g, g%5, diff)
		}
	}
}

func TestNewErrors(t *testing.T) {
	job := Job{Fingerprint: "0123456789abcdef", Seed: 1, Epoch: 2, Window: 4, Policy: DropLast}
	units := ShardUnits([]int64{10, 10, 10})
	good := mustNew(t, units, job, nil, 2, 3)
	tok := good.Token(2)
	mod := func(f func(*Token)) *Token {
		t := tok
		t.Segments = slices.Clone(tok.Segments)
		f(&t)
		return &t
	}
	tests := []struct {
		name   string
		units  []Unit
		job    Job
		resume *Token
		world  int
		batch  int
		want   error
		substr string
	}{
		{"zero world", units, job, nil, 0, 3, ErrInvalid, "world size 0"},
		{"zero batch", units, job, nil, 2, 0, ErrInvalid, "batch size 0"},
		{"zero window", units, Job{Window: 0, Policy: DropLast}, nil, 2, 3, ErrInvalid, "window 0"},
		{"bad policy", units, Job{Window: 1, Policy: 9}, nil, 2, 3, ErrInvalid, "policy"},
		{"negative count", []Unit{{0, 0, 3}, {0, 3, -1}}, job, nil, 2, 3, ErrInvalid, "unit 1 {shard 0 first 3 samples -1}"},
		{"negative shard", []Unit{{-1, 0, 3}}, job, nil, 2, 3, ErrInvalid, "unit 0 {shard -1 first 0 samples 3}"},
		{"negative first", []Unit{{0, -2, 3}}, job, nil, 2, 3, ErrInvalid, "unit 0 {shard 0 first -2"},
		{"index overflow", []Unit{{0, 0, 1}, {1, math.MaxInt64 - 1, 2}}, job, nil, 2, 3, ErrInvalid, "unit 1 {shard 1"},
		{"sum overflow", []Unit{{0, 0, math.MaxInt64}, {1, 0, 1}}, job, nil, 2, 3, ErrInvalid, "samples in all"},
		{"window too big", []Unit{{0, 0, MaxWindowSamples}, {1, 0, 1}}, job, nil, 2, 3, ErrInvalid, "shuffle window of units 0..1"},
		{"fingerprint", units, job, mod(func(t *Token) { t.Fingerprint = "ffffffffffffffff" }), 2, 3, ErrTokenMismatch, `fingerprint is "ffffffffffffffff" in the token, "0123456789abcdef" in the job`},
		{"seed", units, job, mod(func(t *Token) { t.Seed = 5 }), 2, 3, ErrTokenMismatch, "seed is 5 in the token, 1 in the job"},
		{"epoch", units, job, mod(func(t *Token) { t.Epoch = 3 }), 2, 3, ErrTokenMismatch, "epoch is 3 in the token, 2 in the job"},
		{"window", units, job, mod(func(t *Token) { t.Window = 2 }), 2, 3, ErrTokenMismatch, "window is 2 in the token, 4 in the job"},
		{"policy", units, job, mod(func(t *Token) { t.Policy = Pad }), 2, 3, ErrTokenMismatch, "policy is pad in the token, drop-last in the job"},
		{"steps beyond", units, job, mod(func(t *Token) { t.Segments[0].Steps = 6 }), 2, 3, ErrTokenMismatch, "consumed 6 steps, it holds 5"},
		{"steps beyond on resize", units, job, mod(func(t *Token) { t.Segments[0].Steps = 6 }), 3, 3, ErrTokenMismatch, "consumed 6 steps"},
		{"bad segment", units, job, mod(func(t *Token) { t.Segments[0].WorldSize = 0 }), 2, 3, ErrTokenMismatch, "segment 0: world size 0"},
		{"other dataset", ShardUnits([]int64{1, 1}), job, &tok, 2, 3, ErrTokenMismatch, "consumed 2 steps, it holds 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.units, tt.job, tt.resume, tt.world, tt.batch)
			if !errors.Is(err, tt.want) || !strings.Contains(fmt.Sprint(err), tt.substr) {
				t.Fatalf("New = %v, want an error wrapping %v containing %q", err, tt.want, tt.substr)
			}
		})
	}
}

func TestEmptyDataset(t *testing.T) {
	for _, pol := range []Policy{DropLast, Pad} {
		for _, units := range [][]Unit{nil, ShardUnits([]int64{0, 0, 0}), {{0, 5, 0}, {2, 0, 0}}} {
			p := mustNew(t, units, Job{Window: 1, Policy: pol}, nil, 3, 2)
			if p.Steps() != 0 || p.Samples() != 0 || p.Dropped() != 0 || p.Padded() != 0 {
				t.Errorf("%v %v: steps %d samples %d dropped %d padded %d, want all 0",
					pol, units, p.Steps(), p.Samples(), p.Dropped(), p.Padded())
			}
		}
	}
}

// TestUnitsKeepTheirSamples checks what a unit means: with shards cut into
// units, every delivered sample of a unit is {unit.Shard, unit.First + i}
// for i < unit.Samples, and the samples of one unit reach one rank's
// stream in one window block (consecutive units of a window stay together).
func TestUnitsKeepTheirSamples(t *testing.T) {
	units := []Unit{{Shard: 7, First: 100, Samples: 5}, {Shard: 2, First: 0, Samples: 3}, {Shard: 7, First: 0, Samples: 100}}
	p := mustNew(t, units, Job{Window: 3, Policy: DropLast}, nil, 1, 4)
	seen := map[SampleID]bool{}
	for s := range p.Steps() {
		for _, id := range p.Batch(0, s, nil) {
			ok := (id.Shard == 7 && id.Index >= 0 && id.Index < 105) || (id.Shard == 2 && id.Index >= 0 && id.Index < 3)
			if !ok || seen[id] {
				t.Fatalf("step %d: sample %v not of a unit or seen twice", s, id)
			}
			seen[id] = true
		}
	}
	if got, want := int64(len(seen))+p.Dropped(), int64(108); got != want {
		t.Fatalf("delivered + dropped = %d, want %d", got, want)
	}
}

// TestLastUse checks Plan.LastUse against brute force over the whole
// remaining stream, on random datasets (random units, empty ones
// included), world and batch sizes, windows, policies and resume histories
// with resizes. For every rank, step and slot i of Batch(rank, step), with
// last = LastUse(rank, step)[i]:
//
//   - step <= last < Steps();
//   - safety: no real (not a Pad repeat) slot of rank's stream at a step
//     after last holds a sample of slot i's unit, unless slot i is itself a
//     Pad repeat (whose lifetime is its own step);
//   - exactness: for a real slot, last is the last step at which rank's
//     stream holds a real sample of any unit of the same shuffle window as
//     slot i's unit (the bound promised; a unit is never held past its
//     window's stretch of the stream); for a Pad repeat, last == step.
func TestLastUse(t *testing.T) {
	rng := rand.New(rand.NewPCG(6, 6))
	var checked, pad, resized int
	for i := range 600 {
		d := randomDataset(rng)
		hist := randomHistory(t, rng, &d)
		p := mustNew(t, d.units, d.job, &Token{Job: d.job, Segments: hist}, d.world, d.batch)
		ref := newRef(d.units, d.job, hist, d.world, d.batch)
		if len(hist) > 0 && (hist[len(hist)-1].WorldSize != d.world || hist[len(hist)-1].BatchSize != d.batch) {
			resized++
		}
		b := int64(d.batch)
		var last []int64
		for r := range d.world {
			stream := ref.streams[r]
			lastOfUnit := map[int]int64{}
			for pos, it := range stream {
				if !it.wrap {
					lastOfUnit[it.unit] = int64(pos) / b
				}
			}
			want := ref.lastUse(r)
			for s := range p.Steps() {
				last = p.LastUse(r, s, last[:0])
				if int64(len(last)) != b {
					t.Fatalf("case %d %v history %v: LastUse(%d, %d) has %d slots, want %d", i, d, hist, r, s, len(last), b)
				}
				for j, got := range last {
					pos := s*b + int64(j)
					it := stream[pos]
					if got < s || got >= p.Steps() {
						t.Fatalf("case %d %v history %v: LastUse(%d, %d)[%d] = %d, out of [%d, %d)", i, d, hist, r, s, j, got, s, p.Steps())
					}
					if !it.wrap && got < lastOfUnit[it.unit] {
						t.Fatalf("case %d %v history %v: LastUse(%d, %d)[%d] = %d, but unit %d (%v) is used at step %d",
							i, d, hist, r, s, j, got, it.unit, d.units[it.unit], lastOfUnit[it.unit])
					}
					if got != want[pos] {
						t.Fatalf("case %d %v history %v: LastUse(%d, %d)[%d] = %d, brute force (last step of window %d) %d",
							i, d, hist, r, s, j, got, it.win, want[pos])
					}
					checked++
					if it.wrap {
						pad++
					}
				}
			}
		}
	}
	t.Logf("%d slots checked, %d Pad repeats, %d cases resized", checked, pad, resized)
	if pad == 0 || resized < 100 {
		t.Fatalf("the random cases miss Pad repeats (%d) or resizes (%d)", pad, resized)
	}
}

// TestLastUseLoader plays a loader that fetches a unit at its first use
// and frees it after LastUse, walking one rank's steps: it never needs a
// unit it freed (but for Pad repeats, which it fetches again), and holds
// at most a window of units plus the units of the next window that the
// batch crossing into it touches (at most min(W, B)), plus under Pad the
// repeats of the last step (at most B).
func TestLastUseLoader(t *testing.T) {
	for _, pol := range []Policy{DropLast, Pad} {
		testLastUseLoader(t, pol)
	}
}

func testLastUseLoader(t *testing.T, pol Policy) {
	counts := make([]int64, 30)
	for i := range counts {
		counts[i] = 40
	}
	var units []Unit
	for s := range counts {
		for f := int64(0); f < 40; f += 10 {
			units = append(units, Unit{Shard: int64(s), First: f, Samples: 10})
		}
	}
	unitOf := func(id SampleID) int { return int(id.Shard)*4 + int(id.Index/10) }
	job := Job{Fingerprint: "aa", Seed: 3, Window: 4, Policy: pol}
	const batch = 7
	p := mustNew(t, units, job, nil, 3, batch)
	bound := job.Window + min(job.Window, batch)
	if pol == Pad {
		bound += batch
	}
	for r := range p.WorldSize() {
		held := map[int]int64{} // unit → release after this step
		freed := map[int]bool{}
		most := 0
		for s := range p.Steps() {
			ids := p.Batch(r, s, nil)
			last := p.LastUse(r, s, nil)
			for i, id := range ids {
				u := unitOf(id)
				if freed[u] && last[i] != s {
					t.Fatalf("%v: rank %d step %d: unit %d used again after it was freed", pol, r, s, u)
				}
				held[u] = max(held[u], last[i])
			}
			most = max(most, len(held))
			for u, l := range held {
				if l == s {
					delete(held, u)
					freed[u] = true
				}
			}
		}
		if len(held) != 0 {
			t.Fatalf("%v: rank %d: %d units still held at the end", pol, r, len(held))
		}
		if most > bound {
			t.Errorf("%v: rank %d held up to %d units at once, window %d, batch %d", pol, r, most, job.Window, batch)
		}
		t.Logf("%v: rank %d held at most %d units (window %d, batch %d)", pol, r, most, job.Window, batch)
	}
}
