package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shardstream/shardstream/manifest"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/service"
	"github.com/shardstream/shardstream/store/memstore"
	"github.com/shardstream/shardstream/worker"
)

// faninConfig is fanin's command line, checked.
type faninConfig struct {
	ks           []int   // --ks: loaders per rank to measure; must hold 1
	rate         float64 // --rate: MB/s each loader may send (service.Config.SendBytesPerSecond)
	datasetBytes int64   // --dataset
	shardSize    int64   // --shard
	chunkSize    int64   // --chunk
	sampleSize   int     // --sample
	batch        int
	reps         int
	seed         uint64
}

// runFanin measures one rank reading one epoch through K loaders, each
// limited to the same send rate: K streams with stride K, one per loader,
// merged back into step order on the client. With the loaders the
// bottleneck, the rank's throughput should grow about K-fold.
func runFanin(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseFanin(args, stderr)
	if err != nil {
		return err
	}
	progress := func(format string, a ...any) { fmt.Fprintf(stderr, "bench-fanin: "+format+"\n", a...) }
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))

	st := memstore.New()
	n := int((c.datasetBytes + c.shardSize - 1) / c.shardSize)
	sizes := make([]int64, n)
	for i := range sizes {
		sizes[i] = c.shardSize
	}
	m, err := writeBenchDataset(ctx, st, sizes, manifest.CompressionNone, c.chunkSize, c.sampleSize)
	if err != nil {
		return err
	}
	kmax := slices.Max(c.ks)
	progress("dataset %s, %d samples in memory; starting %d loaders at %.1f MB/s each", sizeLabel(m.TotalBytes()), m.TotalSamples(), kmax, c.rate)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var served sync.WaitGroup
	defer served.Wait() // after cancel: every Serve returns
	defer cancel()
	conns := make([]*grpc.ClientConn, kmax)
	for i := range kmax {
		r, err := worker.Open(ctx, "mem://fanin", worker.Config{Store: st, Registerer: prometheus.NewRegistry()}, log)
		if err != nil {
			return err
		}
		defer r.Close()
		srv, err := service.New(service.Config{
			Datasets:           []service.Dataset{{Name: "bench", Manifest: r.Manifest(), Chunks: r}},
			SendBytesPerSecond: int64(c.rate * 1e6),
			Logger:             log,
			Registry:           prometheus.NewRegistry(),
		})
		if err != nil {
			return err
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		served.Go(func() { _ = srv.Serve(ctx, lis, nil) }) // ends when ctx does
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(service.DefaultMaxSendMsgSize)))
		if err != nil {
			return err
		}
		defer conn.Close()
		conns[i] = conn
	}

	job := &pb.JobSpec{Dataset: "bench", Seed: c.seed, WorldSize: 1, BatchSize: uint32(c.batch)}
	plan, err := pb.NewCoordinatorServiceClient(conns[0]).PlanEpoch(ctx, &pb.PlanEpochRequest{Job: job})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "fan-in: 1 rank, %d loaders (in-process, dataset in memory) each limited to %.1f MB/s; %s in %d samples, batch %d, %d steps; K streams with stride K on K loaders, merged in step order; median of %d reps, K order alternating\n",
		kmax, c.rate, sizeLabel(m.TotalBytes()), m.TotalSamples(), c.batch, plan.GetSteps(), c.reps)

	mbps := make(map[int][]float64, len(c.ks))
	for rep := range c.reps {
		order := slices.Clone(c.ks)
		if rep%2 == 1 {
			slices.Reverse(order)
		}
		for _, k := range order {
			res, err := faninOnce(ctx, conns[:k], job, plan.GetSteps(), plan.GetSamples())
			if err != nil {
				return fmt.Errorf("through %d loaders: %w", k, err)
			}
			v := float64(res.delivered) / 1e6 / res.wall.Seconds()
			progress("rep %d K=%d: %.1f MB/s (%d steps in %v)", rep+1, k, v, res.steps, res.wall.Round(time.Millisecond))
			mbps[k] = append(mbps[k], v)
		}
	}
	med := make(map[int]float64, len(c.ks))
	for _, k := range c.ks {
		vs := slices.Clone(mbps[k])
		sort.Float64s(vs)
		med[k] = vs[len(vs)/2]
		each := make([]string, len(mbps[k]))
		for i, v := range mbps[k] {
			each[i] = fmt.Sprintf("%.1f", v)
		}
		fmt.Fprintf(stdout, "K=%d loaders: %.1f MB/s (%.2f × one loader's limit; reps %s), every one of %d steps once and in order\n",
			k, med[k], med[k]/c.rate, strings.Join(each, " "), plan.GetSteps())
	}
	fmt.Fprintf(stdout, "rank throughput with %d loaders / 1 loader: %.2f\n", kmax, med[kmax]/med[1])
	return nil
}

// faninResult is what one fan-in epoch measured.
type faninResult struct {
	steps     int64
	delivered int64 // field bytes received
	wall      time.Duration
}

