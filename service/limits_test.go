package service

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shardstream/shardstream/internal/leaktest"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/sampler"
)

// wantRefused checks err has code and names flag.
func wantRefused(t *testing.T, what string, err error, code codes.Code, flag string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), flag) {
		t.Errorf("%s: %v, want %v naming %s", what, err, code, flag)
	}
}

// TestRequestLimits: each limit on a request's cost refuses it before any
// planning, with its code and a message naming the flag, and the server
// serves a request within the limits right after.
func TestRequestLimits(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(8, 20, 5)} // 32 chunks of 5 samples of ~1 KiB
	cfg := testConfig(r)
	cfg.MaxWorldSize, cfg.MaxBatchSize = 4, 64
	cfg.MaxSendMsgSize = 32 << 10
	cfg.Limits = Limits{MaxWindow: 8, MaxWindowSamples: 30}
	// A 4-rank token of the real planner, to resume on a server that
	// allows fewer ranks.
	p, err := sampler.New(r.m.Units(), sampler.Job{Fingerprint: r.m.Fingerprint(), Window: 2, Policy: sampler.DropLast}, nil, 4, 2)
	if err != nil {
		t.Fatal(err)
	}
	wideToken := p.Token(1).String()
	cfg.MaxWorldSize = 2
	ts := startServer(t, cfg, samplerPlanner)
	ctx := testCtx(t)
	ok := &pb.JobSpec{WorldSize: 1, BatchSize: 2, Window: 2}
	for _, tt := range []struct {
		name string
		job  *pb.JobSpec
		code codes.Code
		flag string
	}{
		{"window", &pb.JobSpec{WorldSize: 1, BatchSize: 2, Window: 9}, codes.InvalidArgument, "--max-window"},
		{"window samples", &pb.JobSpec{WorldSize: 1, BatchSize: 2, Window: 7}, codes.InvalidArgument, "--max-window-samples"},
		{"world size", &pb.JobSpec{WorldSize: 3, BatchSize: 2, Window: 2}, codes.InvalidArgument, "--max-world-size"},
		{"batch size", &pb.JobSpec{WorldSize: 1, BatchSize: 65, Window: 2}, codes.InvalidArgument, "--max-batch-size"},
		{"batch bytes", &pb.JobSpec{WorldSize: 1, BatchSize: 40, Window: 2}, codes.InvalidArgument, "--max-message-size"},
		{"token world size", &pb.JobSpec{WorldSize: 1, BatchSize: 2, Window: 2, ResumeToken: wideToken}, codes.InvalidArgument, "--max-world-size"},
	} {
		_, err := ts.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: tt.job})
		wantRefused(t, tt.name+": PlanEpoch", err, tt.code, tt.flag)
		_, err = streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: tt.job})
		wantRefused(t, tt.name+": StreamBatches", err, tt.code, tt.flag)
		if _, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: ok}); err != nil {
			t.Errorf("after %s: a job within the limits: %v", tt.name, err)
		}
	}
	if r.calls.Load() == 0 {
		t.Error("no chunk read at all: the job within the limits did not stream")
	}
}

// TestPlanCacheBytes: a plan estimated larger than the whole plan cache is
// refused with ResourceExhausted; the cache holds plans up to its bytes.
func TestPlanCacheBytes(t *testing.T) {
	r := &fakeReader{m: testManifest(8, 20, 5)}
	cfg := testConfig(r)
	j := &job{ds: newCatalog(cfg.Datasets).byName["default"], key: planKey{worldSize: 1, batchSize: 2, window: 2}}
	one := planBytes(j)
	cfg.Limits.PlanCacheBytes = 2*one + one/2 // two 1-rank plans fit, a 256-rank one does not
	ts := startServer(t, cfg, fakePlanner)
	ctx := testCtx(t)
	_, err := ts.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: &pb.JobSpec{WorldSize: 256, BatchSize: 1, Window: 2}})
	wantRefused(t, "a plan past the cache", err, codes.ResourceExhausted, "--plan-cache-size")
	for seed := range uint64(4) {
		if _, err := ts.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: &pb.JobSpec{Seed: seed, WorldSize: 1, BatchSize: 2, Window: 2}}); err != nil {
			t.Errorf("PlanEpoch(seed %d): %v", seed, err)
		}
	}
	c := ts.srv.plans
	c.mu.Lock()
	n, b := c.lru.Len(), c.bytes
	c.mu.Unlock()
	if n != 2 || b > cfg.Limits.PlanCacheBytes {
		t.Errorf("plan cache holds %d plans of %d bytes, want 2 within %d", n, b, cfg.Limits.PlanCacheBytes)
	}
}

