package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shardstream/shardstream/internal/cli"
	"github.com/shardstream/shardstream/manifest"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/service"
	"github.com/shardstream/shardstream/store/s3store"
	"github.com/shardstream/shardstream/store/storeuri"
	"github.com/shardstream/shardstream/worker"
)

// epochConfig is epoch's command line, checked.
type epochConfig struct {
	store        benchFlags // MinIO or --endpoint, as read takes them
	shardSizes   []int64    // --shards: one dataset per size
	datasetBytes int64      // --dataset: each dataset's size, rounded up to whole shards
	chunkSize    int64      // --chunk: raw bytes after which a chunk ends
	sampleSize   int        // --sample: average sample size
	caches       []int64    // --caches: worker.Config.MemoryCacheBytes, -1 = off
	world        int        // --world: the extra case's world size; < 2 skips it
	batch        int
	seed         uint64
}

// epochCase is one measured epoch: a dataset read by world rank streams
// through a Reader whose memory cache holds cache bytes (-1: off).
type epochCase struct {
	shardSize int64
	cache     int64
	world     int
}

// epochResult is what one case measured.
type epochResult struct {
	fetched   int64         // shardstream_read_bytes_total: bytes the Reader got from the store
	dataset   int64         // manifest TotalBytes
	delivered int64         // field bytes the client received
	steps     int64         // batches per rank
	wall      time.Duration // first request to last batch
	peak      float64       // mean over streams of shardstream_loader_stream_chunk_peak_bytes
	reserved  int64         // chunk memory reserved per stream
}

func (r epochResult) ratio() float64 { return float64(r.fetched) / float64(r.dataset) }

// runEpoch measures the bytes one epoch fetches from the store: it starts
// MinIO (or takes --endpoint), writes one dataset of uncompressed tar
// shards per --shards size, and for each dataset and --caches size reads
// one whole epoch for one rank through a real in-process loader
// (service.New over a worker.Reader, default window and chunk memory) on
// loopback gRPC with the generated client; then one case of --world
// ranks at the Reader's default cache. Each case prints fetched / dataset
// bytes, MB/s delivered and the stream's peak and reserved chunk memory;
// the last line is "store bytes fetched per epoch / dataset bytes (worst
// case): R", R the largest ratio of all cases.
func runEpoch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseEpoch(args, stderr)
	if err != nil {
		return err
	}
	progress := func(format string, a ...any) { fmt.Fprintf(stderr, "bench-epoch: "+format+"\n", a...) }
	scfg, stop, err := startStore(ctx, c.store, progress)
	if err != nil {
		return err
	}
	defer stop()
	caches := make([]string, len(c.caches))
	for i, b := range c.caches {
		caches[i] = cacheLabel(b)
	}
	fmt.Fprintf(stdout, "store %s; datasets of %s in shards of %s (uncompressed tar, %s chunks, samples of ~%s); window %d chunks (default); batch %d; seed %d; memory cache %s, world 1; world %d at the default cache; GOMAXPROCS %d\n",
		scfg.Endpoint, sizeLabel(c.datasetBytes), sizeList(c.shardSizes), sizeLabel(c.chunkSize), sizeLabel(int64(c.sampleSize)),
		service.DefaultWindow, c.batch, c.seed, strings.Join(caches, ", "), c.world, runtime.GOMAXPROCS(0))
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	worst := 0.0
	for _, size := range c.shardSizes {
		uri := fmt.Sprintf("s3://%s/epoch-%d", c.store.bucket, size)
		st, err := storeuri.Open(ctx, uri, scfg)
		if err != nil {
			return err
		}
		n := int((c.datasetBytes + size - 1) / size)
		sizes := make([]int64, n)
		for i := range sizes {
			sizes[i] = size
		}
		progress("writing %d shards of %s to %s", n, sizeLabel(size), uri)
		start := time.Now()
		m, err := writeBenchDataset(ctx, st, sizes, manifest.CompressionNone, c.chunkSize, c.sampleSize)
		if err != nil {
			return err
		}
		progress("wrote %s, %d samples, in %v", sizeLabel(m.TotalBytes()), m.TotalSamples(), time.Since(start).Round(time.Millisecond))
		cases := make([]epochCase, 0, len(c.caches)+1)
		for _, cache := range c.caches {
			cases = append(cases, epochCase{size, cache, 1})
		}
		if c.world > 1 {
			cases = append(cases, epochCase{size, 0, c.world}) // 0: worker's default
		}
		for _, ec := range cases {
			res, err := epochOnce(ctx, c, scfg, uri, ec, log)
			if err != nil {
				return fmt.Errorf("%s: %w", ec, err)
			}
			fmt.Fprintf(stdout, "%s: fetched / dataset bytes %.3f (%d of %d), %.0f MB/s, %d steps, chunk memory per stream: peak %s, reserved %s\n",
				ec, res.ratio(), res.fetched, res.dataset, float64(res.delivered)/1e6/res.wall.Seconds(), res.steps,
				sizeLabel(int64(res.peak)), sizeLabel(res.reserved))
			worst = max(worst, res.ratio())
		}
	}
	fmt.Fprintf(stdout, "store bytes fetched per epoch / dataset bytes (worst case): %.3f\n", worst)
	return nil
}

