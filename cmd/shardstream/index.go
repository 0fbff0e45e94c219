package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/shardstream/shardstream/internal/cli"
	"github.com/shardstream/shardstream/internal/progress"
	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store"
	"github.com/shardstream/shardstream/store/storeuri"
	"github.com/shardstream/shardstream/wds"
)

// indexFlags are index's command line.
type indexFlags struct {
	data        string
	chunkSize   string
	compression string
	parallel    int
	overwrite   bool
	s3          s3Flags
}

func (f *indexFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.overwrite, "overwrite", false, "replace a manifest.json already at --data")
	fs.StringVar(&f.data, "data", "", "dataset root holding *.tar and *.tar.zst shards: a directory or s3://bucket/prefix (required)")
	fs.StringVar(&f.chunkSize, "chunk-size", "8MiB", "raw size after which a chunk ends at the next sample boundary (zstd: at the next frame that ends on one)")
	fs.StringVar(&f.compression, "compression", "auto", "shard compression: auto (by name: *.tar.zst is zstd, *.tar none), zstd or none (every shard)")
	fs.IntVar(&f.parallel, "parallel", 4, "shards indexed at once (each reads its shard once, start to end)")
	f.s3.register(fs)
}

func runIndex(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f indexFlags
	fs := newFlagSet("index", stderr)
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if f.data == "" {
		return cli.Usage("index: --data is required")
	}
	if f.parallel < 1 {
		return cli.Usage(fmt.Sprintf("index: --parallel %d < 1", f.parallel))
	}
	comp := f.compression
	switch comp {
	case "auto":
		comp = "" // IndexShard: by name
	case manifest.CompressionZstd, manifest.CompressionNone:
	default:
		return cli.Usage(fmt.Sprintf("index: --compression %q: want auto, zstd or none", f.compression))
	}
	chunkSize, err := parseSize(f.chunkSize)
	if err != nil || chunkSize == 0 {
		return cli.Usage(fmt.Sprintf("index: --chunk-size %q: want a size like 8MiB", f.chunkSize))
	}
	start := time.Now()
	st, err := storeuri.Open(ctx, f.data, f.s3.config())
	if err != nil {
		return err
	}
	if _, err := st.Stat(ctx, manifest.FileName); err == nil && !f.overwrite {
		return fmt.Errorf("index: %s already has a %s; pass --overwrite to replace it", f.data, manifest.FileName)
	}
	infos, err := st.List(ctx, "")
	if err != nil {
		return err
	}
	var paths []string
	for _, in := range infos {
		if strings.HasSuffix(in.Path, ".tar") || strings.HasSuffix(in.Path, ".tar.zst") {
			paths = append(paths, in.Path)
		}
	}
	if len(paths) == 0 {
		return fmt.Errorf("index: no *.tar or *.tar.zst objects under %s", f.data)
	}
	shards, err := indexShards(ctx, st, paths, comp, chunkSize, f.parallel, progress.New(stderr, "index", start))
	if err != nil {
		return fmt.Errorf("index %s: %w", f.data, err)
	}
	m := &manifest.Manifest{Version: manifest.Version, Shards: shards}
	if err := m.Validate(); err != nil {
		return fmt.Errorf("index %s: %w", f.data, err)
	}
	data, err := m.Marshal()
	if err != nil {
		return err
	}
	if err := st.Write(ctx, manifest.FileName, bytes.NewReader(data)); err != nil {
		return err
	}
	var chunks int
	for _, sh := range shards {
		chunks += len(sh.Chunks)
	}
	elapsed := time.Since(start)
	fmt.Fprintf(stdout, "indexed %d shards: %d samples, %d chunks, %d bytes, in %s (%.1f MB/s)\n",
		len(shards), m.TotalSamples(), chunks, m.TotalBytes(), elapsed.Round(time.Millisecond), float64(m.TotalBytes())/1e6/elapsed.Seconds())
	return nil
}

// indexShards indexes the shards at paths, parallel at once, and returns
// their entries in the order of paths; the first error stops the rest.
// compression "" picks each shard's by its name.
func indexShards(ctx context.Context, st store.Store, paths []string, compression string, chunkSize int64, parallel int, prog *progress.Bar) ([]manifest.Shard, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	out := make([]manifest.Shard, len(paths))
	var (
		mu              sync.Mutex
		firstErr        error
		done            int64
		samples, stored int64
		wg              sync.WaitGroup
		work            = make(chan int)
	)
	for range min(parallel, len(paths)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				sh, err := wds.IndexShard(ctx, st, paths[i], compression, chunkSize)
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
					cancel()
				}
				if err == nil {
					out[i] = sh
					done++
					samples += sh.Samples
					stored += sh.Size
					prog.Update(done, samples, stored)
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for i := range paths {
		select {
		case work <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	prog.Done()
	if firstErr != nil {
		return nil, firstErr
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return out, nil
}
