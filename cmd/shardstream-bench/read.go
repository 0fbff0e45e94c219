package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardstream/shardstream/internal/cli"
	"github.com/shardstream/shardstream/internal/miniotest"
	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store"
	"github.com/shardstream/shardstream/store/s3store"
	"github.com/shardstream/shardstream/store/storeuri"
	"github.com/shardstream/shardstream/wds"
	"github.com/shardstream/shardstream/worker"
)

// benchFlags are read's flags.
type benchFlags struct {
	minio       string
	endpoint    string
	bucket      string
	accessKey   string
	secretKey   string
	sizes       string
	partMiB     int
	concurrency int
	chunkMiB    int
	sampleKiB   int
	reps        int
	passMiB     int
	formats     string
}

// readConfig is read's command line, checked.
type readConfig struct {
	benchFlags
	shardSizes   []int64  // --sizes in bytes
	compressions []string // --formats
}

// runRead measures the read path against a plain parallel ranged-GET
// reader on the same store, with the same part size and concurrency: it
// starts MinIO on loopback (or uses --endpoint), uploads shards of the
// given sizes, uncompressed and zstd, then reads them (a) with plain GETs
// whose bytes are discarded and (b) through worker.Reader (GET, decompress,
// parse into samples). Each timed pass reads the shards measured, over
// and over, for at least --pass MiB: a pass of one 64 MiB shard lasts
// ~50 ms, which scheduler noise on a shared machine swamps. Progress goes
// to stderr, figures to stdout; the last line is
// "read path / plain GET (uncompressed): R".
func runRead(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseRead(args, stderr)
	if err != nil {
		return err
	}
	progress := func(format string, a ...any) { fmt.Fprintf(stderr, "bench-read: "+format+"\n", a...) }
	scfg, stop, err := startStore(ctx, c.benchFlags, progress)
	if err != nil {
		return err
	}
	defer stop()
	fmt.Fprintf(stdout, "store %s; shards %s MiB; part %d MiB; concurrency %d; chunk %d MiB; passes of >= %d MiB; GOMAXPROCS %d\n",
		scfg.Endpoint, c.benchFlags.sizes, c.partMiB, c.concurrency, c.chunkMiB, c.passMiB, runtime.GOMAXPROCS(0))
	ratio := math.NaN() // printed as NaN when uncompressed shards were not measured
	for _, comp := range c.compressions {
		r, err := benchFormat(ctx, c, scfg, comp, stdout, stderr, progress)
		if err != nil {
			return err
		}
		if comp == manifest.CompressionNone {
			ratio = r
		}
	}
	fmt.Fprintf(stdout, "read path / plain GET (uncompressed): %.2f\n", ratio)
	return nil
}

// parseRead parses and checks read's flags; every error is a usage error.
func parseRead(args []string, stderr io.Writer) (readConfig, error) {
	var c readConfig
	f := &c.benchFlags
	fs := newFlagSet("read", stderr)
	fs.StringVar(&f.minio, "minio", "", "minio binary to start on loopback (default: $SHARDSTREAM_MINIO, PATH, $GOPATH/bin)")
	fs.StringVar(&f.endpoint, "endpoint", "", "use this running S3-compatible endpoint instead of starting MinIO")
	fs.StringVar(&f.bucket, "bucket", "shardstream-bench", "bucket to write the shards to (created when MinIO is started here)")
	fs.StringVar(&f.accessKey, "access-key", "", "access key for --endpoint (empty: the AWS credential chain)")
	fs.StringVar(&f.secretKey, "secret-key", "", "secret key for --endpoint")
	fs.StringVar(&f.sizes, "sizes", "64,512", "shard sizes in MiB, comma-separated (one shard of each)")
	fs.IntVar(&f.partMiB, "part-size", 8, "ranged GET size in MiB, for both readers")
	fs.IntVar(&f.concurrency, "concurrency", 16, "GETs in flight, for both readers")
	fs.IntVar(&f.chunkMiB, "chunk", 8, "chunk size in MiB (uncompressed bytes)")
	fs.IntVar(&f.sampleKiB, "sample", 128, "average sample size in KiB")
	fs.IntVar(&f.reps, "reps", 5, "timed passes of each reader; the median is reported")
	fs.IntVar(&f.passMiB, "pass", 1024, "MiB (stored) each timed pass reads at least: small shards are read several times over, so a pass is long enough to time")
	fs.StringVar(&f.formats, "formats", "none,zstd", "shard formats to measure: none, zstd or both")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	var err error
	if c.shardSizes, err = parseMiBList(f.sizes); err != nil {
		return c, cli.Usage("--sizes: " + err.Error())
	}
	if f.partMiB <= 0 || f.concurrency <= 0 || f.chunkMiB <= 0 || f.sampleKiB <= 0 || f.reps <= 0 || f.passMiB <= 0 {
		return c, cli.Usage("--part-size, --concurrency, --chunk, --sample, --reps and --pass must be positive")
	}
	c.compressions = strings.Split(f.formats, ",")
	for _, comp := range c.compressions {
		if comp != manifest.CompressionNone && comp != manifest.CompressionZstd {
			return c, cli.Usage(fmt.Sprintf("--formats: unknown format %q", comp))
		}
	}
	return c, nil
}