// faninOnce reads the rank's whole epoch through len(conns) loaders:
// stream j, on conns[j], sends steps j, j+K, ...; the merger takes step s
// from stream s mod K and checks every step arrives once, in order, and
// every sample of the plan once.
func faninOnce(ctx context.Context, conns []*grpc.ClientConn, job *pb.JobSpec, steps, samples int64) (faninResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	k := len(conns)
	chans := make([]chan *pb.Batch, k)
	errs := make([]error, k)
	var wg sync.WaitGroup
	start := time.Now()
	for j := range k {
		ch := make(chan *pb.Batch, 4)
		chans[j] = ch
		wg.Go(func() {
			defer close(ch)
			st, err := pb.NewLoaderServiceClient(conns[j]).StreamBatches(ctx, &pb.StreamBatchesRequest{
				Job: job, FromStep: int64(j), Stride: uint32(k),
			})
			if err != nil {
				errs[j] = err
				cancel()
				return
			}
			for {
				resp, err := st.Recv()
				if err == io.EOF {
					return
				}
				if err != nil {
					errs[j] = err
					cancel()
					return
				}
				select {
				case ch <- resp.GetBatch():
				case <-ctx.Done():
					return
				}
			}
		})
	}
	var res faninResult
	seen := make(map[[2]uint64]bool, samples)
	var merr error
merge:
	for s := int64(0); ; s++ {
		b, ok := <-chans[s%int64(k)]
		switch {
		case !ok && s < steps:
			merr = fmt.Errorf("stream %d ended before step %d (the plan has %d)", s%int64(k), s, steps)
			break merge
		case !ok:
			break merge
		case b.GetStep() != s:
			merr = fmt.Errorf("stream %d sent step %d where step %d was due", s%int64(k), b.GetStep(), s)
			break merge
		}
		for _, smp := range b.GetSamples() {
			id := [2]uint64{smp.GetShard(), smp.GetIndex()}
			if seen[id] {
				merr = fmt.Errorf("step %d: sample %v delivered twice", s, id)
				break merge
			}
			seen[id] = true
			for _, f := range smp.GetFields() {
				res.delivered += int64(len(f.GetData()))
			}
		}
		res.steps++
	}
	res.wall = time.Since(start)
	if merr != nil {
		cancel()
	}
	for _, ch := range chans { // let the readers see their streams' ends
		for range ch {
		}
	}
	wg.Wait()
	if merr != nil {
		return res, errors.Join(merr, errors.Join(errs...))
	}
	if err := errors.Join(errs...); err != nil {
		return res, err
	}
	if res.steps != steps {
		return res, fmt.Errorf("%d steps arrived, the plan has %d", res.steps, steps)
	}
	if int64(len(seen)) != samples {
		return res, fmt.Errorf("%d distinct samples arrived, the plan has %d", len(seen), samples)
	}
	return res, nil
}

func parseFanin(args []string, stderr io.Writer) (faninConfig, error) {
	fs := newFlagSet("fanin", stderr)
	ks := fs.String("ks", "1,2,4", "loaders per rank to measure, comma-separated; must include 1")
	rate := fs.Float64("rate", 20, "MB/s each loader may send (service.Config.SendBytesPerSecond)")
	dataset := fs.Int64("dataset", 64<<20, "dataset bytes, rounded up to whole shards")
	shard := fs.Int64("shard", 8<<20, "shard bytes")
	chunk := fs.Int64("chunk", 1<<20, "raw bytes after which a chunk ends")
	sample := fs.Int("sample", 64<<10, "average sample bytes")
	batch := fs.Int("batch", 16, "samples per batch")
	reps := fs.Int("reps", 3, "repetitions of every K; the median is reported")
	seed := fs.Uint64("seed", 1, "the job's seed")
	if err := parseFlags(fs, args); err != nil {
		return faninConfig{}, err
	}
	c := faninConfig{rate: *rate, datasetBytes: *dataset, shardSize: *shard, chunkSize: *chunk, sampleSize: *sample, batch: *batch, reps: *reps, seed: *seed}
	for _, f := range strings.Split(*ks, ",") {
		k, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || k < 1 || k > 64 {
			return c, usageError{Msg: fmt.Sprintf("--ks: %q, want loader counts from 1 to 64", f)}
		}
		if !slices.Contains(c.ks, k) {
			c.ks = append(c.ks, k)
		}
	}
	switch {
	case !slices.Contains(c.ks, 1):
		return c, usageError{Msg: fmt.Sprintf("--ks: %q, must include 1 (the ratio's base)", *ks)}
	case c.rate <= 0:
		return c, usageError{Msg: fmt.Sprintf("--rate: %v, want > 0", c.rate)}
	case c.datasetBytes <= 0 || c.shardSize <= 0 || c.chunkSize <= 0 || c.sampleSize <= 0:
		return c, usageError{Msg: "--dataset, --shard, --chunk, --sample: want > 0"}
	case c.batch < 1:
		return c, usageError{Msg: fmt.Sprintf("--batch: %d, want >= 1", c.batch)}
	case c.reps < 1:
		return c, usageError{Msg: fmt.Sprintf("--reps: %d, want >= 1", c.reps)}
	}
	return c, nil
}
