package worker_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/shardstream/shardstream/internal/faultproxy"
	"github.com/shardstream/shardstream/internal/miniotest"
	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store/storeuri"
	"github.com/shardstream/shardstream/worker"
)

// minioDataset starts MinIO, writes d under s3://data/ds and returns the
// server.
func minioDataset(t *testing.T, d dataset) *miniotest.Server {
	srv := miniotest.Start(t)
	srv.CreateBucket(t, "data")
	st, err := storeuri.Open(context.Background(), "s3://data/ds", srv.S3Config())
	if err != nil {
		t.Fatal(err)
	}
	d.build(t, st)
	return srv
}

func s3Config(endpoint string, srv *miniotest.Server) worker.Config {
	s3 := srv.S3Config()
	s3.Endpoint = endpoint
	return worker.Config{S3: s3}
}

// TestS3WDS reads shards written by wds.ShardWriter (as pack writes them)
// from MinIO, both formats.
func TestS3WDS(t *testing.T) {
	srv := miniotest.Start(t)
	srv.CreateBucket(t, "data")
	for _, comp := range []string{manifest.CompressionNone, manifest.CompressionZstd} {
		t.Run(comp, func(t *testing.T) {
			uri := "s3://data/" + comp
			st, err := storeuri.Open(context.Background(), uri, srv.S3Config())
			if err != nil {
				t.Fatal(err)
			}
			d := dataset{shards: 2, samples: 60, compression: comp, maxField: 8000}
			m := d.buildWDS(t, st, 64<<10)
			if len(m.Shards[0].Chunks) < 3 {
				t.Fatalf("%d chunks per shard; want several", len(m.Shards[0].Chunks))
			}
			cfg := s3Config(srv.Endpoint, srv)
			cfg.PartSize = 16 << 10
			checkAll(t, open(t, uri, cfg), d)
		})
	}
}

func TestS3(t *testing.T) {
	d := dataset{shards: 2, samples: 40, perChunk: 9, compression: manifest.CompressionZstd, maxField: 8000}
	srv := minioDataset(t, d)
	cfg := s3Config(srv.Endpoint, srv)
	cfg.PartSize = 16 << 10
	checkAll(t, open(t, "s3://data/ds", cfg), d)

	_, err := worker.Open(testCtx(t), "s3://data/elsewhere", cfg, nil)
	if worker.KindOf(err) != worker.NotFound || !strings.Contains(err.Error(), "s3://data/elsewhere") {
		t.Errorf("Open of a prefix without manifest = %v, want NotFound naming it", err)
	}
	_, err = worker.Open(testCtx(t), "s3://missing-bucket/ds", cfg, nil)
	if worker.KindOf(err) != worker.NotFound || !strings.Contains(err.Error(), "s3://missing-bucket/ds") {
		t.Errorf("Open of a missing bucket = %v, want NotFound naming it", err)
	}
}

// TestFaults reads every chunk through a proxy answering SlowDown and
// resetting connections: the samples are exactly those written. Then,
// with every read faulted, a chunk fails Unavailable instead of hanging.
func TestFaults(t *testing.T) {
	d := dataset{shards: 3, samples: 40, perChunk: 8, compression: manifest.CompressionNone, maxField: 6000}
	srv := minioDataset(t, d)
	p := faultproxy.Start(t, faultproxy.Config{Target: srv.Endpoint, SlowDownRate: 0.2, ResetRate: 0.2, Seed: 7})
	cfg := s3Config(p.URL, srv)
	cfg.PartSize = 8 << 10 // many GETs per chunk
	cfg.RetryBase, cfg.RetryMax = time.Millisecond, 10*time.Millisecond
	cfg.MaxAttempts = 20 // 0.4^20: no part runs out at this fault rate
	cfg.MemoryCacheBytes = -1
	checkAll(t, open(t, "s3://data/ds", cfg), d)
	st := p.Stats()
	if st.SlowDowns == 0 || st.Resets == 0 {
		t.Fatalf("proxy stats %+v: faults not injected", st)
	}
	t.Logf("proxy: %+v", st)

	p.SetRates(1, 0)
	cfg.MaxAttempts = 4
	r := open(t, "s3://data/ds", cfg)
	ctx, cancel := context.WithTimeout(testCtx(t), 20*time.Second)
	defer cancel()
	_, err := r.Chunk(ctx, 2, 3)
	var e *worker.Error
	if !errors.As(err, &e) || e.Kind != worker.Unavailable || !strings.Contains(err.Error(), "SlowDown") {
		t.Fatalf("Chunk with every GET throttled = %v, want Unavailable mentioning SlowDown", err)
	}
	if ctx.Err() != nil {
		t.Fatal("Chunk only returned at the test's deadline")
	}
	sh := r.Manifest().Shards[2]
	if e.Path != sh.Path || e.Shard != 2 {
		t.Errorf("error names %s (shard %d), want %s (2)", e.Path, e.Shard, sh.Path)
	}
}