// startStore starts MinIO with a fresh bucket, or takes --endpoint, and
// returns the S3 config both readers use and a func that stops MinIO.
func startStore(ctx context.Context, f benchFlags, progress func(string, ...any)) (s3store.Config, func(), error) {
	scfg := s3store.Config{Endpoint: f.endpoint, PathStyle: true, AccessKey: f.accessKey, SecretKey: f.secretKey, MaxConns: f.concurrency + 8}
	if f.endpoint != "" {
		return scfg, func() {}, nil
	}
	bin := f.minio
	if bin == "" {
		var err error
		if bin, err = miniotest.Binary(); err != nil {
			return scfg, nil, err
		}
	}
	progress("starting MinIO (%s)", bin)
	sctx, cancel := context.WithTimeout(ctx, time.Minute)
	srv, err := miniotest.Launch(sctx, bin, "")
	cancel()
	if err != nil {
		return scfg, nil, err
	}
	if err := srv.MakeBucket(ctx, f.bucket); err != nil {
		srv.Close()
		return scfg, nil, err
	}
	scfg.Endpoint, scfg.AccessKey, scfg.SecretKey = srv.Endpoint, srv.AccessKey, srv.SecretKey
	return scfg, func() { srv.Close() }, nil
}

// benchFormat writes the shards in one format and measures each shard
// size on its own, then all shards together, printing a line for each; it
// returns the ratio of the last group.
func benchFormat(ctx context.Context, c readConfig, scfg s3store.Config, comp string, stdout, stderr io.Writer, progress func(string, ...any)) (float64, error) {
	uri := fmt.Sprintf("s3://%s/%s", c.bucket, comp)
	st, err := storeuri.Open(ctx, uri, scfg)
	if err != nil {
		return 0, err
	}
	progress("writing %s shards to %s", comp, uri)
	start := time.Now()
	m, err := writeBenchDataset(ctx, st, c.shardSizes, comp, int64(c.chunkMiB)<<20, c.sampleKiB<<10)
	if err != nil {
		return 0, err
	}
	progress("wrote %d MiB stored (%d MiB raw) in %v", m.TotalBytes()>>20, rawBytes(m)>>20, time.Since(start).Round(time.Millisecond))

	reg := prometheus.NewRegistry() // for the buffer pool's counts
	wcfg := worker.Config{
		S3:       scfg,
		PartSize: int64(c.partMiB) << 20, Concurrency: c.concurrency,
		MemoryCacheBytes: -1, // every pass reads the store
		Registerer:       reg,
	}
	r, err := worker.Open(ctx, uri, wcfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return 0, err
	}
	// Every group gets one untimed pass of each reader first (heap
	// growth, connection pool, MinIO's page cache), then reps timed passes
	// in alternating order, so neither reader always runs on a machine
	// warmed by the other.
	var ratio float64
	var counted int64 // chunk bytes the reader's passes count as read
	for _, g := range benchGroups(len(c.shardSizes)) {
		label := fmt.Sprintf("%d MiB shard", c.shardSizes[g[0]]>>20)
		if len(g) > 1 {
			label = "all shards"
		}
		stored, raw := groupBytes(m, g)
		rounds := int(max(1, (int64(c.passMiB)<<20+stored-1)/stored))
		stored, raw = stored*int64(rounds), raw*int64(rounds)
		p, q, rat, err := benchGroup(ctx, st, r, m, g, rounds, int64(c.partMiB)<<20, c.concurrency, c.reps,
			func(rep int, p, q benchPass) {
				progress("%s %s pass %d (each shard read %d times): plain GET %.0f MB/s, read path %.0f MB/s", comp, label, rep+1, rounds, p.mbps(stored), q.mbps(stored))
			})
		if err != nil {
			r.Close()
			return 0, err
		}
		counted += int64(1+c.reps) * int64(rounds) * chunkBytes(m, g)
		printGroup(stdout, comp, label, p, q, stored, raw, rat)
		ratio = rat
	}
	progress("%s chunk buffers: %s", comp, bufferCounts(reg))
	r.Close()
	// A pass that got chunks without fetching them (a shared fetch)
	// would be credited with bytes it did not read.
	var fetched int64
	for _, ct := range counters(reg, "shardstream_read_bytes_total") {
		fetched += int64(ct.value)
	}
	if fetched < counted {
		return 0, fmt.Errorf("bench-read: the read path fetched %d bytes of %s shards, its passes counted %d", fetched, comp, counted)
	}
	return ratio, nil
}

