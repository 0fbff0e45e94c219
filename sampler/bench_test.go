package sampler

import (
	"math/rand/v2"
	"runtime"
	"testing"
)

// bigCounts is a 10-million-shard dataset of 1000 samples a shard (10¹⁰
// samples), shared by the benchmarks.
func bigCounts() []int64 {
	counts := make([]int64, 10_000_000)
	for i := range counts {
		counts[i] = 1000
	}
	return counts
}

var bigJob = Job{Fingerprint: "0123456789abcdef", Seed: 42, Epoch: 3, Window: DefaultWindow, Policy: DropLast}

// BenchmarkPlan10MShards measures New on 10M shards × 1000 samples, 64
// ranks of 256. The target is well under a second and memory that grows
// with shards (12 bytes a shard), never with samples.
func BenchmarkPlan10MShards(b *testing.B) {
	counts := bigCounts()
	b.ReportAllocs()
	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	for b.Loop() {
		p, err := New(counts, bigJob, nil, 64, 256)
		if err != nil {
			b.Fatal(err)
		}
		if p.Steps() == 0 {
			b.Fatal("no steps")
		}
	}
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(ms1.TotalAlloc-ms0.TotalAlloc)/float64(b.N)/float64(len(counts)), "B/shard")
}

// BenchmarkResume10MShards measures New with a token of two resized
// segments on the same dataset.
func BenchmarkResume10MShards(b *testing.B) {
	counts := bigCounts()
	p, err := New(counts, bigJob, nil, 64, 256)
	if err != nil {
		b.Fatal(err)
	}
	tok := p.Token(p.Steps() / 3)
	q, err := New(counts, bigJob, &tok, 48, 256)
	if err != nil {
		b.Fatal(err)
	}
	tok = q.Token(q.Steps() / 2)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(counts, bigJob, &tok, 64, 512); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSeek10MShards measures Batch (256 samples) at a random step of
// a random rank, after an elastic resume (64 → 48 ranks), so every lookup
// walks two segments. Each op is one batch; the ns/sample metric divides
// by the batch size.
func BenchmarkSeek10MShards(b *testing.B) {
	counts := bigCounts()
	p, err := New(counts, bigJob, nil, 64, 256)
	if err != nil {
		b.Fatal(err)
	}
	tok := p.Token(p.Steps() / 3)
	q, err := New(counts, bigJob, &tok, 48, 256)
	if err != nil {
		b.Fatal(err)
	}
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
	counts := make([]int64, 100_000)
	for i := range counts {
		counts[i] = 1000
	}
	p, err := New(counts, bigJob, nil, 64, 256)
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
