package service

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardstream/shardstream/internal/datasettest"
	"github.com/shardstream/shardstream/internal/leaktest"
	"github.com/shardstream/shardstream/manifest"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// Over a whole epoch every rank's stream reads each chunk it needs once:
// the loader keeps a chunk from its first use to its last (the plan's
// LastUse), never re-reading it however far apart its samples fall. Only
// a chunk split between two ranks' ranges is read once by each.
func TestStreamReadsEachChunkOnce(t *testing.T) {
	leaktest.Check(t)
	for _, tc := range []struct {
		name          string
		world, batch  int
		window        uint32
		readahead     int
		maxSplitReads int // chunks read by two ranks: at most world−1
	}{
		{"one rank", 1, 5, 3, 2, 0},
		{"four ranks", 4, 3, 2, 8, 3},
		{"window of one", 2, 7, 1, 1, 1},
		{"default window", 3, 4, 0, 4, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &fakeReader{m: testManifest(6, 23, 4)} // 36 chunks, some of 3 samples
			cfg := testConfig(r)
			cfg.ReadaheadSteps = tc.readahead
			ts := startServer(t, cfg, samplerPlanner)
			ctx := testCtx(t)
			used := make(map[chunkKey]int) // ranks whose batches used the chunk
			for rank := range tc.world {
				got, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Rank: uint32(rank),
					Job: &pb.JobSpec{WorldSize: uint32(tc.world), BatchSize: uint32(tc.batch), Seed: 3, Window: tc.window}})
				if err != nil {
					t.Fatal(err)
				}
				seen := make(map[chunkKey]bool)
				for _, b := range got {
					for _, s := range b.Samples {
						sh := r.m.Shards[s.Shard]
						seen[chunkKey{int(s.Shard), sh.ChunkOf(int64(s.Index))}] = true
					}
				}
				for k := range seen {
					used[k]++
				}
			}
			r.mu.Lock()
			defer r.mu.Unlock()
			split := 0
			for k, n := range used {
				if n > 1 {
					split++
				}
				if r.reads[k] != n {
					t.Errorf("chunk %v: read %d times for the %d ranks that used it", k, r.reads[k], n)
				}
			}
			for k, n := range r.reads {
				if used[k] == 0 {
					t.Errorf("chunk %v: read %d times, used by no rank", k, n)
				}
			}
			if split > tc.maxSplitReads {
				t.Errorf("%d chunks used by two ranks, want at most %d (one per rank boundary)", split, tc.maxSplitReads)
			}
		})
	}
}

// A stream holds at most its reservation of chunk bytes while its client
// has queued steps to take: the read-ahead stops at the reservation, not at
// the read-ahead's step count. Here one window is one chunk of 4 samples
// and a step 2 samples, so the stream reserves 3 chunks, while 32 steps of
// read-ahead would reach 16.
func TestStreamChunkMemoryBoundsReadahead(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(8, 16, 4), gate: make(chan struct{})} // 32 chunks of 4 KiB
	reg := prometheus.NewRegistry()
	cfg := testConfig(r)
	cfg.ReadaheadSteps = 32
	cfg.Registry = reg
	ts := startServer(t, cfg, samplerPlanner)
	ctx := testCtx(t)
	st, err := ts.loader.StreamBatches(ctx, &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 2, Window: 1}})
	if err != nil {
		t.Fatal(err)
	}
	for r.calls.Load() < 3 { // the reads the reservation allows start and wait at the gate
		if ctx.Err() != nil {
			t.Fatalf("%d chunk reads started, want 3", r.calls.Load())
		}
		time.Sleep(time.Millisecond) // polling a counter: nothing to wait on
	}
	const need = 3 * 4096 // (k·W + 1) chunks: k = 2 windows per step, W = 1
	if got := datasettest.MetricValue(t, reg, "shardstream_loader_chunk_memory_reserved_bytes"); got != need {
		t.Errorf("reserved %v bytes, want %d", got, need)
	}
	close(r.gate)
	got, err := collect(st, -1)
	if err != nil || len(got) != 64 {
		t.Fatalf("%d batches, %v; want 64", len(got), err)
	}
	if err := ts.stop(); err != nil {
		t.Fatal(err)
	}
	if peak := datasettest.MetricValue(t, reg, "shardstream_loader_stream_chunk_peak_bytes"); peak > need {
		t.Errorf("the stream held %v bytes of chunks at its peak, more than its reservation of %d", peak, need)
	}
	if held := datasettest.MetricValue(t, reg, "shardstream_loader_chunk_memory_held_bytes"); held != 0 {
		t.Errorf("%v bytes of chunks still held after the stream ended", held)
	}
	if got := datasettest.MetricValue(t, reg, "shardstream_loader_chunk_memory_reserved_bytes"); got != 0 {
		t.Errorf("%v bytes still reserved after the stream ended", got)
	}
}

