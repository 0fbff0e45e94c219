package service

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/shardstream/shardstream/internal/leaktest"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/sampler"
	"github.com/shardstream/shardstream/store"
	"github.com/shardstream/shardstream/worker"
)

func testConfig(r *fakeReader) Config {
	return Config{Datasets: []Dataset{{Name: "default", Manifest: r.m, Chunks: r}}}
}

func TestConfigValidate(t *testing.T) {
	r := &fakeReader{m: testManifest(2, 10, 5)}
	ds := Dataset{Name: "a", Manifest: r.m, Chunks: r}
	cfg := Config{Datasets: []Dataset{ds}}
	if err := cfg.validate(); err != nil {
		t.Fatalf("validate() = %v, want nil", err)
	}
	if cfg.ReadaheadSteps != DefaultReadaheadSteps || cfg.MaxStreams != DefaultMaxStreams || cfg.DefaultWindow != DefaultWindow ||
		cfg.ShutdownTimeout != DefaultShutdownTimeout || cfg.Logger == nil || cfg.Registry == nil {
		t.Errorf("validate() left defaults unset: %+v", cfg)
	}
}

// TestConfigErrorsNameTheField: every error of validate starts with the
// field it rejects.
func TestConfigErrorsNameTheField(t *testing.T) {
	r := &fakeReader{m: testManifest(2, 10, 5)}
	ds := Dataset{Name: "a", Manifest: r.m, Chunks: r}
	tests := []struct {
		field  string // what the error must start with, after "service.Config."
		modify func(*Config)
	}{
		{"Datasets", func(c *Config) { c.Datasets = nil }},
		{"Datasets[1].Manifest", func(c *Config) { c.Datasets = append(c.Datasets, Dataset{Name: "b", Chunks: r}) }},
		{"Datasets[1].Chunks", func(c *Config) { c.Datasets = append(c.Datasets, Dataset{Name: "b", Manifest: r.m}) }},
		{"Datasets[1].Name", func(c *Config) { c.Datasets = append(c.Datasets, ds) }},
		{"LoaderAddrs[1]", func(c *Config) { c.LoaderAddrs = []string{"x:1", ""} }},
		{"DefaultWindow", func(c *Config) { c.DefaultWindow = -1 }},
		{"ReadaheadSteps", func(c *Config) { c.ReadaheadSteps = -1 }},
		{"FetchConcurrency", func(c *Config) { c.FetchConcurrency = -1 }},
		{"MaxStreams", func(c *Config) { c.MaxStreams = -1 }},
		{"PlanCacheSize", func(c *Config) { c.PlanCacheSize = -1 }},
		{"MaxSendMsgSize", func(c *Config) { c.MaxSendMsgSize = -1 }},
		{"MaxWorldSize", func(c *Config) { c.MaxWorldSize = -1 }},
		{"MaxWorldSize", func(c *Config) { c.MaxWorldSize = sampler.MaxWorldSize + 1 }},
		{"MaxBatchSize", func(c *Config) { c.MaxBatchSize = -1 }},
		{"MaxBatchSize", func(c *Config) { c.MaxBatchSize = sampler.MaxBatchSize + 1 }},
		{"ShutdownTimeout", func(c *Config) { c.ShutdownTimeout = -time.Second }},
	}
	for _, tt := range tests {
		cfg := Config{Datasets: []Dataset{ds}}
		tt.modify(&cfg)
		err := cfg.validate()
		if want := "service.Config." + tt.field + ": "; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("validate() with a bad %s = %v, want an error starting %q", tt.field, err, want)
		}
	}
}

