package service

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardstream/shardstream/internal/leaktest"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// Pool timings for tests: beats every 50ms, dropped after 400ms of
// silence, so a dead loader leaves the pool in well under a second.
const (
	testBeat        = 50 * time.Millisecond
	testPoolTimeout = 400 * time.Millisecond
)

// startCoordinator serves a RoleCoordinator on addr ("127.0.0.1:0" for a
// free port).
func startCoordinator(t *testing.T, r *fakeReader, addr string) *testServer {
	t.Helper()
	cfg := testConfig(r)
	cfg.Role = RoleCoordinator
	cfg.PoolTimeout, cfg.HeartbeatInterval = testPoolTimeout, testBeat
	return startServerOn(t, cfg, fakePlanner, addr)
}

// poolLoader is a RoleLoader registered with a coordinator.
type poolLoader struct {
	*testServer
	reg     *Registration
	stopReg context.CancelFunc
	regDone chan struct{}
}

// startPoolLoader serves a loader and keeps it in the pool of the
// coordinator at coord until kill or the test's end.
func startPoolLoader(t *testing.T, r *fakeReader, coord string) *poolLoader {
	t.Helper()
	cfg := testConfig(r)
	cfg.Role = RoleLoader
	ts := startServer(t, cfg, fakePlanner)
	reg, err := ts.srv.Register(RegisterConfig{Coordinator: coord, Advertise: ts.addr, Interval: testBeat})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &poolLoader{testServer: ts, reg: reg, stopReg: cancel, regDone: make(chan struct{})}
	go func() { // ends with ctx
		defer close(l.regDone)
		if err := reg.Run(ctx); err != nil {
			t.Errorf("Registration.Run: %v", err)
		}
	}()
	t.Cleanup(l.kill)
	return l
}

// kill stops the loader without a drain, like a SIGKILL: its beats stop
// and its server stops by force.
func (l *poolLoader) kill() {
	l.stopReg()
	<-l.regDone
	l.srv.grpc.Stop()
}

// listLoaders returns the coordinator's pool.
func listLoaders(t *testing.T, ctx context.Context, c *testServer) *pb.ListLoadersResponse {
	t.Helper()
	resp, err := pb.NewPoolServiceClient(c.conn).ListLoaders(ctx, &pb.ListLoadersRequest{})
	if err != nil {
		t.Fatalf("ListLoaders: %v", err)
	}
	return resp
}

// waitPool polls the coordinator's pool until ok holds for it, failing
// the test at ctx's end.
func waitPool(t *testing.T, ctx context.Context, c *testServer, what string, ok func([]*pb.PoolLoader) bool) []*pb.PoolLoader {
	t.Helper()
	for {
		ls := listLoaders(t, ctx, c).GetLoaders()
		if ok(ls) {
			return ls
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pool never %s; last %v", what, ls)
		case <-time.After(10 * time.Millisecond): // polling the pool: nothing to wait on
		}
	}
}

// poolAddrs are the addresses of ls that are not leaving, sorted.
func poolAddrs(ls []*pb.PoolLoader) []string {
	var out []string
	for _, l := range ls {
		if !l.GetLeaving() {
			out = append(out, l.GetAddress())
		}
	}
	slices.Sort(out)
	return out
}

func hasAddrs(want ...string) func([]*pb.PoolLoader) bool {
	slices.Sort(want)
	return func(ls []*pb.PoolLoader) bool { return slices.Equal(poolAddrs(ls), want) }
}

// planLoaders returns each rank's loader addresses for a job of world
// ranks, with at most k per rank.
func planLoaders(t *testing.T, ctx context.Context, c *testServer, world, k uint32) [][]string {
	t.Helper()
	resp, err := c.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: &pb.JobSpec{WorldSize: world, BatchSize: 2}, MaxLoadersPerRank: k})
	if err != nil {
		t.Fatalf("PlanEpoch: %v", err)
	}
	var out [][]string
	for r, rl := range resp.GetRankLoaders() {
		if a := rl.GetAddresses(); len(a) == 0 || a[0] != resp.GetLoaderAddresses()[r] {
			t.Errorf("rank %d: rank_loaders %q, loader_addresses %q: the first must agree", r, a, resp.GetLoaderAddresses()[r])
		}
		out = append(out, rl.GetAddresses())
	}
	if len(out) != int(world) {
		t.Fatalf("PlanEpoch gave %d ranks loaders, want %d", len(out), world)
	}
	return out
}

