package worker_test

import (
	"context"
	"io"
	"sync"
	"testing"

	"github.com/shardstream/shardstream/internal/miniotest"
	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store/storeuri"
	"github.com/shardstream/shardstream/worker"
)

// The benchmarks read a 64 MiB dataset from a real MinIO on loopback,
// every chunk once per iteration, 16 GETs in flight: plain ranged GETs
// discarding the bytes, and the Reader (GET, decompress, parse). Their
// MB/s ratio is the read path's overhead; `shardstream bench-read` does
// the same at larger sizes.
var benchData = map[string]dataset{
	manifest.CompressionNone: {shards: 4, samples: 128, perChunk: 64, compression: manifest.CompressionNone, maxField: 256 << 10},
	manifest.CompressionZstd: {shards: 4, samples: 128, perChunk: 64, compression: manifest.CompressionZstd, maxField: 256 << 10},
}

func BenchmarkPlainGET(b *testing.B) {
	srv, m := benchDataset(b, manifest.CompressionNone)
	st, err := storeuri.Open(context.Background(), "s3://data/ds", srv.S3Config())
	if err != nil {
		b.Fatal(err)
	}
	const part = 8 << 20
	type rng struct {
		path   string
		off, n int64
	}
	var parts []rng
	for _, s := range m.Shards {
		for off := int64(0); off < s.Size; off += part {
			parts = append(parts, rng{s.Path, off, min(part, s.Size-off)})
		}
	}
	b.SetBytes(m.TotalBytes())
	for b.Loop() {
		parallel(b, len(parts), 16, func(i int) error {
			rc, err := st.ReadRange(context.Background(), parts[i].path, parts[i].off, parts[i].n)
			if err != nil {
				return err
			}
			defer rc.Close()
			_, err = io.Copy(io.Discard, rc)
			return err
		})
	}
}

func BenchmarkReader(b *testing.B) {
	for _, comp := range []string{manifest.CompressionNone, manifest.CompressionZstd} {
		b.Run(comp, func(b *testing.B) {
			srv, m := benchDataset(b, comp)
			cfg := worker.Config{S3: srv.S3Config(), MemoryCacheBytes: -1}
			r, err := worker.Open(context.Background(), "s3://data/ds", cfg, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer r.Close()
			type ref struct{ s, c int }
			var refs []ref
			for s, sh := range m.Shards {
				for c := range sh.Chunks {
					refs = append(refs, ref{s, c})
				}
			}
			b.SetBytes(m.TotalBytes())
			for b.Loop() {
				parallel(b, len(refs), 16, func(i int) error {
					ch, err := r.Chunk(context.Background(), refs[i].s, refs[i].c)
					ch.Release()
					return err
				})
			}
		})
	}
}

func benchDataset(b *testing.B, comp string) (*miniotest.Server, *manifest.Manifest) {
	b.Helper()
	srv := miniotest.Start(b)
	srv.CreateBucket(b, "data")
	st, err := storeuri.Open(context.Background(), "s3://data/ds", srv.S3Config())
	if err != nil {
		b.Fatal(err)
	}
	return srv, benchData[comp].build(b, st)
}

// parallel runs job(0) … job(n-1) on conc goroutines.
func parallel(b *testing.B, n, conc int, job func(i int) error) {
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for i := range jobs {
				if err := job(i); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
}