func (ec epochCase) String() string {
	cache := cacheLabel(ec.cache)
	if ec.cache == 0 {
		cache = "default (1 GiB)"
	}
	return fmt.Sprintf("shards %s, memory cache %s, world %d", sizeLabel(ec.shardSize), cache, ec.world)
}

// parseEpoch parses and checks epoch's flags; every error is a usage error.
func parseEpoch(args []string, stderr io.Writer) (epochConfig, error) {
	var c epochConfig
	f := &c.store
	fs := newFlagSet("epoch", stderr)
	fs.StringVar(&f.minio, "minio", "", "minio binary to start on loopback (default: $SHARDSTREAM_MINIO, PATH, $GOPATH/bin)")
	fs.StringVar(&f.endpoint, "endpoint", "", "use this running S3-compatible endpoint instead of starting MinIO")
	fs.StringVar(&f.bucket, "bucket", "shardstream-bench", "bucket to write the datasets to (created when MinIO is started here)")
	fs.StringVar(&f.accessKey, "access-key", "", "access key for --endpoint (empty: the AWS credential chain)")
	fs.StringVar(&f.secretKey, "secret-key", "", "secret key for --endpoint")
	shards := fs.String("shards", "64MiB,512MiB", "shard sizes, comma-separated: one dataset of each (sizes take KiB, MiB, GiB)")
	dataset := fs.String("dataset", "1GiB", "each dataset's size, rounded up to whole shards")
	chunk := fs.String("chunk", "8MiB", "chunk size (raw bytes; wds.DefaultChunkSize is 8 MiB)")
	sample := fs.String("sample", "8KiB", "average sample size (token-like bytes)")
	caches := fs.String("caches", "0,256MiB,1GiB", "the Reader's memory cache sizes to measure at world 1; 0 is off")
	fs.IntVar(&c.world, "world", 4, "world size of one more case per dataset, at the Reader's default memory cache (1 GiB); < 2 skips it")
	fs.IntVar(&c.batch, "batch", 64, "batch size")
	fs.Uint64Var(&c.seed, "seed", 1, "the job's seed")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	f.concurrency = 16 // the Reader's default GETs in flight: sizes startStore's connection pool
	var err error
	if c.shardSizes, err = parseSizes(*shards, false); err != nil {
		return c, cli.Usage("--shards: " + err.Error())
	}
	one := func(name, s string) int64 {
		v, e := parseSizes(s, false)
		if e == nil && len(v) != 1 {
			e = fmt.Errorf("%q is not one size", s)
		}
		if e != nil && err == nil {
			err = cli.Usage(name + ": " + e.Error())
		}
		if e != nil {
			return 0
		}
		return v[0]
	}
	c.datasetBytes = one("--dataset", *dataset)
	c.chunkSize = one("--chunk", *chunk)
	c.sampleSize = int(one("--sample", *sample))
	if err != nil {
		return c, err
	}
	if c.caches, err = parseSizes(*caches, true); err != nil {
		return c, cli.Usage("--caches: " + err.Error())
	}
	for i, b := range c.caches {
		if b == 0 {
			c.caches[i] = -1 // worker.Config: negative is off, 0 the default
		}
	}
	if c.batch <= 0 {
		return c, cli.Usage("--batch must be positive")
	}
	return c, nil
}