func TestGetDatasetAndPlanEpoch(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(3, 10, 4)}
	cfg := testConfig(r)
	cfg.LoaderAddrs = []string{"a:1", "b:2"}
	ts := startServer(t, cfg, fakePlanner)
	ctx := testCtx(t)

	for _, name := range []string{"", "default"} {
		got, err := ts.coord.GetDataset(ctx, &pb.GetDatasetRequest{Dataset: name})
		if err != nil {
			t.Fatalf("GetDataset(%q): %v", name, err)
		}
		want := &pb.GetDatasetResponse{Name: "default", Fingerprint: r.m.Fingerprint(), Shards: 3, Samples: 30, Bytes: uint64(r.m.TotalBytes())}
		if got.String() != want.String() {
			t.Errorf("GetDataset(%q) = %v, want %v", name, got, want)
		}
	}
	if _, err := ts.coord.GetDataset(ctx, &pb.GetDatasetRequest{Dataset: "other"}); status.Code(err) != codes.NotFound {
		t.Errorf("GetDataset(other) = %v, want NotFound", err)
	}

	resp, err := ts.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: &pb.JobSpec{WorldSize: 3, BatchSize: 4, Seed: 7}})
	if err != nil {
		t.Fatal(err)
	}
	// 30 samples, 3 ranks of 4: 2 steps, 24 samples, 6 dropped.
	if resp.Steps != 2 || resp.Samples != 24 || resp.Dropped != 6 || resp.DatasetFingerprint != r.m.Fingerprint() {
		t.Errorf("PlanEpoch = %v, want 2 steps, 24 samples, 6 dropped", resp)
	}
	if diff := cmp.Diff([]string{"a:1", "b:2", "a:1"}, resp.LoaderAddresses); diff != "" {
		t.Errorf("loader addresses (-want +got):\n%s", diff)
	}
	wantTok := fmt.Sprintf("fake:%s:7:0:%d:%d:0", r.m.Fingerprint(), DefaultWindow, sampler.DropLast)
	if resp.ResumeToken != wantTok {
		t.Errorf("token = %q, want %q (defaults: window %d, policy drop)", resp.ResumeToken, wantTok, DefaultWindow)
	}
}

// TestFingerprintChecked: a job that carries the fingerprint PlanEpoch
// returned streams; one that carries another manifest's is refused (in
// TestValidationCodes); one without (an old client) is not checked.
func TestFingerprintChecked(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(2, 10, 5)}
	ts := startServer(t, testConfig(r), samplerPlanner)
	ctx := testCtx(t)
	job := &pb.JobSpec{WorldSize: 2, BatchSize: 2, Seed: 1}
	resp, err := ts.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	old := streamRank(t, ctx, ts.loader, job, 1, 0)
	job.Fingerprint = resp.DatasetFingerprint
	if _, err := ts.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: job}); err != nil {
		t.Fatalf("PlanEpoch with its own fingerprint: %v", err)
	}
	got := streamRank(t, ctx, ts.loader, job, 1, 0)
	if len(got) != int(resp.Steps) || len(got) != len(old) {
		t.Fatalf("with fingerprint: %d batches, without: %d, plan: %d", len(got), len(old), resp.Steps)
	}
	for i := range got {
		if got[i].String() != old[i].String() {
			t.Fatalf("step %d differs with the fingerprint set:\n%v\n%v", i, got[i], old[i])
		}
	}
}

func TestPlanEpochOwnAddress(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(1, 10, 10)}
	ts := startServer(t, testConfig(r), fakePlanner)
	resp, err := ts.coord.PlanEpoch(testCtx(t), &pb.PlanEpochRequest{Job: &pb.JobSpec{WorldSize: 2, BatchSize: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"", ""}, resp.LoaderAddresses); diff != "" {
		t.Errorf("loader addresses without LoaderAddrs (-want +got):\n%s", diff)
	}
}