// printGroup prints one group's figures: plain and read-path passes p and
// q over stored bytes (raw once decompressed), and their ratio.
func printGroup(stdout io.Writer, comp, label string, p, q benchPass, stored, raw int64, ratio float64) {
	if comp == manifest.CompressionNone {
		fmt.Fprintf(stdout, "uncompressed, %s: plain GET %.0f MB/s (%.0f MB/s per core of this process's CPU); read path %.0f MB/s (GET, tar parse, samples; %.0f MB/s per core); ratio %.2f\n",
			label, p.mbps(stored), float64(stored)/1e6/p.cpu.Seconds(), q.mbps(stored), float64(raw)/1e6/q.cpu.Seconds(), ratio)
		return
	}
	fmt.Fprintf(stdout, "zstd (%.2fx), %s: plain GET %.0f MB/s stored; read path %.0f MB/s stored = %.0f MB/s decompressed; %.0f MB/s decompressed per core of CPU used\n",
		float64(raw)/float64(stored), label, p.mbps(stored), q.mbps(stored), q.mbps(raw), float64(raw)/1e6/q.cpu.Seconds())
}

// benchGroups lists the groups of shards measured: each of n shards on
// its own, then all of them together, which gives the headline ratio.
func benchGroups(n int) [][]int {
	groups := make([][]int, 0, n+1)
	var all []int
	for i := range n {
		groups = append(groups, []int{i})
		all = append(all, i)
	}
	if n > 1 {
		groups = append(groups, all)
	}
	return groups
}

// counter is one series of a counter: its first label's value, if any,
// and its count.
type counter struct {
	label string
	value float64
}

// counters lists the series of the counter name in reg.
func counters(reg *prometheus.Registry, name string) []counter {
	mfs, _ := reg.Gather() // our own registry: it always gathers
	var out []counter
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			c := counter{value: m.GetCounter().GetValue()}
			if ls := m.GetLabel(); len(ls) > 0 {
				c.label = ls[0].GetValue()
			}
			out = append(out, c)
		}
	}
	return out
}

// bufferCounts reports where the Reader's chunk buffers came from: after
// the first pass nearly all should be reused from the pool.
func bufferCounts(reg *prometheus.Registry) string {
	var parts []string
	for _, c := range counters(reg, "shardstream_read_buffers_total") {
		parts = append(parts, fmt.Sprintf("%.0f %s", c.value, c.label))
	}
	return strings.Join(parts, ", ")
}

func parseMiBList(s string) ([]int64, error) {
	var out []int64
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number of MiB", f)
		}
		out = append(out, n<<20)
	}
	return out, nil
}

func rawBytes(m *manifest.Manifest) int64 {
	var n int64
	for _, s := range m.Shards {
		for _, c := range s.Chunks {
			n += c.RawSize
		}
	}
	return n
}

// benchPass is one timed pass: wall time and this process's CPU time.
type benchPass struct {
	wall, cpu time.Duration
}

func (p benchPass) mbps(bytes int64) float64 { return float64(bytes) / 1e6 / p.wall.Seconds() }