// parseSizes parses a comma-separated list of sizes: a number of bytes, or
// of KiB, MiB or GiB with that suffix. Zero is allowed only when zero is.
func parseSizes(s string, zero bool) ([]int64, error) {
	var out []int64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		num, shift := f, 0
		for _, u := range []struct {
			suffix string
			shift  int
		}{{"KiB", 10}, {"MiB", 20}, {"GiB", 30}} {
			if strings.HasSuffix(f, u.suffix) {
				num, shift = strings.TrimSpace(strings.TrimSuffix(f, u.suffix)), u.shift
				break
			}
		}
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n < 0 || (n == 0 && !zero) || n > math.MaxInt64>>shift {
			return nil, fmt.Errorf("%q is not a size (a number of bytes, KiB, MiB or GiB, e.g. 64MiB)", f)
		}
		out = append(out, n<<shift)
	}
	return out, nil
}

// sizeLabel prints n bytes in the largest binary unit that keeps it whole,
// or in MiB with one decimal.
func sizeLabel(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n < 1<<20 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}

func sizeList(ns []int64) string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = sizeLabel(n)
	}
	return strings.Join(out, ", ")
}

func cacheLabel(b int64) string {
	if b < 0 {
		return "off"
	}
	return sizeLabel(b)
}

// epochOnce reads one epoch of the dataset at uri for ec.world ranks at
// once, through a fresh Reader (its own registry, so its byte counter
// counts this case alone) served by a fresh loader on loopback.
func epochOnce(ctx context.Context, c epochConfig, scfg s3store.Config, uri string, ec epochCase, log *slog.Logger) (epochResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rreg := prometheus.NewRegistry()
	r, err := worker.Open(ctx, uri, worker.Config{S3: scfg, MemoryCacheBytes: ec.cache, Registerer: rreg}, log)
	if err != nil {
		return epochResult{}, err
	}
	defer r.Close()
	sreg := prometheus.NewRegistry()
	srv, err := service.New(service.Config{
		Datasets: []service.Dataset{{Name: "bench", Manifest: r.Manifest(), Chunks: r}},
		Logger:   log,
		Registry: sreg,
	})
	if err != nil {
		return epochResult{}, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return epochResult{}, err
	}
	sctx, cancelServe := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, lis, nil) }() // ends when sctx does
	stopServer := sync.OnceValue(func() error {
		cancelServe()
		return <-served
	})
	defer stopServer()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(service.DefaultMaxSendMsgSize)))
	if err != nil {
		return epochResult{}, err
	}
	defer conn.Close()

	job := &pb.JobSpec{Dataset: "bench", Seed: c.seed, WorldSize: uint32(ec.world), BatchSize: uint32(c.batch)}
	plan, err := pb.NewCoordinatorServiceClient(conn).PlanEpoch(ctx, &pb.PlanEpochRequest{Job: job})
	if err != nil {
		return epochResult{}, err
	}
	res := epochResult{dataset: r.Manifest().TotalBytes(), steps: plan.GetSteps()}
	loader := pb.NewLoaderServiceClient(conn)

	// Every stream reserves its chunk memory when it opens and gives it
	// back when it ends: the reservation is read once every stream has
	// sent its first batch, and before any may end.
	var (
		opened  sync.WaitGroup
		sampled = make(chan struct{})
		wg      sync.WaitGroup
		mu      sync.Mutex
		errs    []error
		seen    = make(map[[2]uint64]bool, plan.GetSamples())
	)
	opened.Add(ec.world)
	start := time.Now()
	for rank := range ec.world {
		wg.Go(func() {
			ids, delivered, err := readRank(ctx, loader, job, rank, plan.GetSteps(), opened.Done, sampled)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("rank %d: %w", rank, err))
				cancel()
			}
			res.delivered += delivered
			for _, id := range ids {
				if seen[id] {
					errs = append(errs, fmt.Errorf("rank %d: sample %v delivered twice", rank, id))
					cancel()
					return
				}
				seen[id] = true
			}
		})
	}
	opened.Wait()
	// A short stream may have ended already (gRPC buffers its last
	// batches), and the two gauges are read one after the other: what
	// the open streams reserve together is a whole number of
	// reservations.
	reserved := gaugeValue(sreg, "shardstream_loader_chunk_memory_reserved_bytes")
	close(sampled)
	wg.Wait()
	res.wall = time.Since(start)
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	res.reserved = reservation(r.Manifest(), service.DefaultWindow, c.batch)
	if n := reserved / float64(res.reserved); n != math.Trunc(n) || n > float64(ec.world) {
		return res, fmt.Errorf("the loader's %d streams reserved %.0f bytes, not a whole number of the %d per stream docs/planner.md's formula gives", ec.world, reserved, res.reserved)
	}
	if int64(len(seen)) != plan.GetSamples() {
		return res, fmt.Errorf("%d distinct samples delivered, the plan has %d", len(seen), plan.GetSamples())
	}
	for _, ct := range counters(rreg, "shardstream_read_bytes_total") {
		res.fetched += int64(ct.value)
	}
	// The peak is observed when a stream ends, on the server's side of it,
	// which may be just after the client saw the end: stop the server
	// first (it waits for its streams), then gather.
	if err := stopServer(); err != nil {
		return res, err
	}
	res.peak = histogramMean(sreg, "shardstream_loader_stream_chunk_peak_bytes")
	if res.peak > float64(res.reserved) {
		return res, fmt.Errorf("streams held %.0f bytes of chunks at their peak (mean), more than the %d they reserved", res.peak, res.reserved)
	}
	return res, nil
}