func TestValidationCodes(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(2, 10, 5)}
	ts := startServer(t, testConfig(r), fakePlanner)
	fp := r.m.Fingerprint()
	good := func() *pb.JobSpec { return &pb.JobSpec{WorldSize: 2, BatchSize: 2, Seed: 1} }
	tok := func(fp string, seed, epoch uint64, window int, policy sampler.Policy) string {
		return fmt.Sprintf("fake:%s:%d:%d:%d:%d:1", fp, seed, epoch, window, policy)
	}
	tests := []struct {
		name   string
		modify func(*pb.StreamBatchesRequest)
		code   codes.Code
		want   string // substring of the message
	}{
		{"no job", func(r *pb.StreamBatchesRequest) { r.Job = nil }, codes.InvalidArgument, "job"},
		{"world 0", func(r *pb.StreamBatchesRequest) { r.Job.WorldSize = 0 }, codes.InvalidArgument, "world_size"},
		{"world huge", func(r *pb.StreamBatchesRequest) { r.Job.WorldSize = 1 << 20 }, codes.InvalidArgument, "world_size"},
		{"batch 0", func(r *pb.StreamBatchesRequest) { r.Job.BatchSize = 0 }, codes.InvalidArgument, "batch_size"},
		{"batch huge", func(r *pb.StreamBatchesRequest) { r.Job.BatchSize = 1 << 30 }, codes.InvalidArgument, "batch_size"},
		{"bad policy", func(r *pb.StreamBatchesRequest) { r.Job.LastBatch = 9 }, codes.InvalidArgument, "last_batch"},
		{"unknown dataset", func(r *pb.StreamBatchesRequest) { r.Job.Dataset = "nope" }, codes.NotFound, `"nope"`},
		{"malformed token", func(r *pb.StreamBatchesRequest) { r.Job.ResumeToken = "garbage" }, codes.InvalidArgument, "resume_token"},
		{"token of other dataset", func(r *pb.StreamBatchesRequest) {
			r.Job.ResumeToken = tok("0123456789abcdef", 1, 0, DefaultWindow, sampler.DropLast)
		}, codes.FailedPrecondition, "fingerprint"},
		{"token of other seed", func(r *pb.StreamBatchesRequest) {
			r.Job.ResumeToken = tok(fp, 2, 0, DefaultWindow, sampler.DropLast)
		}, codes.FailedPrecondition, "job.seed"},
		{"token of other epoch", func(r *pb.StreamBatchesRequest) {
			r.Job.ResumeToken = tok(fp, 1, 3, DefaultWindow, sampler.DropLast)
		}, codes.FailedPrecondition, "job.epoch"},
		{"token of other window", func(r *pb.StreamBatchesRequest) {
			r.Job.ResumeToken = tok(fp, 1, 0, 9, sampler.DropLast)
		}, codes.FailedPrecondition, "job.window"},
		{"token of other policy", func(r *pb.StreamBatchesRequest) {
			r.Job.ResumeToken = tok(fp, 1, 0, DefaultWindow, sampler.Pad)
		}, codes.FailedPrecondition, "job.last_batch"},
		{"fingerprint of another manifest", func(r *pb.StreamBatchesRequest) {
			r.Job.Fingerprint = "0123456789abcdef"
		}, codes.FailedPrecondition, "job.fingerprint"},
		{"rank", func(r *pb.StreamBatchesRequest) { r.Rank = 2 }, codes.InvalidArgument, "rank"},
		{"negative from", func(r *pb.StreamBatchesRequest) { r.FromStep = -1 }, codes.InvalidArgument, "from_step"},
		{"from past end", func(r *pb.StreamBatchesRequest) { r.FromStep = 6 }, codes.OutOfRange, "from_step"},
		{"negative max", func(r *pb.StreamBatchesRequest) { r.MaxSteps = -1 }, codes.InvalidArgument, "max_steps"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := testCtx(t)
			req := &pb.StreamBatchesRequest{Job: good()}
			tt.modify(req)
			_, err := streamAll(ctx, ts.loader, req)
			if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.want) {
				t.Errorf("StreamBatches = %v, want %v naming %q", err, tt.code, tt.want)
			}
			// PlanEpoch validates the same JobSpec the same way.
			if tt.name == "rank" || strings.Contains(tt.name, "from") || strings.Contains(tt.name, "max") {
				return
			}
			_, err = ts.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: req.Job})
			if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.want) {
				t.Errorf("PlanEpoch = %v, want %v naming %q", err, tt.code, tt.want)
			}
		})
	}
}

// streamRank reads rank's whole stream.
func streamRank(t *testing.T, ctx context.Context, c pb.LoaderServiceClient, job *pb.JobSpec, rank uint32, from int64) []*pb.Batch {
	t.Helper()
	b, err := streamAll(ctx, c, &pb.StreamBatchesRequest{Job: job, Rank: rank, FromStep: from})
	if err != nil {
		t.Fatalf("rank %d from %d: %v", rank, from, err)
	}
	return b
}

