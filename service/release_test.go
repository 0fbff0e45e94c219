package service

import (
	"bytes"
	"context"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardstream/shardstream/internal/datasettest"
	"github.com/shardstream/shardstream/manifest"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/store/memstore"
	"github.com/shardstream/shardstream/wds"
	"github.com/shardstream/shardstream/worker"
)

// realReader writes shards of perShard samples of about 100 KiB (chunks
// of about 400 KiB, large enough for the read path's buffer pool) into a
// memory store and opens a worker.Reader on it, its memory cache off, its
// metrics in reg.
func realReader(t *testing.T, shards, perShard int, reg prometheus.Registerer) *worker.Reader {
	t.Helper()
	ctx := testCtx(t)
	st := memstore.New()
	datasettest.Write(t, st, shards, perShard, func(s, i int) wds.Sample {
		key := sampleKey(int64(s), int64(i))
		return wds.Sample{Key: key, Fields: []wds.Field{
			{Name: "cls", Data: []byte(key)},
			{Name: "bin", Data: bytes.Repeat([]byte{byte(i)}, 100<<10)},
		}}
	}, datasettest.Options{Compression: manifest.CompressionNone, ChunkSize: 400 << 10})
	r, err := worker.Open(ctx, "mem://release", worker.Config{Store: st, MemoryCacheBytes: -1, Registerer: reg}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// The loader releases every chunk it reads once its batch is sent, and
// every chunk of the read-ahead when a stream ends early: when the server
// has stopped, no chunk buffer is in use, and buffers were reused.
func TestStreamsReleaseChunks(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps int // batches read before cancelling; -1: all
	}{{"to the end", -1}, {"cancelled", 3}} {
		t.Run(tc.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			r := realReader(t, 4, 24, reg)
			cfg := Config{Datasets: []Dataset{{Name: "default", Manifest: r.Manifest(), Chunks: r}}, ReadaheadSteps: 4, FetchConcurrency: 4}
			ts := startServer(t, cfg, samplerPlanner)
			ctx, cancel := context.WithCancel(testCtx(t))
			defer cancel()
			st, err := ts.loader.StreamBatches(ctx, &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 6}})
			if err != nil {
				t.Fatal(err)
			}
			got, err := collect(st, tc.steps)
			if err != nil {
				t.Fatal(err)
			}
			for _, b := range got {
				for _, s := range b.Samples {
					if want := sampleKey(int64(s.Shard), int64(s.Index)); s.Key != want || string(s.Fields[0].Data) != want ||
						len(s.Fields[1].Data) != 100<<10 || s.Fields[1].Data[0] != byte(s.Index) {
						t.Fatalf("step %d: sample %d/%d arrived as key %q with other bytes", b.Step, s.Shard, s.Index, s.Key)
					}
				}
			}
			if tc.steps < 0 && len(got) != 16 {
				t.Fatalf("%d batches, want 16", len(got))
			}
			cancel()
			if tc.steps >= 0 {
				if _, err := collect(st, -1); status.Code(err) != codes.Canceled {
					t.Fatalf("after cancel: %v, want Canceled", err)
				}
			}
			if err := ts.stop(); err != nil { // waits for the stream handler to return
				t.Fatal(err)
			}
			if inUse := datasettest.MetricValue(t, reg, "shardstream_read_buffer_bytes"); inUse != 0 {
				t.Errorf("%v bytes of chunk buffers still in use after the stream ended", inUse)
			}
			if tc.steps < 0 { // a chunk lives to its window's end: three steps may release none
				if reused := datasettest.MetricValue(t, reg, "shardstream_read_buffers_total", "pool"); reused == 0 {
					t.Error("no chunk buffer was reused over a whole epoch")
				}
			}
		})
	}
}