// TestPoolAssigns registers two loaders and checks that PlanEpoch spreads
// ranks over them, gives K distinct loaders per rank when asked, that the
// coordinator serves no batches and an empty pool is Unavailable.
func TestPoolAssigns(t *testing.T) {
	leaktest.Check(t)
	ctx := testCtx(t)
	r := &fakeReader{m: testManifest(4, 40, 10), fieldSize: 8}
	coord := startCoordinator(t, r, "127.0.0.1:0")

	_, err := coord.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: &pb.JobSpec{WorldSize: 2, BatchSize: 2}})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shardstream loader") {
		t.Errorf("PlanEpoch on an empty pool: %v, want Unavailable naming 'shardstream loader'", err)
	}
	st, err := coord.loader.StreamBatches(ctx, &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 2}})
	if err == nil {
		_, err = st.Recv()
	}
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "coordinator") {
		t.Errorf("StreamBatches on the coordinator: %v, want FailedPrecondition naming the coordinator", err)
	}

	a := startPoolLoader(t, r, coord.addr)
	b := startPoolLoader(t, r, coord.addr)
	waitPool(t, ctx, coord, "held both loaders", hasAddrs(a.addr, b.addr))

	count := map[string]int{}
	for rank, addrs := range planLoaders(t, ctx, coord, 4, 0) {
		if len(addrs) != 1 {
			t.Errorf("rank %d: %q, want one loader without max_loaders_per_rank", rank, addrs)
		}
		count[addrs[0]]++
	}
	if count[a.addr] != 2 || count[b.addr] != 2 {
		t.Errorf("ranks per loader %v, want 2 on each of %s and %s", count, a.addr, b.addr)
	}
	for rank, addrs := range planLoaders(t, ctx, coord, 3, 4) {
		if len(addrs) != 2 || addrs[0] == addrs[1] {
			t.Errorf("rank %d with max_loaders_per_rank 4 and 2 loaders: %q, want 2 distinct", rank, addrs)
		}
	}
	_, err = coord.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 2}, MaxLoadersPerRank: 5000})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("max_loaders_per_rank 5000: %v, want InvalidArgument", err)
	}

	// The plan's loaders serve the rank.
	plan := planLoaders(t, ctx, coord, 1, 0)
	l := a
	if plan[0][0] == b.addr {
		l = b
	}
	got, err := streamAll(ctx, l.loader, &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 2}})
	if err != nil || len(got) != 80 {
		t.Errorf("stream from the assigned loader: %d batches, %v; want 80", len(got), err)
	}

	body := scrape(t, coord.metrics)
	for _, want := range []string{
		`shardstream_pool_loaders{state="serving"} 2`,
		`shardstream_pool_loader_streams_open{address="` + a.addr + `"}`,
		`shardstream_pool_heartbeats_total`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="Heartbeat",grpc_service="shardstream.v1.PoolService",grpc_type="unary"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("coordinator /metrics lacks %s", want)
		}
	}
}

// TestPoolLoaderKilled stops a loader without a drain: it leaves the pool
// after the missed-beat window and gets no more ranks.
func TestPoolLoaderKilled(t *testing.T) {
	leaktest.Check(t)
	ctx := testCtx(t)
	r := &fakeReader{m: testManifest(4, 40, 10), fieldSize: 8}
	coord := startCoordinator(t, r, "127.0.0.1:0")
	a := startPoolLoader(t, r, coord.addr)
	b := startPoolLoader(t, r, coord.addr)
	waitPool(t, ctx, coord, "held both loaders", hasAddrs(a.addr, b.addr))

	killed := time.Now()
	b.kill()
	waitPool(t, ctx, coord, "dropped the killed loader", hasAddrs(a.addr))
	gone := time.Since(killed)
	if gone < testPoolTimeout-testBeat {
		t.Errorf("killed loader dropped after %v, before the %v missed-beat window", gone, testPoolTimeout)
	}
	t.Logf("killed loader left the pool after %v (timeout %v)", gone, testPoolTimeout)
	for rank, addrs := range planLoaders(t, ctx, coord, 4, 2) {
		if !slices.Equal(addrs, []string{a.addr}) {
			t.Errorf("rank %d: %q after %s died, want only %s", rank, addrs, b.addr, a.addr)
		}
	}
	if body := scrape(t, coord.metrics); strings.Contains(body, b.addr) {
		t.Errorf("coordinator /metrics still names the dropped loader %s", b.addr)
	}
}