// forPlanners runs f with the reference planner and the real sampler.
func forPlanners(t *testing.T, f func(t *testing.T, pl planner)) {
	for _, tc := range []struct {
		name string
		pl   planner
	}{{"seq", fakePlanner}, {"sampler", samplerPlanner}} {
		t.Run(tc.name, func(t *testing.T) { f(t, tc.pl) })
	}
}

// tokenSteps is the number of steps a token says every rank consumed.
func tokenSteps(t *testing.T, pl planner, tok string) int64 {
	t.Helper()
	parsed, err := pl.parseToken(tok)
	if err != nil {
		t.Fatalf("token %q: %v", tok, err)
	}
	var n int64
	for _, s := range parsed.Segments {
		n += s.Steps
	}
	return n
}

func TestStreamEveryRank(t *testing.T) { forPlanners(t, testStreamEveryRank) }

func testStreamEveryRank(t *testing.T, pl planner) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(5, 37, 8), fieldSize: 100}
	cfg := testConfig(r)
	cfg.ReadaheadSteps = 3
	cfg.FetchConcurrency = 2
	ts := startServer(t, cfg, pl)
	ctx := testCtx(t)
	job := &pb.JobSpec{WorldSize: 3, BatchSize: 4, Epoch: 2}
	plan, err := ts.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[sampler.SampleID]int{}
	for rank := range uint32(3) {
		batches := streamRank(t, ctx, ts.loader, job, rank, 0)
		if int64(len(batches)) != plan.Steps {
			t.Fatalf("rank %d: %d batches, want %d", rank, len(batches), plan.Steps)
		}
		for i, b := range batches {
			if b.Rank != rank || b.Epoch != 2 || b.Step != int64(i) || len(b.Samples) != 4 {
				t.Fatalf("rank %d batch %d: rank %d epoch %d step %d with %d samples", rank, i, b.Rank, b.Epoch, b.Step, len(b.Samples))
			}
			if n := tokenSteps(t, pl, b.ResumeToken); n != int64(i+1) {
				t.Errorf("batch %d token %q says %d steps done, want %d", i, b.ResumeToken, n, i+1)
			}
			for _, s := range b.Samples {
				key := sampleKey(int64(s.Shard), int64(s.Index))
				if s.Key != key || len(s.Fields) != 2 || string(s.Fields[0].Data) != key || len(s.Fields[1].Data) != 100 {
					t.Fatalf("sample %d/%d: key %q fields %v, want key %q", s.Shard, s.Index, s.Key, s.Fields[0], key)
				}
				seen[sampler.SampleID{Shard: int64(s.Shard), Index: int64(s.Index)}]++
			}
		}
	}
	if int64(len(seen)) != plan.Samples || plan.Samples+plan.Dropped != 5*37 {
		t.Errorf("%d distinct samples delivered, plan says %d (+%d dropped of %d)", len(seen), plan.Samples, plan.Dropped, 5*37)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("sample %v delivered %d times", id, n)
		}
	}
}

func TestReconnectFromStep(t *testing.T) { forPlanners(t, testReconnectFromStep) }

func testReconnectFromStep(t *testing.T, pl planner) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(4, 50, 7)}
	ts := startServer(t, testConfig(r), pl)
	ctx := testCtx(t)
	job := &pb.JobSpec{WorldSize: 2, BatchSize: 5, Seed: 3}
	full := streamRank(t, ctx, ts.loader, job, 1, 0)

	for _, k := range []int{0, 1, 7, len(full) - 1, len(full)} {
		sctx, cancel := context.WithCancel(ctx)
		st, err := ts.loader.StreamBatches(sctx, &pb.StreamBatchesRequest{Job: job, Rank: 1})
		if err != nil {
			t.Fatal(err)
		}
		head, err := collect(st, k)
		if err != nil {
			t.Fatal(err)
		}
		cancel() // the stream dies after k batches
		tail := streamRank(t, ctx, ts.loader, job, 1, int64(k))
		got := append(head, tail...)
		if diff := cmp.Diff(ids(full), ids(got)); diff != "" {
			t.Errorf("killed after %d batches and resumed: samples differ (-full +resumed):\n%s", k, diff)
		}
		for i, b := range tail {
			if b.Step != int64(k+i) || b.ResumeToken != full[k+i].ResumeToken {
				t.Errorf("resumed batch %d: step %d token %q, want step %d token %q", i, b.Step, b.ResumeToken, k+i, full[k+i].ResumeToken)
			}
		}
	}

	// max_steps cuts the stream.
	got, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: job, Rank: 1, FromStep: 2, MaxSteps: 3})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ids(full[2:5]), ids(got)); diff != "" {
		t.Errorf("from 2, max 3 (-want +got):\n%s", diff)
	}
}

