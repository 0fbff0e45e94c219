package sampler

import (
	"math/rand/v2"
	"runtime"
	"testing"
)

// bigUnits is a 10-million-unit dataset: 1.25M shards of 8 units of 1000
// samples (10¹⁰ samples), shared by the benchmarks.
func bigUnits() []Unit {
	return chunked(1_250_000, 8, 1000)
}

// chunked is shards × per units of n samples each, in manifest order.
func chunked(shards, per int, n int64) []Unit {
	units := make([]Unit, 0, shards*per)
	for s := range shards {
		for c := range per {
			units = append(units, Unit{Shard: int64(s), First: int64(c) * n, Samples: n})
		}
	}
	return units
}

var bigJob = Job{Fingerprint: "0123456789abcdef", Seed: 42, Epoch: 3, Window: DefaultWindow, Policy: DropLast}

// BenchmarkPlan10MUnits measures New on 10M units × 1000 samples, 64
// ranks of 256. The target is well under a second and memory that grows
// with units (12 bytes a unit; the units slice is the caller's), never
// with samples.
func BenchmarkPlan10MUnits(b *testing.B) {
	units := bigUnits()
	b.ReportAllocs()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	for b.Loop() {
		p, err := New(units, bigJob, nil, 64, 256)
		if err != nil {
			b.Fatal(err)
		}
		if p.Steps() == 0 {
			b.Fatal("no steps")
		}
	}
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(b.N)/float64(len(units)), "B/unit")
}

// resized is the plan of units after an elastic resume: 64 ranks of 256
// consumed a third of the epoch, then 48 ranks go on.
func resized(b *testing.B, units []Unit) *Plan {
	p, err := New(units, bigJob, nil, 64, 256)
	if err != nil {
		b.Fatal(err)
	}
	tok := p.Token(p.Steps() / 3)
	q, err := New(units, bigJob, &tok, 48, 256)
	if err != nil {
		b.Fatal(err)
	}
	return q
}

// BenchmarkResume10MUnits measures New with a token of two resized
// segments on the same dataset.
func BenchmarkResume10MUnits(b *testing.B) {
	units := bigUnits()
	q := resized(b, units)
	tok := q.Token(q.Steps() / 2)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(units, bigJob, &tok, 64, 512); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSeek10MUnits measures Batch (256 samples) at a random step of
// a random rank, after an elastic resume (64 → 48 ranks), so every lookup
// walks two segments. Each op is one batch; the ns/sample metric divides
// by the batch size.
func BenchmarkSeek10MUnits(b *testing.B) {
	units := bigUnits()
	q := resized(b, units)
	rng := rand.New(rand.NewPCG(1, 2))
	dst := make([]SampleID, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		dst = q.Batch(rng.IntN(48), rng.Int64N(q.Steps()), dst[:0])
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/256, "ns/sample")
}

// BenchmarkNextBatch measures Batch walking one rank's steps in order, the
// loader's access pattern: the window block cache makes most lookups a
// couple of binary searches.
func BenchmarkNextBatch(b *testing.B) {
	p, err := New(chunked(12_500, 8, 1000), bigJob, nil, 64, 256)
	if err != nil {
		b.Fatal(err)
	}
	dst := make([]SampleID, 0, 256)
	b.ReportAllocs()
	step := int64(0)
	for b.Loop() {
		dst = p.Batch(5, step, dst[:0])
		step = (step + 1) % p.Steps()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/256, "ns/sample")
}

// BenchmarkLastUse measures LastUse walking one rank's steps in order
// after an elastic resume (64 → 48 ranks) on 10M units, next to Batch's
// cost in BenchmarkSeek10MUnits: a few binary searches per window block
// the batch touches.
func BenchmarkLastUse(b *testing.B) {
	units := bigUnits()
	q := resized(b, units)
	dst := make([]int64, 0, 256)
	b.ReportAllocs()
	step := int64(0)
	for b.Loop() {
		dst = q.LastUse(5, step, dst[:0])
		step = (step + 1) % q.Steps()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/256, "ns/slot")
}
