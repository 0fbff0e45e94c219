package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shardstream/shardstream/manifest"
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
	s3                   s3Flags
}

func (f *packFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.input, "input", "", "directory of files to pack (required); a file's path up to the first dot of its base name is its sample key, the rest its field")
	fs.StringVar(&f.output, "output", "", "dataset root to write: a directory (created if missing) or s3://bucket/prefix (required)")
	fs.StringVar(&f.shardSize, "shard-size", "256MiB", "stored size after which a shard ends (64MiB, 1GB, 512k, bytes)")
	fs.StringVar(&f.chunkSize, "chunk-size", "8MiB", "raw size after which a chunk (the unit of a ranged read, one zstd frame) ends")
	fs.StringVar(&f.chunkSize, "frame-size", "8MiB", "the same as --chunk-size (with zstd a chunk is one frame)")
	fs.StringVar(&f.compress, "compress", "zstd", "shard compression: zstd (seekable frames) or none")
	f.s3.register(fs)
}

// packFile is one input file: its path on disk and its place in a sample.
type packFile struct {
	path       string
	key, field string
	size       int64 // at listing time, for the read-ahead budget
}

// Read-ahead of pack's input: files are read by packReaders goroutines
// ahead of the writer, up to packAheadBytes (and packAheadSamples) in
// memory, so that per-file latency (network file systems, cold disks)
// overlaps the compression.
const (
	packReaders      = 8
	packAheadBytes   = 256 << 20
	packAheadSamples = 256
)

// loader reads the samples of a sorted file list ahead of their use. Its
// goroutines end when all samples are read or ctx ends; wait waits for
// them.
type loader struct {
	queue    chan chan loaded // samples in order, each filled when read
	freed    chan struct{}    // signalled when next hands a sample over
	inflight atomic.Int64     // bytes read ahead and not handed over
	wg       sync.WaitGroup
}

type loaded struct {
	s    wds.Sample
	size int64
	err  error
}

func startLoader(ctx context.Context, files []packFile, readers int, budget int64) *loader {
	ld := &loader{queue: make(chan chan loaded, packAheadSamples), freed: make(chan struct{}, 1)}
	ld.wg.Add(1)
	go func() {
		defer ld.wg.Done()
		defer close(ld.queue)
		sem := make(chan struct{}, readers)
		for i := 0; i < len(files); {
			j, size := i, int64(0)
			for ; j < len(files) && files[j].key == files[i].key; j++ {
				size += files[j].size
			}
			group := files[i:j]
			i = j
			// A sample larger than the budget goes alone.
			for ld.inflight.Load() > 0 && ld.inflight.Load()+size > budget {
				select {
				case <-ld.freed:
				case <-ctx.Done():
					return
				}
			}
			ch := make(chan loaded, 1)
			select {
			case ld.queue <- ch:
			case <-ctx.Done():
				return
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				ch <- loaded{err: ctx.Err()}
				return
			}
			ld.inflight.Add(size)
			ld.wg.Add(1)
			go func() {
				defer ld.wg.Done()
				defer func() { <-sem }()
				ch <- loadSample(group, size)
			}()
		}
	}()
	return ld
}

// loadSample reads the files of one sample.
func loadSample(group []packFile, size int64) loaded {
	l := loaded{s: wds.Sample{Key: group[0].key}, size: size}
	for _, f := range group {
		data, err := os.ReadFile(f.path)
		if err != nil {
			l.err = fmt.Errorf("pack: %w", err)
			return l
		}
		l.s.Fields = append(l.s.Fields, wds.Field{Name: f.field, Data: data})
	}
	return l
}

// next returns the next sample in order; false when all are read.
func (ld *loader) next(ctx context.Context) (wds.Sample, bool, error) {
	var ch chan loaded
	select {
	case c, ok := <-ld.queue:
		if !ok {
			return wds.Sample{}, false, ctx.Err()
		}
		ch = c
	case <-ctx.Done():
		return wds.Sample{}, false, ctx.Err()
	}
	var l loaded
	select {
	case l = <-ch:
	case <-ctx.Done():
		return wds.Sample{}, false, ctx.Err()
	}
	ld.inflight.Add(-l.size)
	select {
	case ld.freed <- struct{}{}:
	default:
	}
	if l.err != nil {
		return wds.Sample{}, false, l.err
	}
	return l.s, true, nil
}

// wait waits for the loader's goroutines; cancel its ctx first to stop it
// early.
func (ld *loader) wait() { ld.wg.Wait() }