func TestTwoLoadersSameStream(t *testing.T) { forPlanners(t, testTwoLoadersSameStream) }

func testTwoLoadersSameStream(t *testing.T, pl planner) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(6, 20, 3)}
	cfgA, cfgB := testConfig(r), testConfig(r)
	cfgA.ReadaheadSteps, cfgA.FetchConcurrency = 1, 1
	cfgB.ReadaheadSteps, cfgB.FetchConcurrency = 32, 64
	a := startServer(t, cfgA, pl)
	b := startServer(t, cfgB, pl)
	ctx := testCtx(t)
	job := &pb.JobSpec{WorldSize: 4, BatchSize: 3, Seed: 11, Epoch: 1}
	for rank := range uint32(4) {
		fa := streamRank(t, ctx, a.loader, job, rank, 0)
		fb := streamRank(t, ctx, b.loader, job, rank, 0)
		if diff := cmp.Diff(ids(fa), ids(fb)); diff != "" {
			t.Errorf("rank %d: loaders differ (-a +b):\n%s", rank, diff)
		}
	}
}

func TestStreamReadErrors(t *testing.T) {
	leaktest.Check(t)
	m := testManifest(3, 20, 5)
	tests := []struct {
		name  string
		errs  map[chunkKey]error
		short map[chunkKey]bool
		code  codes.Code
		want  []string
	}{
		{"missing object", map[chunkKey]error{{1, 2}: fmt.Errorf("read shard-00001.tar [10240,+5120): %w", store.ErrNotFound)}, nil,
			codes.NotFound, []string{"shard-00001.tar", "10240"}},
		{"corrupt chunk", map[chunkKey]error{{0, 3}: &worker.Error{Shard: 0, Path: "shard-00000.tar", Offset: 15360, Op: "decode", Kind: worker.Corrupt, Err: errors.New("bad tar header")}}, nil,
			codes.DataLoss, []string{"shard-00000.tar", "offset 15360", "bad tar header"}},
		{"changed object", map[chunkKey]error{{2, 0}: &worker.Error{Shard: 2, Path: "shard-00002.tar", Offset: 0, Op: "read", Kind: worker.Changed, Err: worker.ErrChanged}}, nil,
			codes.FailedPrecondition, []string{"shard-00002.tar", "changed"}},
		{"throttled", map[chunkKey]error{{1, 0}: &worker.Error{Shard: 1, Path: "shard-00001.tar", Offset: 0, Op: "read", Kind: worker.Unavailable, Err: worker.ErrRetriesExhausted}}, nil,
			codes.Unavailable, []string{"shard-00001.tar", "retries exhausted"}},
		{"unclassified", map[chunkKey]error{{1, 1}: errors.New("permission denied on shard-00001.tar")}, nil,
			codes.Internal, []string{"shard-00001.tar"}},
		{"short chunk", nil, map[chunkKey]bool{{2, 1}: true}, codes.DataLoss, []string{`"shard-00002.tar"`, "offset 5120", "sample 9"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &fakeReader{m: m, errs: tt.errs, short: tt.short}
			cfg := testConfig(r)
			cfg.ReadaheadSteps = 2
			ts := startServer(t, cfg, fakePlanner)
			ctx := testCtx(t)
			job := &pb.JobSpec{WorldSize: 1, BatchSize: 4}
			got, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: job})
			msg := status.Convert(err).Message()
			if status.Code(err) != tt.code {
				t.Fatalf("stream ended with %v, want %v", err, tt.code)
			}
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q does not name %q", msg, w)
				}
			}
			// Every step before the bad one arrived, in order, and no later one.
			// (A failed read spoils the chunk's first sample, a short chunk
			// its last.)
			var firstBad int64
			for k := range tt.errs {
				firstBad = (int64(k.shard)*20 + m.Shards[k.shard].Chunks[k.chunk].FirstSample) / 4
			}
			for k := range tt.short {
				c := m.Shards[k.shard].Chunks[k.chunk]
				firstBad = (int64(k.shard)*20 + c.FirstSample + c.Samples - 1) / 4
			}
			if int64(len(got)) != firstBad {
				t.Errorf("got %d batches before the error, want %d (the steps before the bad chunk)", len(got), firstBad)
			}
		})
	}
}

