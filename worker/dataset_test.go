package worker_test

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/shardstream/shardstream/internal/datasettest"
	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store"
	"github.com/shardstream/shardstream/wds"
	"github.com/shardstream/shardstream/worker"
)

// dataset describes a test dataset; build writes it.
type dataset struct {
	shards, samples, perChunk int // samples per shard, samples per chunk
	compression               string
	maxField                  int // largest random field, bytes
}

// sampleOf is the expected content of sample i of shard s.
func sampleOf(s, i int, maxField int) worker.Sample {
	var seed [32]byte
	binary.LittleEndian.PutUint64(seed[:], uint64(s))
	binary.LittleEndian.PutUint64(seed[8:], uint64(i))
	rng := rand.NewChaCha8(seed)
	bin := make([]byte, 1+rand.New(rng).IntN(maxField))
	rng.Read(bin)
	return worker.Sample{
		Key: fmt.Sprintf("s%03d-%06d", s, i),
		Fields: []worker.Field{
			{Name: "bin", Data: bin},
			{Name: "cls", Data: []byte(fmt.Sprint((s*7 + i) % 10))},
		},
	}
}

// build writes the dataset's shards and manifest into st, plain tar (each
// chunk a run of whole entries) or zstd (each chunk one frame), and
// returns the manifest.
func (d dataset) build(t testing.TB, st store.Store) *manifest.Manifest {
	t.Helper()
	ctx := context.Background()
	m := &manifest.Manifest{Version: manifest.Version}
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	for s := range d.shards {
		var obj bytes.Buffer
		sh := manifest.Shard{Path: fmt.Sprintf("shards/shard-%04d.tar", s), Samples: int64(d.samples), Compression: d.compression}
		if d.compression == manifest.CompressionZstd {
			sh.Path += ".zst"
		}
		for first := 0; first < d.samples; first += d.perChunk {
			n := min(d.perChunk, d.samples-first)
			var raw bytes.Buffer
			tw := tar.NewWriter(&raw)
			for i := first; i < first+n; i++ {
				smp := sampleOf(s, i, d.maxField)
				for _, f := range smp.Fields {
					if err := tw.WriteHeader(&tar.Header{Name: smp.Key + "." + f.Name, Mode: 0o644, Size: int64(len(f.Data)), Typeflag: tar.TypeReg}); err != nil {
						t.Fatal(err)
					}
					tw.Write(f.Data)
				}
			}
			tw.Flush() // pads the last entry; no end-of-archive marker inside a chunk
			stored := raw.Bytes()
			if d.compression == manifest.CompressionZstd {
				stored = enc.EncodeAll(raw.Bytes(), nil)
			}
			sh.Chunks = append(sh.Chunks, manifest.Chunk{
				Offset: int64(obj.Len()), Size: int64(len(stored)), RawSize: int64(raw.Len()),
				FirstSample: int64(first), Samples: int64(n),
			})
			obj.Write(stored)
		}
		if d.compression == manifest.CompressionNone {
			obj.Write(make([]byte, 1024)) // the tar end-of-archive marker, after the last chunk
		}
		sh.Size = int64(obj.Len())
		if err := st.Write(ctx, sh.Path, bytes.NewReader(obj.Bytes())); err != nil {
			t.Fatal(err)
		}
		info, err := st.Stat(ctx, sh.Path)
		if err != nil {
			t.Fatal(err)
		}
		sh.ETag = info.ETag
		m.Shards = append(m.Shards, sh)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Write(ctx, manifest.FileName, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	return m
}

// buildWDS writes the dataset with wds.ShardWriter (chunks cut by raw
// size, zstd shards with their seek table), the way pack does.
func (d dataset) buildWDS(t testing.TB, st store.Store, chunkSize int64) *manifest.Manifest {
	t.Helper()
	sample := func(s, i int) wds.Sample { return sampleOf(s, i, d.maxField) }
	return datasettest.Write(t, st, d.shards, d.samples, sample, datasettest.Options{Compression: d.compression, ChunkSize: chunkSize, Prefix: "wds/"})
}