func runPack(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f packFlags
	fs := newFlagSet("pack", stderr)
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if f.input == "" || f.output == "" {
		return usageError{"pack: --input and --output are required"}
	}
	opts := wds.DatasetOptions{Compression: f.compress}
	if f.compress != manifest.CompressionZstd && f.compress != manifest.CompressionNone {
		return usageError{fmt.Sprintf("pack: --compress %q: want zstd or none", f.compress)}
	}
	var err error
	if opts.ShardSize, err = parseSize(f.shardSize); err != nil || opts.ShardSize == 0 {
		return usageError{fmt.Sprintf("pack: --shard-size %q: want a size like 256MiB", f.shardSize)}
	}
	if opts.ChunkSize, err = parseSize(f.chunkSize); err != nil || opts.ChunkSize == 0 {
		return usageError{fmt.Sprintf("pack: --chunk-size %q: want a size like 8MiB", f.chunkSize)}
	}
	start := time.Now()
	files, skipped, err := listInput(f.input, localDir(f.output))
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
		fmt.Fprintf(stderr, "pack: replacing the dataset at %s (shards beyond the new ones stay, unlisted)\n", f.output)
	}
	prog := newProgress(stderr, "pack", start)
	opts.Progress = prog.update
	ctx, cancel := context.WithCancel(ctx)
	ld := startLoader(ctx, files, packReaders, packAheadBytes)
	defer func() {
		cancel()
		ld.wait()
	}()
	var inBytes int64
	next := func() (wds.Sample, bool, error) {
		s, ok, err := ld.next(ctx)
		for _, f := range s.Fields {
			inBytes += int64(len(f.Data))
		}
		return s, ok, err
	}
	m, err := wds.WriteDataset(ctx, st, next, opts)
	prog.done()
	if err != nil {
		return fmt.Errorf("pack %s into %s: %w", f.input, f.output, err)
	}
	elapsed := time.Since(start)
	fmt.Fprintf(stdout, "packed %d samples (%d files, %d bytes) into %d shards, %d bytes, in %s (%.1f MB/s of input)\n",
		m.TotalSamples(), len(files), inBytes, len(m.Shards), m.TotalBytes(), elapsed.Round(time.Millisecond), float64(inBytes)/1e6/elapsed.Seconds())
	return nil
}

// listInput returns the regular files under dir (symbolic links followed
// to files), sorted by sample key and field so that a sample's files are
// consecutive, and how many hidden (dot) or non-regular entries it
// skipped. The directory skip (pack's output, when inside dir) is left
// out.
func listInput(dir, skip string) ([]packFile, int, error) {
	var files []packFile
	skipped := 0
	if skip != "" {
		skip, _ = filepath.Abs(skip)
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("pack: %w", err)
		}
		if d.IsDir() && skip != "" {
			if abs, _ := filepath.Abs(p); abs == skip {
				return fs.SkipDir
			}
		}
		if p != dir && strings.HasPrefix(d.Name(), ".") {
			skipped++
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			fi, err := os.Stat(p) // a link to a regular file counts
			if err != nil || !fi.Mode().IsRegular() {
				skipped++
				return nil
			}
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return fmt.Errorf("pack: %w", err)
		}
		rel = filepath.ToSlash(rel)
		key, field := wds.SplitName(rel)
		if wds.EntryName(key, field) != rel {
			return fmt.Errorf("pack: %s: a name ending in a dot cannot be stored as a sample field", p)
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("pack: %w", err)
		}
		files = append(files, packFile{path: p, key: key, field: field, size: info.Size()})
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	sort.Slice(files, func(i, j int) bool {
		if files[i].key != files[j].key {
			return files[i].key < files[j].key
		}
		return files[i].field < files[j].field
	})
	return files, skipped, nil
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

// progress reports a long write or index on stderr: a bar redrawn in
// place on a terminal, one line per shard otherwise.
type progress struct {
	w      io.Writer
	what   string
	tty    bool
	start  time.Time
	drawn  time.Time
	shards int64
	line   bool
}

func newProgress(w io.Writer, what string, start time.Time) *progress {
	p := &progress{w: w, what: what, start: start}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

func (p *progress) update(shards, samples, bytes int64) {
	now := time.Now()
	rate := float64(bytes) / 1e6 / max(now.Sub(p.start).Seconds(), 1e-9)
	if p.tty {
		if now.Sub(p.drawn) < 100*time.Millisecond && shards == p.shards {
			return
		}
		p.drawn, p.shards, p.line = now, shards, true
		fmt.Fprintf(p.w, "\r%s: %d shards, %d samples, %.1f MB, %.1f MB/s   ", p.what, shards, samples, float64(bytes)/1e6, rate)
		return
	}
	if shards != p.shards {
		p.shards = shards
		fmt.Fprintf(p.w, "%s: %d shards done, %d samples, %.1f MB, %.1f MB/s\n", p.what, shards, samples, float64(bytes)/1e6, rate)
	}
}

// done ends the bar's line on a terminal.
func (p *progress) done() {
	if p.tty && p.line {
		fmt.Fprintln(p.w)
	}
}