// A stream whose chunk memory cannot be reserved is refused at once with
// ResourceExhausted naming the flag to raise: never a re-read storm.
func TestStreamChunkMemoryRefused(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(4, 16, 4), gate: make(chan struct{})}
	cfg := testConfig(r)
	cfg.ChunkMemoryBytes = 5 * 4096
	ts := startServer(t, cfg, samplerPlanner)
	ctx := testCtx(t)

	// Window 4, batch 2: (2·4 + 1) chunks of 4 KiB, more than the whole bound.
	_, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 2, Window: 4}})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--chunk-memory") || !strings.Contains(err.Error(), "job.window") {
		t.Errorf("window 4: %v, want ResourceExhausted naming --chunk-memory and job.window", err)
	}

	// Window 1 needs 3 chunks: one stream fits, a second one does not
	// while the first is open.
	job := &pb.JobSpec{WorldSize: 2, BatchSize: 2, Window: 1}
	first, err := ts.loader.StreamBatches(ctx, &pb.StreamBatchesRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	r.waitRead(t, ctx) // the first stream holds its reservation
	_, err = streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: job, Rank: 1})
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "1 open streams hold") {
		t.Errorf("second stream: %v, want ResourceExhausted saying one open stream holds the memory", err)
	}
	close(r.gate)
	if _, err := collect(first, -1); err != nil {
		t.Fatal(err)
	}
	// Its reservation given back, the second rank streams.
	if _, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: job, Rank: 1}); err != nil {
		t.Errorf("second stream after the first ended: %v", err)
	}
}

// A resume token of the planner that shuffled whole shards (version 1) is
// refused with FailedPrecondition, not read as today's plan.
func TestOldTokenRefused(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(2, 10, 5)}
	ts := startServer(t, testConfig(r), samplerPlanner)
	fp := r.m.Fingerprint()
	b := []byte{1} // version 1: fingerprint, seed, epoch, window, policy, segments
	b = binary.AppendUvarint(b, uint64(len(fp)/2)<<1|1)
	for i := 0; i < len(fp); i += 2 {
		var v byte
		for _, c := range fp[i : i+2] {
			v = v<<4 | byte(strings.IndexRune("0123456789abcdef", c))
		}
		b = append(b, v)
	}
	for _, v := range []uint64{0, 0, 4} {
		b = binary.AppendUvarint(b, v)
	}
	b = append(b, 1)
	for _, v := range []uint64{1, 1, 2, 1} { // one segment: world 1, batch 2, 1 step
		b = binary.AppendUvarint(b, v)
	}
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	tok := base64.RawURLEncoding.EncodeToString(b)
	_, err := ts.coord.PlanEpoch(testCtx(t), &pb.PlanEpochRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 2, Window: 4, ResumeToken: tok}})
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "resume_token") {
		t.Errorf("version-1 token: %v, want FailedPrecondition naming job.resume_token", err)
	}
}

// The loader counts the bytes each job epoch read from the store and their
// ratio to the dataset's size: about 1 for an epoch that reads each chunk
// once.
func TestEpochStoreBytes(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(5, 20, 4)}
	reg := prometheus.NewRegistry()
	cfg := testConfig(r)
	cfg.Registry = reg
	ts := startServer(t, cfg, samplerPlanner)
	ctx := testCtx(t)
	for epoch := range uint64(2) {
		if _, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 5, Seed: 9, Epoch: epoch}}); err != nil {
			t.Fatal(err)
		}
	}
	total := float64(r.m.TotalBytes())         // 100 samples in batches of 5: every chunk is read each epoch
	for _, epoch := range []string{"0", "1"} { // labels sort by name: dataset, epoch, seed
		if got := datasettest.MetricValue(t, reg, "shardstream_epoch_store_bytes", "default", epoch, "9"); got != total {
			t.Errorf("epoch %s: %v store bytes, want the dataset's %v", epoch, got, total)
		}
		if got := datasettest.MetricValue(t, reg, "shardstream_epoch_store_bytes_ratio", "default", epoch, "9"); got != 1 {
			t.Errorf("epoch %s: ratio %v, want 1", epoch, got)
		}
	}
	if got := datasettest.MetricValue(t, reg, "shardstream_loader_store_bytes_total", "default"); got != 2*total {
		t.Errorf("store bytes in all %v, want %v", got, 2*total)
	}
}

