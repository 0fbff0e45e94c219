package wds

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime"

	"github.com/klauspost/compress/zstd"

	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store"
)

// DefaultShardSize is the stored shard size WriteDataset aims at when
// asked for 0: large enough that per-object costs (a GET's first byte, a
// manifest entry) vanish, small enough to shuffle shards across ranks.
const DefaultShardSize = 256 << 20

// DatasetOptions configures WriteDataset. Zero values mean defaults.
type DatasetOptions struct {
	// ShardSize is the stored size in bytes after which a shard ends at
	// the next sample boundary. Default DefaultShardSize.
	ShardSize int64
	// ChunkSize is the raw size in bytes after which a chunk ends at the
	// next sample boundary. Default DefaultChunkSize.
	ChunkSize int64
	// Compression is manifest.CompressionZstd (the default) or
	// CompressionNone.
	Compression string
	// Progress, if set, is called after every sample with the shards
	// finished, samples written and bytes stored so far (the open shard's
	// bytes estimated). It runs on WriteDataset's goroutine: keep it cheap.
	Progress func(shards, samples, bytes int64)
}

func (o *DatasetOptions) validate() error {
	if o.ShardSize < 0 {
		return fmt.Errorf("wds: DatasetOptions.ShardSize %d, want >= 0", o.ShardSize)
	}
	if o.ChunkSize < 0 {
		return fmt.Errorf("wds: DatasetOptions.ChunkSize %d, want >= 0", o.ChunkSize)
	}
	if o.ShardSize == 0 {
		o.ShardSize = DefaultShardSize
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	switch o.Compression {
	case "":
		o.Compression = manifest.CompressionZstd
	case manifest.CompressionZstd, manifest.CompressionNone:
	default:
		return fmt.Errorf("wds: DatasetOptions.Compression %q, want %q or %q", o.Compression, manifest.CompressionZstd, manifest.CompressionNone)
	}
	return nil
}

// ShardName is the path of shard i of a dataset WriteDataset writes.
func ShardName(i int, compression string) string {
	if compression == manifest.CompressionZstd {
		return fmt.Sprintf("shard-%06d.tar.zst", i)
	}
	return fmt.Sprintf("shard-%06d.tar", i)
}

// WriteDataset writes the samples next returns (until it reports false)
// into shards shard-000000.tar[.zst], … of about opts.ShardSize each,
// then the manifest, last, so that a dataset with a manifest is complete.
// Each shard streams into st.Write: memory stays at about one chunk plus
// the store's upload buffer, whatever the shard size.
func WriteDataset(ctx context.Context, st store.Store, next func() (Sample, bool, error), opts DatasetOptions) (*manifest.Manifest, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	// Frames compress in parallel, one per core: one core compresses
	// about 200 MB/s of text at the default level (docs/format.md).
	conc := runtime.GOMAXPROCS(0)
	var enc *zstd.Encoder
	if opts.Compression == manifest.CompressionZstd {
		var err error
		if enc, err = newEncoder(conc); err != nil {
			return nil, err
		}
		defer enc.Close()
	}
	m := &manifest.Manifest{Version: manifest.Version, Shards: []manifest.Shard{}}
	var samples, stored int64
	var open *openShard
	defer func() {
		if open != nil { // an error ended the loop: stop the upload
			open.abort(fmt.Errorf("wds: dataset write stopped"))
		}
	}()
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		s, ok, err := next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		if open == nil {
			open = startShard(ctx, st, ShardName(len(m.Shards), opts.Compression), opts.Compression, opts.ChunkSize, enc, conc)
		}
		if err := open.sw.WriteSample(s); err != nil {
			return nil, fmt.Errorf("%s: %w", open.path, err)
		}
		samples++
		if open.sw.Size() >= opts.ShardSize {
			sh, err := open.finish(ctx, st)
			open = nil
			if err != nil {
				return nil, err
			}
			m.Shards = append(m.Shards, sh)
			stored += sh.Size
		}
		if opts.Progress != nil {
			var cur int64
			if open != nil {
				cur = open.sw.Size()
			}
			opts.Progress(int64(len(m.Shards)), samples, stored+cur)
		}
	}
	if open != nil {
		sh, err := open.finish(ctx, st)
		open = nil
		if err != nil {
			return nil, err
		}
		m.Shards = append(m.Shards, sh)
		stored += sh.Size
		if opts.Progress != nil {
			opts.Progress(int64(len(m.Shards)), samples, stored)
		}
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("wds: wrote an invalid manifest: %w", err)
	}
	data, err := m.Marshal()
	if err != nil {
		return nil, err
	}
	if err := st.Write(ctx, manifest.FileName, bytes.NewReader(data)); err != nil {
		return nil, err
	}
	return m, nil
}

// openShard is a shard being written: a ShardWriter feeding a pipe that
// an upload goroutine (owned here, ended by finish or abort) drains into
// st.Write.
type openShard struct {
	path string
	sw   *ShardWriter
	pw   *io.PipeWriter
	done chan error
}

func startShard(ctx context.Context, st store.Store, path, comp string, chunkSize int64, enc *zstd.Encoder, conc int) *openShard {
	pr, pw := io.Pipe()
	o := &openShard{path: path, pw: pw, done: make(chan error, 1)}
	o.sw = newShardWriter(pw, comp, chunkSize, enc, conc)
	go func() {
		err := st.Write(ctx, path, pr)
		pr.CloseWithError(fmt.Errorf("upload of %s ended: %v", path, err)) // unblocks the writer if Write returned early
		o.done <- err
	}()
	return o
}

// finish closes the shard, waits for its upload and returns its manifest
// entry, ETag included where the store has one.
func (o *openShard) finish(ctx context.Context, st store.Store) (manifest.Shard, error) {
	sh, err := o.sw.Close()
	if err != nil {
		o.abort(err)
		return manifest.Shard{}, fmt.Errorf("%s: %w", o.path, err)
	}
	o.pw.Close()
	if err := <-o.done; err != nil {
		return manifest.Shard{}, fmt.Errorf("wds: write %s: %w", o.path, err)
	}
	info, err := st.Stat(ctx, o.path)
	if err != nil {
		return manifest.Shard{}, fmt.Errorf("wds: %w", err)
	}
	if info.Size != sh.Size {
		return manifest.Shard{}, fmt.Errorf("wds: %s is %d bytes in the store, wrote %d", o.path, info.Size, sh.Size)
	}
	sh.Path, sh.ETag = o.path, info.ETag
	return sh, nil
}

// abort makes the upload fail (a store never keeps a partial object from
// a reader that errors) and waits for it and for the frames in flight.
func (o *openShard) abort(err error) {
	o.pw.CloseWithError(err)
	o.sw.Close() // fails on the closed pipe; drains the frames in flight
	<-o.done
}