// readRank reads one rank's whole stream and returns the samples' ids and
// the field bytes received (every batch is unmarshalled, so every byte
// is copied once on the client, as a trainer's would be). It calls opened
// once its first batch came (or it failed), then waits for sampled.
func readRank(ctx context.Context, loader pb.LoaderServiceClient, job *pb.JobSpec, rank int, steps int64, opened func(), sampled <-chan struct{}) ([][2]uint64, int64, error) {
	var once sync.Once
	arrived := func() { once.Do(opened) }
	defer arrived()
	st, err := loader.StreamBatches(ctx, &pb.StreamBatchesRequest{Job: job, Rank: uint32(rank)})
	if err != nil {
		return nil, 0, err
	}
	var (
		ids       [][2]uint64
		delivered int64
		got       int64
	)
	for {
		resp, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		b := resp.GetBatch()
		if b.GetStep() != got {
			return nil, 0, fmt.Errorf("got step %d, want %d", b.GetStep(), got)
		}
		for _, s := range b.GetSamples() {
			ids = append(ids, [2]uint64{s.GetShard(), s.GetIndex()})
			for _, f := range s.GetFields() {
				delivered += int64(len(f.GetData()))
			}
		}
		if got++; got == 1 {
			arrived()
			select {
			case <-sampled:
			case <-ctx.Done():
				return nil, 0, ctx.Err()
			}
		}
	}
	if got != steps {
		return nil, 0, fmt.Errorf("got %d steps, the plan has %d", got, steps)
	}
	return ids, delivered, nil
}

// reservation is the chunk memory a loader stream reserves, as
// docs/planner.md gives it: (k·W + 1) × the largest chunk's raw size, with
// k = ⌈(B−1)/(W·m)⌉ + 1 windows one step can touch (m the fewest samples
// in a non-empty chunk), and never more chunks than the dataset has, plus
// one. service/chunkmem.go (streamNeed) is the loader's code; epochOnce
// checks the two agree.
func reservation(m *manifest.Manifest, window, batch int) int64 {
	var units, fewest int64
	for _, sh := range m.Shards {
		for _, c := range sh.Chunks {
			units++
			if c.Samples > 0 && (fewest == 0 || c.Samples < fewest) {
				fewest = c.Samples
			}
		}
	}
	w, k := int64(window), int64(2)
	if fewest > 0 {
		k = (int64(batch)-1+w*fewest-1)/(w*fewest) + 1
	}
	return (min(k*w, units) + 1) * m.MaxChunkRawSize()
}

// gaugeValue is the value of the gauge name in reg (0 if absent).
func gaugeValue(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather() // our own registry: it always gathers
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return 0
}

// histogramMean is the mean observation of the histogram name in reg (0
// if it has none).
func histogramMean(reg *prometheus.Registry, name string) float64 {
	mfs, _ := reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			if h := mf.GetMetric()[0].GetHistogram(); h.GetSampleCount() > 0 {
				return h.GetSampleSum() / float64(h.GetSampleCount())
			}
		}
	}
	return 0
}