func TestMaxStreams(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(2, 10, 5), gate: make(chan struct{})}
	cfg := testConfig(r)
	cfg.MaxStreams = 1
	ts := startServer(t, cfg, fakePlanner)
	ctx := testCtx(t)
	job := &pb.JobSpec{WorldSize: 1, BatchSize: 2}

	first, err := ts.loader.StreamBatches(ctx, &pb.StreamBatchesRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	r.waitRead(t, ctx) // the first stream holds the only slot once its first read starts
	second, err := ts.loader.StreamBatches(ctx, &pb.StreamBatchesRequest{Job: job})
	if err == nil {
		_, err = second.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("second stream: %v, want ResourceExhausted", err)
	}
	close(r.gate)
	got, err := collect(first, -1)
	if err != nil || len(got) != 10 {
		t.Errorf("first stream: %d batches, %v; want 10, nil", len(got), err)
	}
}

// TestSlowConsumer checks that a client that stops reading stops the
// read-ahead: the loader fetches at most the steps in the transport's
// buffers plus ReadaheadSteps+2, however long the epoch.
func TestSlowConsumer(t *testing.T) {
	leaktest.Check(t)
	const (
		readahead  = 4
		fieldSize  = 64 << 10 // each sample is bigger than the client's flow-control window
		batchSize  = 2
		chunkSize  = 2 // one step = one chunk
		totalSteps = 200
	)
	r := &fakeReader{m: testManifest(1, totalSteps*batchSize, chunkSize), fieldSize: fieldSize}
	cfg := testConfig(r)
	cfg.ReadaheadSteps = readahead
	cfg.FetchConcurrency = 4
	// A fixed 64 KiB window turns off BDP window growth: the transport holds
	// at most one or two batches.
	ts := startServer(t, cfg, fakePlanner, grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	ctx := testCtx(t)
	st, err := ts.loader.StreamBatches(ctx, &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: batchSize}})
	if err != nil {
		t.Fatal(err)
	}
	first, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	// The client now reads nothing. Wait until the loader stops fetching
	// (no new fetch for 300ms) and check where it stopped.
	const bound = 1 + 4 + readahead + 2 // received + in transport + queued + in hand
	last, stable := r.calls.Load(), time.Now()
	for time.Since(stable) < 300*time.Millisecond {
		if ctx.Err() != nil {
			t.Fatalf("the loader never stopped fetching: %d of %d chunks", r.calls.Load(), totalSteps)
		}
		time.Sleep(10 * time.Millisecond) // polling a counter: nothing to wait on
		if n := r.calls.Load(); n != last {
			last, stable = n, time.Now()
		}
		if last > bound {
			t.Fatalf("a client that stopped reading let the loader fetch %d chunks (steps), want at most %d", last, bound)
		}
	}
	t.Logf("stalled client: loader fetched %d of %d steps (bound %d)", last, totalSteps, bound)
	// Reading again drains the whole epoch.
	rest, err := collect(st, -1)
	if err != nil || len(rest)+1 != totalSteps || first.Batch.Step != 0 {
		t.Errorf("after the stall: %d more batches, %v; want %d", len(rest), err, totalSteps-1)
	}
}

func TestCancelMidStream(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(4, 100, 10), fieldSize: 1000}
	ts := startServer(t, testConfig(r), fakePlanner)
	ctx := testCtx(t)
	sctx, cancel := context.WithCancel(ctx)
	st, err := ts.loader.StreamBatches(sctx, &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 3}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := collect(st, 5); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := collect(st, -1); status.Code(err) != codes.Canceled {
		t.Errorf("after cancel: %v, want Canceled", err)
	}
	// leaktest.Check verifies the server's read-ahead goroutines ended.
}

