package worker_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardstream/shardstream/internal/datasettest"
	"github.com/shardstream/shardstream/internal/leaktest"
	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store"
	"github.com/shardstream/shardstream/store/filestore"
	"github.com/shardstream/shardstream/store/memstore"
	"github.com/shardstream/shardstream/worker"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, uri string, cfg worker.Config) *worker.Reader {
	t.Helper()
	r, err := worker.Open(testCtx(t), uri, cfg, nil)
	if err != nil {
		t.Fatalf("Open(%s): %v", uri, err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// checkAll reads every chunk of the dataset and compares it with the
// samples the builder wrote.
func checkAll(t *testing.T, r *worker.Reader, d dataset) {
	t.Helper()
	ctx := testCtx(t)
	m := r.Manifest()
	if len(m.Shards) != d.shards {
		t.Fatalf("manifest has %d shards, want %d", len(m.Shards), d.shards)
	}
	for s, sh := range m.Shards {
		for c, mc := range sh.Chunks {
			ch, err := r.Chunk(ctx, s, c)
			if err != nil {
				t.Fatalf("Chunk(%d, %d): %v", s, c, err)
			}
			if ch.FirstSample != mc.FirstSample || int64(len(ch.Samples)) != mc.Samples {
				t.Fatalf("Chunk(%d, %d): first %d, %d samples; want %d, %d", s, c, ch.FirstSample, len(ch.Samples), mc.FirstSample, mc.Samples)
			}
			for i, got := range ch.Samples {
				want := sampleOf(s, int(mc.FirstSample)+i, d.maxField)
				if diff := cmp.Diff(want, got); diff != "" {
					t.Fatalf("Chunk(%d, %d) sample %d (-want +got):\n%s", s, c, i, diff)
				}
			}
		}
	}
}

func TestReadAllChunks(t *testing.T) {
	for _, comp := range []string{manifest.CompressionNone, manifest.CompressionZstd} {
		t.Run(comp, func(t *testing.T) {
			st := memstore.New()
			d := dataset{shards: 3, samples: 50, perChunk: 7, compression: comp, maxField: 6000}
			d.build(t, st)
			// Parts smaller than chunks: every chunk is several parallel GETs.
			r := open(t, "mem://test", worker.Config{Store: st, PartSize: 8192, Concurrency: 4})
			checkAll(t, r, d)
		})
	}
}

func TestLocalDir(t *testing.T) {
	dir := t.TempDir()
	st, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := dataset{shards: 2, samples: 20, perChunk: 5, compression: manifest.CompressionNone, maxField: 3000}
	d.build(t, st)
	checkAll(t, open(t, dir, worker.Config{}), d)
}

// TestLocalRewrittenMidEpoch: the local store has no ETag, but a shard
// replaced under the manifest with the same size (another process, so not
// through the reader's Store) is Changed on every read too.
func TestLocalRewrittenMidEpoch(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	st, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := dataset{shards: 2, samples: 20, perChunk: 5, compression: manifest.CompressionNone, maxField: 3000}
	m := d.build(t, st)
	r := open(t, dir, worker.Config{MemoryCacheBytes: -1})
	if _, err := r.Chunk(ctx, 1, 0); err != nil {
		t.Fatalf("Chunk(1, 0) before the rewrite: %v", err)
	}
	other, err := filestore.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Write(ctx, m.Shards[1].Path, bytes.NewReader(make([]byte, m.Shards[1].Size))); err != nil {
		t.Fatal(err)
	}
	for _, c := range []int{1, 0, 1} {
		if _, err := r.Chunk(ctx, 1, c); worker.KindOf(err) != worker.Changed || !errors.Is(err, store.ErrChanged) {
			t.Errorf("Chunk(1, %d) after a same-size rewrite = %v, want Changed", c, err)
		}
	}
	if _, err := r.Chunk(ctx, 0, 0); err != nil {
		t.Errorf("Chunk(0, 0), an untouched shard: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := testCtx(t)
	dir := t.TempDir()
	garbage := t.TempDir()
	os.WriteFile(filepath.Join(garbage, manifest.FileName), []byte("{not json"), 0o644)
	invalid := t.TempDir()
	os.WriteFile(filepath.Join(invalid, manifest.FileName), []byte(`{"version": 99}`), 0o644)
	big := t.TempDir()
	os.WriteFile(filepath.Join(big, manifest.FileName), bytes.Repeat([]byte(" "), 2000), 0o644)
	tests := []struct {
		uri  string
		cfg  worker.Config
		kind worker.Kind
	}{
		{filepath.Join(dir, "missing"), worker.Config{}, worker.NotFound},
		{dir, worker.Config{}, worker.NotFound}, // no manifest
		{garbage, worker.Config{}, worker.Corrupt},
		{invalid, worker.Config{}, worker.Corrupt},
		{big, worker.Config{MaxManifestBytes: 1000}, worker.Corrupt},
		{"ftp://x", worker.Config{}, worker.Other},
		{dir, worker.Config{PartSize: -1}, worker.Other},
	}
	for _, tt := range tests {
		_, err := worker.Open(ctx, tt.uri, tt.cfg, nil)
		if got := worker.KindOf(err); got != tt.kind {
			t.Errorf("Open(%s) = %v, kind %v; want kind %v", tt.uri, err, got, tt.kind)
			continue
		}
		if !strings.Contains(err.Error(), tt.uri) {
			t.Errorf("Open(%s) error %q does not name the uri", tt.uri, err)
		}
	}
}

// flaky wraps a store: the first failures ReadRange calls of ranged reads
// fail (503-like transient errors, alternately resets and short bodies),
// and calls are counted.
type flaky struct {
	store.Store
	failures atomic.Int64 // remaining failures; < 0 never fails
	reads    atomic.Int64
	stats    atomic.Int64
	block    chan struct{} // when set, reads wait for it to close
}

func (f *flaky) ReadRange(ctx context.Context, p string, off, n int64) (io.ReadCloser, error) {
	if p == manifest.FileName {
		return f.Store.ReadRange(ctx, p, off, n)
	}
	f.reads.Add(1)
	if f.block != nil {
		select {
		case <-f.block:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if left := f.failures.Add(-1); left >= 0 {
		if left%2 == 0 {
			return nil, fmt.Errorf("flaky: %w", syscall.ECONNRESET)
		}
		rc, err := f.Store.ReadRange(ctx, p, off, n)
		if err != nil {
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{io.LimitReader(rc, n/2), rc}, nil // a body cut short
	}
	return f.Store.ReadRange(ctx, p, off, n)
}

func (f *flaky) Stat(ctx context.Context, p string) (store.Info, error) {
	f.stats.Add(1)
	return f.Store.Stat(ctx, p)
}

func newFlaky(t *testing.T, d dataset, failures int64) *flaky {
	f := &flaky{Store: memstore.New()}
	f.failures.Store(failures)
	d.build(t, f.Store)
	return f
}

var small = dataset{shards: 2, samples: 30, perChunk: 10, compression: manifest.CompressionNone, maxField: 5000}

func TestRetries(t *testing.T) {
	f := newFlaky(t, small, 10)
	reg := prometheus.NewRegistry()
	r := open(t, "mem://flaky", worker.Config{Store: f, PartSize: 8192, RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond, Registerer: reg})
	checkAll(t, r, small)
	if got := f.failures.Load(); got >= 0 {
		t.Fatalf("%d injected failures left unused", got+1)
	}
	if got := datasettest.MetricValue(t, reg, "shardstream_read_retries_total"); got != 10 {
		t.Errorf("retries_total = %v, want 10", got)
	}
}

func TestRetriesExhausted(t *testing.T) {
	f := newFlaky(t, small, 1<<40)
	reg := prometheus.NewRegistry()
	r := open(t, "mem://flaky", worker.Config{Store: f, MaxAttempts: 3, RetryBase: time.Millisecond, RetryMax: 2 * time.Millisecond, Registerer: reg})
	start := time.Now()
	_, err := r.Chunk(testCtx(t), 1, 2)
	var e *worker.Error
	if !errors.As(err, &e) || e.Kind != worker.Unavailable || !errors.Is(err, worker.ErrRetriesExhausted) {
		t.Fatalf("Chunk = %v, want an Unavailable *Error", err)
	}
	sh := r.Manifest().Shards[1]
	if e.Shard != 1 || e.Path != sh.Path || e.Offset != sh.Chunks[2].Offset {
		t.Errorf("error names shard %d %s offset %d, want 1 %s %d", e.Shard, e.Path, e.Offset, sh.Path, sh.Chunks[2].Offset)
	}
	if !strings.Contains(err.Error(), sh.Path) || !strings.Contains(err.Error(), fmt.Sprint(sh.Chunks[2].Offset)) {
		t.Errorf("message %q lacks path or offset", err)
	}
	if got := f.reads.Load(); got != 3 {
		t.Errorf("%d attempts, want MaxAttempts 3", got)
	}
	if got := datasettest.MetricValue(t, reg, "shardstream_read_errors_total", "unavailable"); got != 1 {
		t.Errorf("errors_total{kind=unavailable} = %v, want 1", got)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestCanceled(t *testing.T) {
	f := newFlaky(t, small, 0)
	f.block = make(chan struct{}) // reads hang until cancelled
	r := open(t, "mem://flaky", worker.Config{Store: f})
	ctx, cancel := context.WithCancel(testCtx(t))
	errc := make(chan error, 1)
	go func() {
		_, err := r.Chunk(ctx, 0, 0)
		errc <- err
	}()
	for f.reads.Load() == 0 { // wait until the read is in flight
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; worker.KindOf(err) != worker.Canceled || !errors.Is(err, context.Canceled) {
		t.Errorf("Chunk after cancel = %v, want Canceled", err)
	}
}

func TestChangedAndMissing(t *testing.T) {
	ctx := testCtx(t)
	st := memstore.New()
	m := small.build(t, st)
	// Shard 0 rewritten with another size, shard 1 with the same size but
	// other bytes (the ETag tells).
	st.Write(ctx, m.Shards[0].Path, strings.NewReader("short"))
	other := make([]byte, m.Shards[1].Size)
	st.Write(ctx, m.Shards[1].Path, bytes.NewReader(other))
	r := open(t, "mem://changed", worker.Config{Store: st})
	for s := range 2 {
		_, err := r.Chunk(ctx, s, 1)
		if worker.KindOf(err) != worker.Changed || !errors.Is(err, worker.ErrChanged) || !strings.Contains(err.Error(), m.Shards[s].Path) {
			t.Errorf("Chunk(%d, 1) = %v, want Changed naming %s", s, err, m.Shards[s].Path)
		}
	}

	st2 := memstore.New()
	m2 := small.build(t, st2)
	gone := &deleting{Store: st2, gone: m2.Shards[1].Path}
	r2 := open(t, "mem://missing", worker.Config{Store: gone})
	_, err := r2.Chunk(ctx, 1, 0)
	if worker.KindOf(err) != worker.NotFound || !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Chunk of a missing shard = %v, want NotFound", err)
	}
	if _, err := r2.Chunk(ctx, 5, 0); worker.KindOf(err) != worker.Other {
		t.Errorf("Chunk(5, 0) of 2 shards = %v, want Other", err)
	}
	if _, err := r2.Chunk(ctx, 0, 99); worker.KindOf(err) != worker.Other {
		t.Errorf("Chunk(0, 99) = %v, want Other", err)
	}
}

// deleting is a store where one object is missing.
type deleting struct {
	store.Store
	gone string
}

func (d *deleting) ReadRange(ctx context.Context, p string, off, n int64) (io.ReadCloser, error) {
	if p == d.gone {
		return nil, fmt.Errorf("%s: %w", p, store.ErrNotFound)
	}
	return d.Store.ReadRange(ctx, p, off, n)
}

func (d *deleting) Stat(ctx context.Context, p string) (store.Info, error) {
	if p == d.gone {
		return store.Info{}, fmt.Errorf("%s: %w", p, store.ErrNotFound)
	}
	return d.Store.Stat(ctx, p)
}

func TestCorrupt(t *testing.T) {
	ctx := testCtx(t)
	st := memstore.New()
	m := small.build(t, st)
	// Same size, garbage in chunk 1; ETags cleared so the Stat check passes
	// and the decoder must notice.
	sh := m.Shards[0]
	rc, _ := st.ReadRange(ctx, sh.Path, 0, -1)
	data, _ := io.ReadAll(rc)
	for i := sh.Chunks[1].Offset; i < sh.Chunks[1].Offset+sh.Chunks[1].Size; i++ {
		data[i] = 0xAB
	}
	st.Write(ctx, sh.Path, bytes.NewReader(data))
	for i := range m.Shards {
		m.Shards[i].ETag = ""
	}
	buf, _ := m.Marshal()
	st.Write(ctx, manifest.FileName, bytes.NewReader(buf))
	r := open(t, "mem://corrupt", worker.Config{Store: st})
	if _, err := r.Chunk(ctx, 0, 0); err != nil {
		t.Fatalf("Chunk(0, 0), intact: %v", err)
	}
	_, err := r.Chunk(ctx, 0, 1)
	var e *worker.Error
	if !errors.As(err, &e) || e.Kind != worker.Corrupt || e.Offset != sh.Chunks[1].Offset || e.Path != sh.Path {
		t.Errorf("Chunk(0, 1) = %v, want Corrupt at %s offset %d", err, sh.Path, sh.Chunks[1].Offset)
	}
}

func TestSingleFlightAndMemoryCache(t *testing.T) {
	f := newFlaky(t, small, 0)
	f.block = make(chan struct{})
	r := open(t, "mem://sf", worker.Config{Store: f})
	ctx := testCtx(t)
	var wg sync.WaitGroup
	chunks := make([]*worker.Chunk, 8)
	for i := range chunks {
		wg.Go(func() {
			var err error
			if chunks[i], err = r.Chunk(ctx, 0, 0); err != nil {
				t.Error(err)
			}
		})
	}
	for f.reads.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	close(f.block)
	wg.Wait()
	if got := f.reads.Load(); got != 1 {
		t.Errorf("8 concurrent callers made %d reads, want 1", got)
	}
	for _, c := range chunks[1:] {
		if c != chunks[0] {
			t.Fatal("callers got different chunks")
		}
	}
	if _, err := r.Chunk(ctx, 0, 0); err != nil || f.reads.Load() != 1 {
		t.Errorf("cached chunk: err %v, reads %d, want 1", err, f.reads.Load())
	}
	if got := f.stats.Load(); got != 1 {
		t.Errorf("%d Stat calls for one shard, want 1", got)
	}
}

func TestMemoryCacheBound(t *testing.T) {
	f := newFlaky(t, small, 0)
	chunkBytes := f.mustManifest(t).Shards[0].Chunks[0].RawSize
	// Room for about two chunks.
	r := open(t, "mem://lru", worker.Config{Store: f, MemoryCacheBytes: 2*chunkBytes + chunkBytes/2})
	ctx := testCtx(t)
	for c := range 3 {
		if _, err := r.Chunk(ctx, 0, c); err != nil {
			t.Fatal(err)
		}
	}
	n := f.reads.Load()
	if _, err := r.Chunk(ctx, 0, 2); err != nil || f.reads.Load() != n {
		t.Errorf("most recent chunk not cached")
	}
	if _, err := r.Chunk(ctx, 0, 0); err != nil || f.reads.Load() != n+1 {
		t.Errorf("oldest chunk still cached past the bound (reads %d, want %d)", f.reads.Load(), n+1)
	}
	off := open(t, "mem://nocache", worker.Config{Store: f, MemoryCacheBytes: -1})
	n = f.reads.Load()
	off.Chunk(ctx, 0, 0)
	off.Chunk(ctx, 0, 0)
	if got := f.reads.Load() - n; got != 2 {
		t.Errorf("cache disabled: %d reads for 2 calls, want 2", got)
	}
}

func (f *flaky) mustManifest(t *testing.T) *manifest.Manifest {
	rc, err := f.Store.ReadRange(context.Background(), manifest.FileName, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	m, err := manifest.Read(rc, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestDiskCache(t *testing.T) {
	f := newFlaky(t, small, 0)
	dir := t.TempDir()
	cfg := worker.Config{Store: f, CacheDir: dir, MemoryCacheBytes: -1}
	checkAll(t, open(t, "mem://disk", cfg), small)
	n := f.reads.Load()
	// A new Reader (a restarted loader) reads everything from disk.
	checkAll(t, open(t, "mem://disk", cfg), small)
	if got := f.reads.Load(); got != n {
		t.Errorf("second pass made %d store reads, want 0", got-n)
	}
	// Flip a byte in every entry: each is detected and fetched again.
	files, _ := filepath.Glob(filepath.Join(dir, "*.chunk"))
	if len(files) != 6 {
		t.Fatalf("%d cache files, want 6", len(files))
	}
	for _, p := range files {
		b, _ := os.ReadFile(p)
		b[len(b)-1] ^= 1
		os.WriteFile(p, b, 0o644)
	}
	reg := prometheus.NewRegistry()
	cfg.Registerer = reg
	checkAll(t, open(t, "mem://disk", cfg), small)
	if got := f.reads.Load() - n; got != 6 {
		t.Errorf("after corrupting 6 entries: %d store reads, want 6", got)
	}
	if got := datasettest.MetricValue(t, reg, "shardstream_read_cache_requests_total", "disk", "corrupt"); got != 6 {
		t.Errorf("corrupt entries counted %v, want 6", got)
	}
	// A bound of about two chunks keeps at most two entries.
	bounded := t.TempDir()
	cfg = worker.Config{Store: f, CacheDir: bounded, CacheBytes: 2*f.mustManifest(t).Shards[0].Chunks[0].Size + 100, MemoryCacheBytes: -1}
	checkAll(t, open(t, "mem://disk", cfg), small)
	files, _ = filepath.Glob(filepath.Join(bounded, "*.chunk"))
	if len(files) > 2 {
		t.Errorf("bounded disk cache holds %d entries, want <= 2", len(files))
	}
}

// TestCloseEndsGoroutines checks that Chunk calls cancelled mid-fetch and
// Close leave no goroutine of the Reader behind.
func TestCloseEndsGoroutines(t *testing.T) {
	f := newFlaky(t, small, 0)
	f.block = make(chan struct{}) // fetches hang until their context ends
	base := runtime.NumGoroutine()
	r, err := worker.Open(testCtx(t), "mem://leak", worker.Config{Store: f}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(testCtx(t))
	var wg sync.WaitGroup
	for c := range 3 {
		wg.Go(func() {
			if _, err := r.Chunk(ctx, 0, c); worker.KindOf(err) != worker.Canceled {
				t.Errorf("Chunk(0, %d) with its context cancelled: %v, want Canceled", c, err)
			}
		})
	}
	for f.reads.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
	r.Close()
	leaktest.Wait(t, base)
}

// slow is a store whose ranged reads take a fixed time.
type slow struct {
	store.Store
	delay time.Duration
}

func (s *slow) ReadRange(ctx context.Context, p string, off, n int64) (io.ReadCloser, error) {
	if p != manifest.FileName {
		t := time.NewTimer(s.delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return s.Store.ReadRange(ctx, p, off, n)
}

// TestQueueingIsNotATimeout: with one GET slot and many callers, waiting
// for the slot takes far longer than PartTimeout, and no read fails.
func TestQueueingIsNotATimeout(t *testing.T) {
	st := &slow{Store: memstore.New(), delay: 40 * time.Millisecond}
	small.build(t, st.Store)
	r := open(t, "mem://slow", worker.Config{Store: st, Concurrency: 1, PartTimeout: 100 * time.Millisecond, MaxAttempts: 1, MemoryCacheBytes: -1})
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for s := range 2 {
		for c := range 3 {
			for range 2 { // 6 distinct reads of 40ms behind one slot: 240ms of queueing
				wg.Go(func() {
					if _, err := r.Chunk(ctx, s, c); err != nil {
						t.Errorf("Chunk(%d, %d): %v", s, c, err)
					}
				})
			}
		}
	}
	wg.Wait()
}

// Fetch says how many bytes each call read from the store: a chunk's stored
// size when the call fetched it, 0 when the memory or disk cache had it.
func TestFetchCountsStoreBytes(t *testing.T) {
	ctx := testCtx(t)
	st := memstore.New()
	d := dataset{shards: 2, samples: 12, perChunk: 4, compression: manifest.CompressionZstd, maxField: 3000}
	d.build(t, st)
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		cfg   worker.Config
		again int64 // what a second Fetch of the same chunk reads: 0 or the size
	}{
		{"memory cache", worker.Config{Store: st}, 0},
		{"no cache", worker.Config{Store: st, MemoryCacheBytes: -1}, -1},
		{"disk cache", worker.Config{Store: st, MemoryCacheBytes: -1, CacheDir: dir}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := open(t, "mem://fetch", tc.cfg)
			for s, sh := range r.Manifest().Shards {
				for c, mc := range sh.Chunks {
					for pass, want := range []int64{mc.Size, tc.again} {
						if want < 0 {
							want = mc.Size
						}
						ch, n, err := r.Fetch(ctx, s, c)
						if err != nil {
							t.Fatal(err)
						}
						ch.Release()
						if n != want {
							t.Errorf("pass %d: Fetch(%d, %d) read %d store bytes, want %d", pass, s, c, n, want)
						}
					}
				}
			}
		})
	}
}

// TestRewrittenMidEpoch: an object rewritten with the same size after the
// reader checked it fails every later read as Changed, by the store's
// conditional GET (If-Match on S3), not only the first Stat.
func TestRewrittenMidEpoch(t *testing.T) {
	ctx := testCtx(t)
	st := memstore.New()
	m := small.build(t, st)
	if m.Shards[1].ETag == "" {
		t.Fatal("the manifest has no ETag")
	}
	r := open(t, "mem://rewritten", worker.Config{Store: st, MemoryCacheBytes: -1})
	if _, err := r.Chunk(ctx, 1, 0); err != nil {
		t.Fatalf("Chunk(1, 0) before the rewrite: %v", err)
	}
	st.Write(ctx, m.Shards[1].Path, bytes.NewReader(make([]byte, m.Shards[1].Size)))
	for _, c := range []int{1, 0, 1} {
		if _, err := r.Chunk(ctx, 1, c); worker.KindOf(err) != worker.Changed || !errors.Is(err, store.ErrChanged) {
			t.Errorf("Chunk(1, %d) after a same-size rewrite = %v, want Changed", c, err)
		}
	}
}
