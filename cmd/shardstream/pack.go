package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/shardstream/shardstream/internal/cli"
	"github.com/shardstream/shardstream/internal/progress"
	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/pack"
	"github.com/shardstream/shardstream/store"
	"github.com/shardstream/shardstream/store/s3store"
	"github.com/shardstream/shardstream/store/storeuri"
	"github.com/shardstream/shardstream/wds"
)

// packFlags are pack's command line.
type packFlags struct {
	input, output        string
	shardSize, chunkSize string
	compress             string
	overwrite            bool
	s3                   s3Flags
}

func (f *packFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&f.overwrite, "overwrite", false, "write over a dataset already at --output (its manifest.json); until the new manifest is written, the dataset's manifest says it is being rewritten, so readers refuse it rather than read new shards through old indexes")
	fs.StringVar(&f.input, "input", "", "directory of files to pack (required); a file's path up to the first dot of its base name is its sample key, the rest its field")
	fs.StringVar(&f.output, "output", "", "dataset root to write: a directory (created if missing) or s3://bucket/prefix (required)")
	fs.StringVar(&f.shardSize, "shard-size", "256MiB", "stored size after which a shard ends (64MiB, 1GB, 512k, bytes)")
	fs.StringVar(&f.chunkSize, "chunk-size", "8MiB", "raw size after which a chunk (the unit of a ranged read, one zstd frame) ends")
	fs.StringVar(&f.chunkSize, "frame-size", "8MiB", "the same as --chunk-size (with zstd a chunk is one frame)")
	fs.StringVar(&f.compress, "compress", "zstd", "shard compression: zstd (seekable frames) or none")
	f.s3.register(fs)
}

func runPack(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f packFlags
	fs := newFlagSet("pack", stderr)
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if f.input == "" || f.output == "" {
		return cli.Usage("pack: --input and --output are required")
	}
	opts := wds.DatasetOptions{Compression: f.compress}
	if f.compress != manifest.CompressionZstd && f.compress != manifest.CompressionNone {
		return cli.Usage(fmt.Sprintf("pack: --compress %q: want zstd or none", f.compress))
	}
	var err error
	if opts.ShardSize, err = parseSize(f.shardSize); err != nil || opts.ShardSize == 0 {
		return cli.Usage(fmt.Sprintf("pack: --shard-size %q: want a size like 256MiB", f.shardSize))
	}
	if opts.ChunkSize, err = parseSize(f.chunkSize); err != nil || opts.ChunkSize == 0 {
		return cli.Usage(fmt.Sprintf("pack: --chunk-size %q: want a size like 8MiB", f.chunkSize))
	}
	start := time.Now()
	files, skipped, err := pack.List(f.input, localDir(f.output))
	if err != nil {
		return err
	}
	if skipped > 0 {
		fmt.Fprintf(stderr, "pack: skipped %d hidden or non-regular files\n", skipped)
	}
	if len(files) == 0 {
		return fmt.Errorf("pack: no files under %s", f.input)
	}
	st, err := openOutput(ctx, f.output, f.s3.config())
	if err != nil {
		return err
	}
	if _, err := st.Stat(ctx, manifest.FileName); err == nil {
		if !f.overwrite {
			return fmt.Errorf("pack: %s already holds a dataset (%s); pass --overwrite to replace it", f.output, manifest.FileName)
		}
		fmt.Fprintf(stderr, "pack: replacing the dataset at %s (shards beyond the new ones stay, unlisted)\n", f.output)
		// The shards are rewritten in place: until the new manifest is
		// written, the old one would index new bytes. A tombstone makes a
		// reader meanwhile, or after a pack that died, refuse the dataset.
		tomb, err := manifest.Tombstone(fmt.Sprintf("shardstream pack --overwrite from %s, started %s", f.input, start.UTC().Format(time.RFC3339)))
		if err == nil {
			err = st.Write(ctx, manifest.FileName, bytes.NewReader(tomb))
		}
		if err != nil {
			return fmt.Errorf("pack: mark %s as being rewritten: %w", f.output, err)
		}
	}
	prog := progress.New(stderr, "pack", start)
	opts.Progress = prog.Update
	m, inBytes, err := pack.Write(ctx, st, files, opts)
	prog.Done()
	if err != nil {
		return fmt.Errorf("pack %s into %s: %w", f.input, f.output, err)
	}
	elapsed := time.Since(start)
	fmt.Fprintf(stdout, "packed %d samples (%d files, %d bytes) into %d shards, %d bytes, in %s (%.1f MB/s of input)\n",
		m.TotalSamples(), len(files), inBytes, len(m.Shards), m.TotalBytes(), elapsed.Round(time.Millisecond), float64(inBytes)/1e6/elapsed.Seconds())
	return nil
}

// localDir is the directory of a local dataset uri, "" for other stores.
func localDir(uri string) string {
	if dir, ok := strings.CutPrefix(uri, "file://"); ok {
		return dir
	}
	if strings.Contains(uri, "://") {
		return ""
	}
	return uri
}

// openOutput opens a dataset root for writing, creating a local directory
// if it is missing.
func openOutput(ctx context.Context, uri string, cfg s3store.Config) (store.Store, error) {
	if dir := localDir(uri); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
	}
	return storeuri.Open(ctx, uri, cfg)
}