func TestGracefulStopForcesAfterTimeout(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(1, 10, 5), gate: make(chan struct{})} // reads never finish
	cfg := testConfig(r)
	cfg.ShutdownTimeout = 200 * time.Millisecond
	ts := startServer(t, cfg, fakePlanner)
	ctx := testCtx(t)
	hc := healthpb.NewHealthClient(ts.conn)
	if h, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || h.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health = %v, %v; want SERVING", h, err)
	}
	st, err := ts.loader.StreamBatches(ctx, &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 2}})
	if err != nil {
		t.Fatal(err)
	}
	r.waitRead(t, ctx)
	start := time.Now()
	if err := ts.stop(); err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stop took %v with ShutdownTimeout 200ms", d)
	}
	if _, err := collect(st, -1); status.Code(err) != codes.Unavailable && status.Code(err) != codes.Canceled {
		t.Errorf("stream after a forced stop: %v, want Unavailable or Canceled", err)
	}
}

func TestMetricsEndpoint(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(2, 10, 5)}
	ts := startServer(t, testConfig(r), fakePlanner)
	ctx := testCtx(t)
	streamRank(t, ctx, ts.loader, &pb.JobSpec{WorldSize: 1, BatchSize: 5}, 0, 0)

	req, _ := http.NewRequestWithContext(ctx, "GET", ts.metrics, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	http.DefaultClient.CloseIdleConnections()
	for _, want := range []string{
		"shardstream_loader_batches_sent_total 4",
		"shardstream_loader_samples_sent_total 20",
		"shardstream_loader_streams_open 0",
		`shardstream_loader_streams_total{code="OK"} 1`,
		"shardstream_loader_step_wait_seconds_count 4",
		"shardstream_loader_bytes_sent_total",
		"shardstream_plan_cache_misses_total 1",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

// TestResumeElastic resumes an epoch from a batch's token with another
// world and batch size through the real sampler: the two parts together
// deliver every sample at most once, and all but the dropped ones.
func TestResumeElastic(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(7, 23, 6)}
	ts := startServer(t, testConfig(r), samplerPlanner)
	ctx := testCtx(t)
	const total = 7 * 23
	job := &pb.JobSpec{WorldSize: 2, BatchSize: 3, Seed: 5, Epoch: 1}

	seen := map[sampler.SampleID]int{}
	const k = 4
	var token string
	for rank := range uint32(2) {
		got, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: job, Rank: rank, MaxSteps: k})
		if err != nil || len(got) != k {
			t.Fatalf("rank %d: %d batches, %v; want %d", rank, len(got), err, k)
		}
		for _, id := range ids(got) {
			seen[id]++
		}
		if rank == 0 {
			token = got[k-1].ResumeToken
		} else if got[k-1].ResumeToken != token {
			t.Fatalf("ranks disagree on the token after step %d: %q, %q", k-1, token, got[k-1].ResumeToken)
		}
	}

	job2 := &pb.JobSpec{WorldSize: 3, BatchSize: 2, Seed: 5, Epoch: 1, ResumeToken: token}
	plan, err := ts.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: job2})
	if err != nil {
		t.Fatal(err)
	}
	if n := tokenSteps(t, samplerPlanner, plan.ResumeToken); n != k {
		t.Errorf("PlanEpoch from a token after %d steps returned token %q, which says %d steps", k, plan.ResumeToken, n)
	}
	for rank := range uint32(3) {
		got := streamRank(t, ctx, ts.loader, job2, rank, 0)
		if int64(len(got)) != plan.Steps {
			t.Errorf("rank %d after resume: %d batches, want %d", rank, len(got), plan.Steps)
		}
		for _, id := range ids(got) {
			seen[id]++
		}
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("sample %v delivered %d times", id, n)
		}
	}
	if int64(len(seen))+plan.Dropped != total {
		t.Errorf("%d samples delivered + %d dropped, want %d", len(seen), plan.Dropped, total)
	}

	// The token is bound to its job and dataset.
	for _, tt := range []struct {
		modify func(*pb.JobSpec)
		code   codes.Code
		want   string
	}{
		{func(j *pb.JobSpec) { j.Seed = 6 }, codes.FailedPrecondition, "seed"},
		{func(j *pb.JobSpec) { j.Epoch = 2 }, codes.FailedPrecondition, "epoch"},
		{func(j *pb.JobSpec) { j.Window = 2 }, codes.FailedPrecondition, "window"},
		{func(j *pb.JobSpec) { j.LastBatch = pb.LastBatchPolicy_LAST_BATCH_POLICY_PAD }, codes.FailedPrecondition, "last_batch"},
		{func(j *pb.JobSpec) { j.ResumeToken = token[:len(token)/2] }, codes.InvalidArgument, "resume_token"},
		{func(j *pb.JobSpec) { j.ResumeToken = "!!" + token }, codes.InvalidArgument, "resume_token"},
	} {
		j := &pb.JobSpec{WorldSize: 3, BatchSize: 2, Seed: 5, Epoch: 1, ResumeToken: token}
		tt.modify(j)
		_, err := ts.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: j})
		if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.want) {
			t.Errorf("PlanEpoch(%v) = %v, want %v naming %q", j, err, tt.code, tt.want)
		}
	}
}