// TestConcurrentPlans: past Limits.MaxConcurrentPlans, a request needing a
// new plan is refused with ResourceExhausted, and served once a slot is
// free; the refusal is not cached.
func TestConcurrentPlans(t *testing.T) {
	r := &fakeReader{m: testManifest(4, 10, 5)}
	cfg := testConfig(r)
	cfg.Limits.MaxConcurrentPlans = 1
	gate, started := make(chan struct{}), make(chan struct{}, 4)
	pl := planner{parseToken: parseFakeToken, newPlan: func(u []sampler.Unit, j sampler.Job, tok *sampler.Token, w, b int) (epochPlan, error) {
		if j.Seed == 1 {
			started <- struct{}{}
			<-gate
		}
		return newSeqPlan(u, j, tok, w, b)
	}}
	ts := startServer(t, cfg, pl)
	ctx := testCtx(t)
	done := make(chan error, 1)
	go func() {
		_, err := ts.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: &pb.JobSpec{Seed: 1, WorldSize: 1, BatchSize: 2}})
		done <- err
	}()
	<-started
	_, err := ts.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: &pb.JobSpec{Seed: 2, WorldSize: 1, BatchSize: 2}})
	wantRefused(t, "a second plan while one computes", err, codes.ResourceExhausted, "--max-concurrent-plans")
	close(gate)
	if err := <-done; err != nil {
		t.Errorf("the first plan: %v", err)
	}
	if _, err := ts.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: &pb.JobSpec{Seed: 2, WorldSize: 1, BatchSize: 2}}); err != nil {
		t.Errorf("the second plan, retried: %v", err)
	}
}

// TestClientStreams: a client past Limits.MaxClientStreams is refused with
// ResourceExhausted, another client is served meanwhile, and the first is
// served again once its stream ends.
func TestClientStreams(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(4, 10, 5), gate: make(chan struct{})}
	cfg := testConfig(r)
	cfg.Limits.MaxClientStreams = 1
	const alice, bob = "alice-token", "bob-token"
	cfg.AuthFile = t.TempDir() + "/auth"
	writeFile(t, cfg.AuthFile, []byte("alice "+tokenHash(alice)+" *\nbob "+tokenHash(bob)+" *\n"))
	ts := startServer(t, cfg, fakePlanner)
	ctx := testCtx(t)
	req := &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 2}}
	sctx, cancel := context.WithCancel(bearer(ctx, alice))
	st, err := ts.loader.StreamBatches(sctx, req)
	if err != nil {
		t.Fatal(err)
	}
	r.waitRead(t, ctx)
	_, err = streamAll(bearer(ctx, alice), ts.loader, req)
	wantRefused(t, "alice's second stream", err, codes.ResourceExhausted, "--max-client-streams")
	close(r.gate)
	if _, err := streamAll(bearer(ctx, bob), ts.loader, req); err != nil {
		t.Errorf("bob's stream: %v", err)
	}
	if _, err := collect(st, -1); err != nil {
		t.Errorf("alice's first stream: %v", err)
	}
	cancel()
	if _, err := streamAll(bearer(ctx, alice), ts.loader, req); err != nil {
		t.Errorf("alice's stream after the first ended: %v", err)
	}
}

// TestConnStreams: Limits.MaxConnStreams is HTTP/2's stream limit per
// connection: a call past it waits (here until its deadline), and other
// connections are served.
func TestConnStreams(t *testing.T) {
	r := &fakeReader{m: testManifest(4, 10, 5), gate: make(chan struct{})}
	cfg := testConfig(r)
	cfg.Limits.MaxConnStreams = 1
	ts := startServer(t, cfg, fakePlanner)
	ctx := testCtx(t)
	req := &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 2}}
	st, err := ts.loader.StreamBatches(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	r.waitRead(t, ctx)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = streamAll(short, ts.loader, req)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("a second stream on the connection: %v, want DeadlineExceeded", err)
	}
	conn, err := grpc.NewClient(ts.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := pb.NewCoordinatorServiceClient(conn).GetDataset(ctx, &pb.GetDatasetRequest{}); err != nil {
		t.Errorf("another connection: %v", err)
	}
	close(r.gate)
	if _, err := collect(st, -1); err != nil {
		t.Errorf("the first stream: %v", err)
	}
}

// TestSendTimeout: a client that stops reading loses its stream after
// Limits.SendTimeout, with DeadlineExceeded, and its slot serves another.
func TestSendTimeout(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(8, 100, 10), fieldSize: 64 << 10} // 800 samples of 64 KiB
	cfg := testConfig(r)
	cfg.MaxStreams = 1
	cfg.Limits.SendTimeout = 300 * time.Millisecond
	ts := startServer(t, cfg, fakePlanner)
	ctx := testCtx(t)
	req := &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 8}}
	stalled, err := ts.loader.StreamBatches(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := collect(stalled, 1); err != nil { // opened; now it stops reading
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: req.Job, MaxSteps: 2})
		if err == nil {
			break
		}
		if status.Code(err) != codes.ResourceExhausted || time.Now().After(deadline) {
			t.Fatalf("a stream after the stalled one: %v, want its slot freed within 10s", err)
		}
		time.Sleep(50 * time.Millisecond) // the stall deadline runs on the server's clock
	}
	_, err = collect(stalled, -1)
	wantRefused(t, "the stalled stream", err, codes.DeadlineExceeded, "--send-timeout")
}