func median(ps []benchPass) benchPass {
	ps = slices.Clone(ps)
	slices.SortFunc(ps, func(a, b benchPass) int { return int(a.wall - b.wall) })
	return ps[len(ps)/2]
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timed runs n jobs on workers goroutines and times them; the first error
// stops the rest. Jobs are taken in order, but job i never runs while
// another job with the same i%distinct does: a pass repeats its shards
// (rounds), and the Reader shares concurrent fetches of one chunk, so
// overlapping repeats would fetch less than the pass counts. The plain
// reader keeps the same rule, so both run at most distinct GETs at once.
func timed(ctx context.Context, n, distinct, workers int, job func(ctx context.Context, i int) error) (benchPass, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu       sync.Mutex
		cond     = sync.NewCond(&mu)
		pending  = make([]int, n)
		busy     = make(map[int]bool)
		wg       sync.WaitGroup
		firstErr error
	)
	for i := range pending {
		pending[i] = i
	}
	// take removes and returns the first pending job not busy, waiting
	// for one; false when none are left or the pass failed.
	take := func() (int, bool) {
		mu.Lock()
		defer mu.Unlock()
		for {
			if firstErr != nil || len(pending) == 0 {
				return 0, false
			}
			for k, i := range pending {
				if !busy[i%distinct] {
					busy[i%distinct] = true
					pending = slices.Delete(pending, k, k+1)
					return i, true
				}
			}
			cond.Wait()
		}
	}
	cpu0, start := cpuTime(), time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i, ok := take()
				if !ok {
					return
				}
				err := job(ctx, i)
				mu.Lock()
				delete(busy, i%distinct)
				if err != nil && firstErr == nil {
					firstErr = err
					cancel()
				}
				cond.Broadcast()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return benchPass{wall: time.Since(start), cpu: cpuTime() - cpu0}, firstErr
}

// plainPass reads every shard whole with ranged GETs of partSize, at most
// concurrency at once, discarding the bytes: the store's and the network's
// speed with nothing on top.
func plainPass(ctx context.Context, st store.Store, m *manifest.Manifest, shards []int, rounds int, partSize int64, concurrency int) (benchPass, error) {
	type part struct {
		path   string
		off, n int64
	}
	var parts []part
	for range rounds {
		for _, i := range shards {
			s := m.Shards[i]
			for off := int64(0); off < s.Size; off += partSize {
				parts = append(parts, part{s.Path, off, min(partSize, s.Size-off)})
			}
		}
	}
	return timed(ctx, len(parts), len(parts)/rounds, concurrency, func(ctx context.Context, i int) error {
		p := parts[i]
		rc, err := st.ReadRange(ctx, p.path, p.off, p.n)
		if err != nil {
			return err
		}
		defer rc.Close()
		n, err := io.Copy(io.Discard, rc)
		if err == nil && n != p.n {
			err = fmt.Errorf("read %s [%d,+%d): got %d bytes", p.path, p.off, p.n, n)
		}
		return err
	})
}

// readerPass reads every chunk through the Reader with concurrency callers.
func readerPass(ctx context.Context, r *worker.Reader, m *manifest.Manifest, shards []int, rounds, concurrency int) (benchPass, error) {
	type ref struct{ s, c int }
	var refs []ref
	for range rounds {
		for _, s := range shards {
			for c := range m.Shards[s].Chunks {
				refs = append(refs, ref{s, c})
			}
		}
	}
	return timed(ctx, len(refs), len(refs)/rounds, concurrency, func(ctx context.Context, i int) error {
		ch, err := r.Chunk(ctx, refs[i].s, refs[i].c)
		if err != nil {
			return err
		}
		defer ch.Release() // as the loader does once a batch is sent
		if want := m.Shards[refs[i].s].Chunks[refs[i].c].Samples; int64(len(ch.Samples)) != want {
			return fmt.Errorf("chunk %v: %d samples, want %d", refs[i], len(ch.Samples), want)
		}
		return nil
	})
}

// writeBenchDataset writes one shard per size and the manifest. Samples
// are a "bin" field of semi-compressible bytes (words from a small random
// vocabulary: zstd reaches about 2–4x, like tokens or JSON, unlike JPEG)
// and a "cls" field, written by wds.ShardWriter (chunks of chunkSize raw
// bytes; one zstd frame each plus the seek table for zstd shards).
func writeBenchDataset(ctx context.Context, st store.Store, sizes []int64, comp string, chunkSize int64, sampleSize int) (*manifest.Manifest, error) {
	pool := benchPool(8 << 20)
	m := &manifest.Manifest{Version: manifest.Version}
	for i, size := range sizes {
		sh := manifest.Shard{Path: fmt.Sprintf("shard-%04d-%dMiB.tar", i, size>>20), Compression: comp}
		if comp == manifest.CompressionZstd {
			sh.Path += ".zst"
		}
		pr, pw := io.Pipe()
		done := make(chan error, 1)
		go func() { done <- st.Write(ctx, sh.Path, pr) }() // ends when pr does
		err := writeBenchShard(pw, &sh, pool, size, comp, chunkSize, sampleSize, uint64(i))
		pw.CloseWithError(err)
		if werr := <-done; err == nil {
			err = werr
		}
		if err != nil {
			return nil, fmt.Errorf("write %s: %w", sh.Path, err)
		}
		info, err := st.Stat(ctx, sh.Path)
		if err != nil {
			return nil, err
		}
		sh.ETag = info.ETag
		m.Shards = append(m.Shards, sh)
	}
	data, err := m.Marshal()
	if err == nil {
		err = m.Validate()
	}
	if err != nil {
		return nil, err
	}
	return m, st.Write(ctx, manifest.FileName, strings.NewReader(string(data)))
}

