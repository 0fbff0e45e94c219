package worker_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardstream/shardstream/internal/datasettest"
	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store/memstore"
	"github.com/shardstream/shardstream/worker"
)

// pooled is a dataset whose chunks (about 4 × 100 KiB) are large enough
// for the buffer pool.
func pooled(comp string) dataset {
	return dataset{shards: 3, samples: 24, perChunk: 4, compression: comp, maxField: 200 << 10}
}

// checkChunk compares a chunk's samples with what the builder wrote.
func checkChunk(s int, ch *worker.Chunk, maxField int) error {
	for i, got := range ch.Samples {
		want := sampleOf(s, int(ch.FirstSample)+i, maxField)
		ok := got.Key == want.Key && len(got.Fields) == len(want.Fields)
		for f := 0; ok && f < len(want.Fields); f++ {
			ok = got.Fields[f].Name == want.Fields[f].Name && bytes.Equal(got.Fields[f].Data, want.Fields[f].Data)
		}
		if !ok { // cmp.Diff of 100 KiB fields takes minutes under -race
			return fmt.Errorf("shard %d sample %d: got key %q with %d fields, want %q: contents differ", s, int(ch.FirstSample)+i, got.Key, len(got.Fields), want.Key)
		}
	}
	return nil
}

// Released chunks give their buffers to later chunks; unreleased ones do
// not (they are left to the GC), and neither changes what is read.
func TestReleaseReusesBuffers(t *testing.T) {
	for _, comp := range []string{manifest.CompressionNone, manifest.CompressionZstd} {
		t.Run(comp, func(t *testing.T) {
			st := memstore.New()
			d := pooled(comp)
			m := d.build(t, st)
			for _, release := range []bool{false, true} {
				reg := prometheus.NewRegistry()
				r := open(t, "mem://pool", worker.Config{Store: st, MemoryCacheBytes: -1, Registerer: reg})
				for s, sh := range m.Shards {
					for c := range sh.Chunks {
						ch, err := r.Chunk(testCtx(t), s, c)
						if err != nil {
							t.Fatal(err)
						}
						if err := checkChunk(s, ch, d.maxField); err != nil {
							t.Fatal(err)
						}
						if release {
							ch.Release()
						}
					}
				}
				reused := datasettest.MetricValue(t, reg, "shardstream_read_buffers_total", "pool")
				allocated := datasettest.MetricValue(t, reg, "shardstream_read_buffers_total", "new")
				t.Logf("release %v: %v buffers reused, %v allocated", release, reused, allocated)
				if release && reused < allocated {
					t.Errorf("releasing every chunk: %v buffers reused, %v allocated; want most reused", reused, allocated)
				}
				if !release && comp == manifest.CompressionNone && reused != 0 {
					t.Errorf("no chunk released, yet %v plain-tar buffers were reused", reused)
				}
			}
		})
	}
}

// Many callers hold chunks while others load, hit the cache, and evict:
// a chunk's samples never change until its holder releases it, whatever
// happens to the buffers of chunks released meanwhile.
func TestHeldChunksKeepTheirBytes(t *testing.T) {
	for _, comp := range []string{manifest.CompressionNone, manifest.CompressionZstd} {
		t.Run(comp, func(t *testing.T) {
			st := memstore.New()
			d := pooled(comp)
			m := d.build(t, st)
			reg := prometheus.NewRegistry()
			// A cache of about three chunks: hits, misses and evictions mix.
			r := open(t, "mem://held", worker.Config{Store: st, MemoryCacheBytes: 3 * 4 * 100 << 10, Registerer: reg, Concurrency: 4})
			ctx := testCtx(t)
			var wg sync.WaitGroup
			for g := range 8 {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(g), 0))
					type held struct {
						s  int
						ch *worker.Chunk
					}
					var hold []held
					for range 60 {
						s := rng.IntN(len(m.Shards))
						ch, err := r.Chunk(ctx, s, rng.IntN(len(m.Shards[s].Chunks)))
						if err != nil {
							t.Error(err)
							return
						}
						hold = append(hold, held{s, ch})
						if len(hold) > 3 { // check the oldest only now, after other loads
							h := hold[0]
							hold = hold[1:]
							if err := checkChunk(h.s, h.ch, d.maxField); err != nil {
								t.Error(err)
							}
							h.ch.Release()
						}
					}
					for _, h := range hold {
						if err := checkChunk(h.s, h.ch, d.maxField); err != nil {
							t.Error(err)
						}
						h.ch.Release()
					}
				})
			}
			wg.Wait()
			if reused := datasettest.MetricValue(t, reg, "shardstream_read_buffers_total", "pool"); reused == 0 {
				t.Error("no buffer was reused: the test did not exercise the pool")
			}
			// Every caller has released; Close releases the cache's.
			r.Close()
			if inUse := datasettest.MetricValue(t, reg, "shardstream_read_buffer_bytes"); inUse != 0 {
				t.Errorf("%v bytes of chunk buffers in use after every chunk was released and the Reader closed", inUse)
			}
		})
	}
}
