package service

import (
	"context"
	"testing"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/worker"
)

// prebuiltReader serves chunks built once, so a benchmark measures the
// loader (planning, assembly, encoding, gRPC) and not the fake's work.
type prebuiltReader map[chunkKey]*worker.Chunk

func (p prebuiltReader) Fetch(ctx context.Context, s, c int) (*worker.Chunk, int64, error) {
	return p[chunkKey{s, c}], 0, nil
}

// BenchmarkStreamBatches streams one rank's epoch over loopback gRPC from
// chunks already decoded: the loader's own cost per byte. One op is one
// batch of 32 samples of 64 KiB.
func BenchmarkStreamBatches(b *testing.B) {
	const (
		shards, perShard, perChunk = 64, 256, 32
		batch, fieldSize           = 32, 64 << 10
	)
	m := testManifest(shards, perShard, perChunk)
	fake := &fakeReader{m: m, fieldSize: fieldSize}
	pre := prebuiltReader{}
	for s := range shards {
		for c := range m.Shards[s].Chunks {
			ch, _, _ := fake.Fetch(context.Background(), s, c)
			pre[chunkKey{s, c}] = ch
		}
	}
	ts := startServer(b, Config{Datasets: []Dataset{{Name: "d", Manifest: m, Chunks: pre}}}, samplerPlanner)
	job := &pb.JobSpec{WorldSize: 1, BatchSize: batch}
	b.SetBytes(batch * fieldSize)
	b.ReportAllocs()
	b.ResetTimer()
	sent := 0
	for sent < b.N {
		st, err := ts.loader.StreamBatches(context.Background(), &pb.StreamBatchesRequest{Job: job, MaxSteps: int64(b.N - sent)})
		if err != nil {
			b.Fatal(err)
		}
		if err := recvEach(st, -1, func(*pb.Batch) { sent++ }); err != nil {
			b.Fatal(err)
		}
	}
}