func benchPool(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	words := make([][]byte, 4096)
	for i := range words {
		w := make([]byte, 2+rng.IntN(10))
		for j := range w {
			w[j] = byte('a' + rng.IntN(26))
		}
		words[i] = w
	}
	pool := make([]byte, 0, n+16)
	for len(pool) < n {
		pool = append(pool, words[rng.IntN(len(words))]...)
		pool = append(pool, ' ')
	}
	return pool[:n]
}

func writeBenchShard(w io.Writer, sh *manifest.Shard, pool []byte, size int64, comp string, chunkSize int64, sampleSize int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 99))
	sw := wds.NewShardWriter(w, comp, chunkSize)
	for i := 0; sw.Size() < size; i++ {
		n := sampleSize/2 + rng.IntN(sampleSize)
		off := rng.IntN(len(pool) - n)
		err := sw.WriteSample(wds.Sample{Key: fmt.Sprintf("%09d", i), Fields: []wds.Field{
			{Name: "bin", Data: pool[off : off+n]},
			{Name: "cls", Data: []byte(strconv.Itoa(i % 1000))},
		}})
		if err != nil {
			return err
		}
	}
	got, err := sw.Close()
	if err != nil {
		return err
	}
	got.Path = sh.Path
	*sh = got
	return nil
}

// benchGroup measures shards with both readers, each pass reading them
// rounds times over: one untimed pass of each, then reps timed pairs in
// alternating order. It returns the median pass of each reader and the
// median of the per-pair ratios (read path / plain).
func benchGroup(ctx context.Context, st store.Store, r *worker.Reader, m *manifest.Manifest, shards []int, rounds int, partSize int64, concurrency, reps int,
	report func(rep int, plain, read benchPass)) (benchPass, benchPass, float64, error) {
	plainFn := func() (benchPass, error) { return plainPass(ctx, st, m, shards, rounds, partSize, concurrency) }
	readFn := func() (benchPass, error) { return readerPass(ctx, r, m, shards, rounds, concurrency) }
	if _, err := plainFn(); err != nil {
		return benchPass{}, benchPass{}, 0, err
	}
	if _, err := readFn(); err != nil {
		return benchPass{}, benchPass{}, 0, err
	}
	var plain, read []benchPass
	var ratios []float64
	for rep := range reps {
		first, second := plainFn, readFn
		if rep%2 == 1 {
			first, second = readFn, plainFn
		}
		a, err := first()
		if err != nil {
			return benchPass{}, benchPass{}, 0, err
		}
		b, err := second()
		if err != nil {
			return benchPass{}, benchPass{}, 0, err
		}
		p, q := a, b
		if rep%2 == 1 {
			p, q = b, a
		}
		plain, read = append(plain, p), append(read, q)
		ratios = append(ratios, p.wall.Seconds()/q.wall.Seconds()) // the same bytes: MB/s ratio
		report(rep, p, q)
	}
	slices.Sort(ratios)
	return median(plain), median(read), ratios[len(ratios)/2], nil
}

// chunkBytes is the stored size of the given shards' chunks: what the
// Reader fetches (a zstd shard's seek table is not in a chunk).
func chunkBytes(m *manifest.Manifest, shards []int) int64 {
	var n int64
	for _, i := range shards {
		for _, c := range m.Shards[i].Chunks {
			n += c.Size
		}
	}
	return n
}

// groupBytes is the stored and raw size of the given shards.
func groupBytes(m *manifest.Manifest, shards []int) (stored, raw int64) {
	for _, i := range shards {
		stored += m.Shards[i].Size
		for _, c := range m.Shards[i].Chunks {
			raw += c.RawSize
		}
	}
	return stored, raw
}