// TestBatchTooLarge: a batch over MaxSendMsgSize ends the stream with
// ResourceExhausted instead of hanging or truncating.
func TestBatchTooLarge(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(1, 10, 5), fieldSize: 4 << 10}
	cfg := testConfig(r)
	cfg.MaxSendMsgSize = 16 << 10 // a batch of 8 samples is ~32 KiB
	ts := startServer(t, cfg, fakePlanner)
	if _, err := streamAll(testCtx(t), ts.loader, &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 8}}); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("oversized batch: %v, want ResourceExhausted", err)
	}
}

// badPlan names a sample the manifest does not have at step 2.
type badPlan struct{ epochPlan }

func (p badPlan) Batch(rank int, step int64, dst []sampler.SampleID) []sampler.SampleID {
	dst = p.epochPlan.Batch(rank, step, dst)
	if step == 2 {
		dst[0].Shard = 99
	}
	return dst
}

func TestPlanNamesMissingSample(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(2, 10, 5)}
	pl := planner{parseToken: parseFakeToken, newPlan: func(c []sampler.Unit, j sampler.Job, tok *sampler.Token, w, b int) (epochPlan, error) {
		p, err := newSeqPlan(c, j, tok, w, b)
		return badPlan{p}, err
	}}
	ts := startServer(t, testConfig(r), pl)
	got, err := streamAll(testCtx(t), ts.loader, &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 2}})
	if len(got) != 2 || status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "step 2: plan names sample 4 of shard 99") {
		t.Errorf("got %d batches then %v; want 2 then Internal naming step 2 and shard 99", len(got), err)
	}
}

// panicReader panics on one chunk.
type panicReader struct{ *fakeReader }

func (p panicReader) Fetch(ctx context.Context, s, c int) (*worker.Chunk, int64, error) {
	if s == 1 && c == 0 {
		panic("decoder bug")
	}
	return p.fakeReader.Fetch(ctx, s, c)
}

// TestPanicsStayInTheirStream: a panic in the read path or the planner ends
// that call with Internal; the server goes on serving.
func TestPanicsStayInTheirStream(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(2, 10, 5)}
	pl := planner{parseToken: parseFakeToken, newPlan: func(c []sampler.Unit, j sampler.Job, tok *sampler.Token, w, b int) (epochPlan, error) {
		if j.Seed == 666 {
			panic("planner bug")
		}
		return newSeqPlan(c, j, tok, w, b)
	}}
	ts := startServer(t, Config{Datasets: []Dataset{{Name: "d", Manifest: r.m, Chunks: panicReader{r}}}}, pl)
	ctx := testCtx(t)
	for _, tt := range []struct {
		job  *pb.JobSpec
		want string
	}{
		{&pb.JobSpec{WorldSize: 1, BatchSize: 2}, "shard-00001.tar"},
		{&pb.JobSpec{WorldSize: 1, BatchSize: 2, Seed: 666}, "planner bug"},
	} {
		_, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: tt.job})
		if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("seed %d: %v, want Internal naming %q", tt.job.Seed, err, tt.want)
		}
	}
	// Still serving.
	if _, err := ts.coord.GetDataset(ctx, &pb.GetDatasetRequest{}); err != nil {
		t.Errorf("after the panics: %v", err)
	}
}