// TestPoolDrain drains a loader with an open stream: it leaves the pool
// at once (still listed, leaving), is assigned no more ranks, finishes its
// open stream, and its ServeInPool returns nil.
func TestPoolDrain(t *testing.T) {
	leaktest.Check(t)
	ctx := testCtx(t)
	r := &fakeReader{m: testManifest(4, 40, 10), fieldSize: 8}
	coord := startCoordinator(t, r, "127.0.0.1:0")
	a := startPoolLoader(t, r, coord.addr)

	// b runs as the loader command runs it: ServeInPool until its context
	// ends (SIGTERM), then the drain.
	// Its reads wait for gate, so its stream cannot end before the test
	// lets it.
	gated := &fakeReader{m: r.m, fieldSize: 8, gate: make(chan struct{})}
	cfg := testConfig(gated)
	cfg.Role = RoleLoader
	cfg.ShutdownTimeout = 20 * time.Second
	srv, err := newServer(cfg, fakePlanner)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	baddr := lis.Addr().String()
	reg, err := srv.Register(RegisterConfig{Coordinator: coord.addr, Advertise: baddr, Interval: testBeat})
	if err != nil {
		t.Fatal(err)
	}
	sigterm, term := context.WithCancel(context.Background())
	defer term()
	served := make(chan error, 1)
	go func() { served <- srv.ServeInPool(sigterm, lis, nil, reg, 0) }()
	waitPool(t, ctx, coord, "held both loaders", hasAddrs(a.addr, baddr))

	// A stream open on b, its reads held at the gate.
	bc := dialTest(t, baddr)
	job := &pb.JobSpec{WorldSize: 1, BatchSize: 2}
	st, err := pb.NewLoaderServiceClient(bc).StreamBatches(ctx, &pb.StreamBatchesRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	gated.waitRead(t, ctx)

	term()
	ls := waitPool(t, ctx, coord, "saw the loader leaving", hasAddrs(a.addr))
	if len(ls) != 2 {
		t.Errorf("pool while draining: %v, want both loaders listed, %s leaving", ls, baddr)
	}
	for rank, addrs := range planLoaders(t, ctx, coord, 4, 2) {
		if !slices.Equal(addrs, []string{a.addr}) {
			t.Errorf("rank %d: %q while %s drains, want only %s", rank, addrs, baddr, a.addr)
		}
	}
	select {
	case err := <-served:
		t.Fatalf("ServeInPool returned %v with a stream open", err)
	default:
	}
	close(gated.gate)
	got, err := collect(st, -1)
	if err != nil || len(got) != 80 {
		t.Errorf("open stream during the drain: %d batches, %v; want 80 and a clean end", len(got), err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("ServeInPool after the drain: %v, want nil", err)
		}
	case <-ctx.Done():
		t.Fatal("ServeInPool did not return after its last stream ended")
	}
	waitPool(t, ctx, coord, "dropped the drained loader", func(ls []*pb.PoolLoader) bool { return len(ls) == 1 })
}

// TestPoolCoordinatorRestart restarts the coordinator on its address: the
// pool reforms from heartbeats within seconds.
func TestPoolCoordinatorRestart(t *testing.T) {
	leaktest.Check(t)
	ctx := testCtx(t)
	r := &fakeReader{m: testManifest(4, 40, 10), fieldSize: 8}
	coord := startCoordinator(t, r, "127.0.0.1:0")
	a := startPoolLoader(t, r, coord.addr)
	b := startPoolLoader(t, r, coord.addr)
	waitPool(t, ctx, coord, "held both loaders", hasAddrs(a.addr, b.addr))

	if err := coord.stop(); err != nil {
		t.Fatal(err)
	}
	restarted := time.Now()
	coord2 := startCoordinator(t, r, coord.addr)
	waitPool(t, ctx, coord2, "reformed", hasAddrs(a.addr, b.addr))
	took := time.Since(restarted)
	t.Logf("pool reformed %v after the coordinator restarted", took)
	if took > 6*time.Second {
		t.Errorf("pool reformed after %v, want within a few seconds (backoff caps at %v)", took, maxBackoff)
	}
	planLoaders(t, ctx, coord2, 2, 0)
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPoolAssignOrder pins the assignment: least loaded first (reported
// streams plus stripes given in this plan), ties to the smaller address,
// draining loaders never, silent ones dropped at the timeout.
func TestPoolAssignOrder(t *testing.T) {
	now := time.Unix(1000, 0)
	p := newPool(3*time.Second, time.Second, DefaultMaxWatches, func() time.Time { return now }, testLogger())
	p.beat("c:1", &pb.LoaderLoad{StreamsOpen: 0}, false)
	p.beat("b:1", &pb.LoaderLoad{StreamsOpen: 0}, false)
	p.beat("a:1", &pb.LoaderLoad{StreamsOpen: 3}, false)
	p.beat("d:1", &pb.LoaderLoad{StreamsOpen: 0}, true) // draining
	for _, tc := range []struct {
		world, k int
		want     [][]string
	}{
		{6, 1, [][]string{{"b:1"}, {"c:1"}, {"b:1"}, {"c:1"}, {"b:1"}, {"c:1"}}},
		{7, 1, [][]string{{"b:1"}, {"c:1"}, {"b:1"}, {"c:1"}, {"b:1"}, {"c:1"}, {"a:1"}}},
		{2, 2, [][]string{{"b:1", "c:1"}, {"c:1", "b:1"}}},
		{3, 8, [][]string{{"b:1", "c:1", "a:1"}, {"c:1", "a:1", "b:1"}, {"a:1", "b:1", "c:1"}}},
	} {
		if got := p.assign(tc.world, tc.k); !slices.EqualFunc(got, tc.want, slices.Equal) {
			t.Errorf("assign(%d, %d) = %q, want %q", tc.world, tc.k, got, tc.want)
		}
	}
	now = now.Add(2 * time.Second)
	p.beat("b:1", &pb.LoaderLoad{}, false)
	now = now.Add(time.Second) // a, c and d silent for 3s: dropped
	if got, want := p.assign(2, 1), [][]string{{"b:1"}, {"b:1"}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("after a, c, d fell silent: assign(2, 1) = %q, want %q", got, want)
	}
	now = now.Add(3 * time.Second)
	if got := p.assign(1, 1); got != nil {
		t.Errorf("empty pool: assign = %q, want nil", got)
	}
}

func testLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
