package service

import (
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardstream/shardstream/internal/datasettest"
	"github.com/shardstream/shardstream/internal/leaktest"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/sampler"
)

// stepIDs maps each batch's step to its sample identities.
func stepIDs(t *testing.T, batches []*pb.Batch, into map[int64][]sampler.SampleID) {
	t.Helper()
	for _, b := range batches {
		if _, dup := into[b.Step]; dup {
			t.Fatalf("step %d sent twice", b.Step)
		}
		into[b.Step] = ids([]*pb.Batch{b})
	}
}

// The K streams of a rank with stride K and from_step first+j, j in
// [0, K), send between them exactly the unstrided stream's batches, each
// once, each stream in step order; and each chunk is read at most once per
// stream that uses it (a strided stream releases a chunk after the last of
// its own steps that uses it, and never reads it twice).
func TestStrideStreamsShareTheRank(t *testing.T) {
	leaktest.Check(t)
	for _, tc := range []struct {
		world, batch int
		window       uint32
		first        int64 // from_step of the first stream
	}{
		{1, 5, 3, 0},
		{3, 4, 2, 0},
		{2, 7, 1, 3},
		{2, 3, 0, 1},
	} {
		for stride := 1; stride <= 4; stride++ {
			t.Run(fmt.Sprintf("world%d-batch%d-window%d-from%d-stride%d", tc.world, tc.batch, tc.window, tc.first, stride), func(t *testing.T) {
				r := &fakeReader{m: testManifest(6, 23, 4)}
				cfg := testConfig(r)
				cfg.ReadaheadSteps = 3
				ts := startServer(t, cfg, samplerPlanner)
				ctx := testCtx(t)
				job := &pb.JobSpec{WorldSize: uint32(tc.world), BatchSize: uint32(tc.batch), Seed: 5, Window: tc.window}
				want := make([][]*pb.Batch, tc.world)
				for rank := range tc.world {
					b, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: job, Rank: uint32(rank), FromStep: tc.first})
					if err != nil {
						t.Fatal(err)
					}
					want[rank] = b
				}
				r.mu.Lock()
				r.reads = nil // count the strided streams' reads only
				r.mu.Unlock()

				used := make(map[chunkKey]int) // strided streams whose batches use the chunk
				for rank := range tc.world {
					got := make(map[int64][]sampler.SampleID)
					for j := range int64(stride) {
						from := tc.first + j
						b, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: job, Rank: uint32(rank), FromStep: from, Stride: uint32(stride)})
						if err != nil {
							t.Fatalf("rank %d from %d stride %d: %v", rank, from, stride, err)
						}
						for i, x := range b {
							if wantStep := from + int64(i*stride); x.Step != wantStep {
								t.Fatalf("rank %d from %d stride %d: batch %d is step %d, want %d", rank, from, stride, i, x.Step, wantStep)
							}
						}
						stepIDs(t, b, got)
						seen := make(map[chunkKey]bool)
						for _, id := range ids(b) {
							seen[chunkKey{int(id.Shard), r.m.Shards[id.Shard].ChunkOf(id.Index)}] = true
						}
						for k := range seen {
							used[k]++
						}
					}
					wantIDs := make(map[int64][]sampler.SampleID)
					stepIDs(t, want[rank], wantIDs)
					if diff := cmp.Diff(wantIDs, got); diff != "" {
						t.Errorf("rank %d: the %d strided streams differ from the unstrided one (-want +got):\n%s", rank, stride, diff)
					}
				}
				r.mu.Lock()
				defer r.mu.Unlock()
				for k, n := range r.reads {
					if n > used[k] {
						t.Errorf("chunk %v: read %d times for the %d strided streams that used it", k, n, used[k])
					}
				}
			})
		}
	}
}

// A strided stream releases a chunk after the last of its own steps that
// uses it, not at the rank's last use, a step it never sends (which would
// hold the chunk to the stream's end). Here a chunk is two steps: step 2i
// takes its first two samples, step 2i+1 the others. The stream of the
// even steps uses each chunk at one step only, so it holds one chunk at a
// time, and stays within its reservation.
func TestStrideReleasesAtItsOwnLastUse(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(8, 16, 4)} // 32 chunks of 4 KiB, 64 steps
	reg := prometheus.NewRegistry()
	cfg := testConfig(r)
	cfg.ReadaheadSteps = 32
	cfg.Registry = reg
	ts := startServer(t, cfg, samplerPlanner)
	got, err := streamAll(testCtx(t), ts.loader, &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 2, Window: 1}, Stride: 2})
	if err != nil || len(got) != 32 {
		t.Fatalf("%d batches, %v; want 32", len(got), err)
	}
	if err := ts.stop(); err != nil {
		t.Fatal(err)
	}
	const need = 3 * 4096 // the stream's reservation: (k·W + 1) chunks, k = 2, W = 1
	if peak := datasettest.MetricValue(t, reg, "shardstream_loader_stream_chunk_peak_bytes"); peak > need {
		t.Errorf("the strided stream held %v bytes of chunks at its peak, more than its reservation of %d: chunks held past its last use", peak, need)
	}
	if held := datasettest.MetricValue(t, reg, "shardstream_loader_chunk_memory_held_bytes"); held != 0 {
		t.Errorf("%v bytes of chunks still held after the stream ended", held)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, n := range r.reads {
		if n != 1 {
			t.Errorf("chunk %v read %d times, want once", k, n)
		}
	}
}

// max_steps counts the batches sent, whatever the stride; a stride past
// the bound is refused naming the field; 0 is every step, like 1.
func TestStrideRequest(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(2, 10, 5)} // 20 samples: 10 steps of 2
	ts := startServer(t, testConfig(r), samplerPlanner)
	ctx := testCtx(t)
	job := &pb.JobSpec{WorldSize: 1, BatchSize: 2}
	steps := func(b []*pb.Batch) []int64 {
		var out []int64
		for _, x := range b {
			out = append(out, x.Step)
		}
		return out
	}
	for _, tc := range []struct {
		from, max int64
		stride    uint32
		want      []int64
	}{
		{0, 0, 0, []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{0, 0, 1, []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{1, 0, 3, []int64{1, 4, 7}},
		{2, 2, 3, []int64{2, 5}},
		{0, 4, 3, []int64{0, 3, 6, 9}},
		{0, 9, 3, []int64{0, 3, 6, 9}},
		{9, 0, 1024, []int64{9}},
		{10, 0, 4, nil},
	} {
		b, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: job, FromStep: tc.from, MaxSteps: tc.max, Stride: tc.stride})
		if err != nil {
			t.Errorf("from %d max %d stride %d: %v", tc.from, tc.max, tc.stride, err)
			continue
		}
		if got := steps(b); !cmp.Equal(got, tc.want) {
			t.Errorf("from %d max %d stride %d: steps %v, want %v", tc.from, tc.max, tc.stride, got, tc.want)
		}
	}
	_, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: job, Stride: maxStride + 1})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "stride") {
		t.Errorf("stride %d: %v, want InvalidArgument naming stride", maxStride+1, err)
	}
}