// unevenManifest has chunks of 3 to 9 samples of 1 KiB each, so shuffle
// windows end mid-step and a window's last step often holds none of some
// of its chunks.
func unevenManifest(shards, chunks int) *manifest.Manifest {
	m := &manifest.Manifest{Version: manifest.Version}
	n := 0
	for s := range shards {
		sh := manifest.Shard{Path: fmt.Sprintf("shard-%05d.tar", s), Compression: manifest.CompressionNone}
		for range chunks {
			k := int64(3 + n*5%7)
			n++
			sh.Chunks = append(sh.Chunks, manifest.Chunk{Offset: sh.Size, Size: k << 10, RawSize: k << 10, FirstSample: sh.Samples, Samples: k})
			sh.Size += k << 10
			sh.Samples += k
		}
		m.Shards = append(m.Shards, sh)
	}
	if err := m.Validate(); err != nil {
		panic(err)
	}
	return m
}

// A stream releases every chunk after the step of its last use even when
// that step reads none of it, so over a whole epoch it never holds more
// than it reserved, and it reads each chunk once.
func TestStreamReleasesChunksOfEndedWindows(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: unevenManifest(6, 10)}
	reg := prometheus.NewRegistry()
	cfg := testConfig(r)
	cfg.Registry = reg
	ts := startServer(t, cfg, samplerPlanner)
	ctx := testCtx(t)
	got, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 4, Window: 3, Seed: 11}})
	if err != nil || len(got) == 0 {
		t.Fatalf("%d batches, %v", len(got), err)
	}
	if err := ts.stop(); err != nil {
		t.Fatal(err)
	}
	need, _ := streamNeed(newCatalog(cfg.Datasets).byName["default"], 3, 4)
	if peak := datasettest.MetricValue(t, reg, "shardstream_loader_stream_chunk_peak_bytes"); peak > float64(need) {
		t.Errorf("the stream held %v bytes of chunks at its peak, more than its reservation of %d", peak, need)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, n := range r.reads {
		if n != 1 {
			t.Errorf("chunk %v read %d times", k, n)
		}
	}
}

// PlanEpoch says which window it planned with, so clients send it to
// loaders whose own default may differ, and every loader streams the
// coordinator's plan.
func TestPlanEpochSaysItsWindow(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(4, 10, 5)}
	coordCfg := testConfig(r)
	coordCfg.DefaultWindow = 3
	coord := startServer(t, coordCfg, samplerPlanner)
	loaderCfg := testConfig(r)
	loaderCfg.DefaultWindow = 5
	loader := startServer(t, loaderCfg, samplerPlanner)
	ctx := testCtx(t)
	job := &pb.JobSpec{WorldSize: 1, BatchSize: 4, Seed: 2}
	plan, err := coord.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	if plan.GetWindow() != 3 {
		t.Fatalf("PlanEpoch window %d, want the coordinator's default 3", plan.GetWindow())
	}
	want, err := streamAll(ctx, coord.loader, &pb.StreamBatchesRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	withWindow := &pb.JobSpec{WorldSize: 1, BatchSize: 4, Seed: 2, Window: plan.GetWindow()}
	got, err := streamAll(ctx, loader.loader, &pb.StreamBatchesRequest{Job: withWindow})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d batches from the loader, %d from the coordinator", len(got), len(want))
	}
	for i := range want {
		for j, s := range want[i].GetSamples() {
			if g := got[i].GetSamples()[j]; g.GetShard() != s.GetShard() || g.GetIndex() != s.GetIndex() {
				t.Fatalf("step %d slot %d: the loader sent %d/%d, the coordinator's plan %d/%d", i, j, g.GetShard(), g.GetIndex(), s.GetShard(), s.GetIndex())
			}
		}
	}
	if p, err := coord.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: withWindow}); err != nil || p.GetWindow() != 3 {
		t.Errorf("PlanEpoch with window 3 = %v, %v; want window 3", p.GetWindow(), err)
	}
}
