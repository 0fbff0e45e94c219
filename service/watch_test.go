package service

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardstream/shardstream/internal/leaktest"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// slotState is each watched rank's addresses and generation.
func slotState(p *pool, keys []slotKey) ([][]string, []uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	var addrs [][]string
	var gens []uint64
	for _, k := range keys {
		s := p.slots[k]
		addrs = append(addrs, slices.Clone(s.addrs))
		gens = append(gens, s.gen)
	}
	return addrs, gens
}

// stripesPer counts the stripes each loader holds.
func stripesPer(addrs [][]string) map[string]int {
	n := map[string]int{}
	for _, a := range addrs {
		for _, x := range a {
			n[x]++
		}
	}
	return n
}

// changed lists the ranks whose generation moved from before to after.
func changed(before, after []uint64) []int {
	var out []int
	for i := range before {
		if before[i] != after[i] {
			out = append(out, i)
		}
	}
	return out
}

// TestAssignmentSticky pins the table's rebalancing on a pool with a fake
// clock: a joining loader takes just enough stripes to balance, a draining
// one and a silent one lose theirs to the others, a rank that asked for
// more stripes than loaders grows when one joins, and nothing else moves.
func TestAssignmentSticky(t *testing.T) {
	now := time.Unix(1000, 0)
	p := newPool(3*time.Second, time.Second, 100, func() time.Time { return now }, testLogger())
	now = now.Add(3 * time.Second) // past the reforming window (TestAssignmentRestart)
	p.beat("a:1", nil, false)
	p.beat("b:1", nil, false)
	job := planKey{dataset: "default", worldSize: 4, batchSize: 2}
	var keys []slotKey
	for r := range 4 {
		k := slotKey{job: job, rank: r, k: 1}
		if _, ok := p.watch(k, nil); !ok {
			t.Fatal("watch refused under the limit")
		}
		keys = append(keys, k)
	}
	addrs, gen0 := slotState(p, keys)
	if n := stripesPer(addrs); n["a:1"] != 2 || n["b:1"] != 2 {
		t.Fatalf("4 ranks on 2 loaders: %q, want 2 stripes each", addrs)
	}

	// c joins: one stripe moves to it (2,2,0 → 1,2,1 or 2,1,1), no more.
	p.beat("c:1", nil, false)
	addrs, gen1 := slotState(p, keys)
	if moved := changed(gen0, gen1); len(moved) != 1 || !slices.Equal(addrs[moved[0]], []string{"c:1"}) {
		t.Errorf("after c joined: ranks %v changed, now %q; want exactly one moved to c:1", moved, addrs)
	}

	// b drains: only its ranks move, to a or c, keeping the spread at 1.
	var onB []int
	for r, a := range addrs {
		if a[0] == "b:1" {
			onB = append(onB, r)
		}
	}
	p.beat("b:1", nil, true)
	addrs, gen2 := slotState(p, keys)
	if moved := changed(gen1, gen2); !slices.Equal(moved, onB) {
		t.Errorf("after b drained: ranks %v changed, want just b's %v", moved, onB)
	}
	if n := stripesPer(addrs); n["b:1"] != 0 || n["a:1"] != 2 || n["c:1"] != 2 {
		t.Errorf("after b drained: %q, want 2 stripes on each of a:1 and c:1", addrs)
	}

	// c falls silent: at the timeout its ranks move to a, on any read.
	var onC []int
	for r, a := range addrs {
		if a[0] == "c:1" {
			onC = append(onC, r)
		}
	}
	now = now.Add(2 * time.Second)
	p.beat("a:1", nil, false)
	p.beat("b:1", nil, true)
	now = now.Add(time.Second + time.Millisecond)
	p.current(p.slots[keys[0]])
	addrs, gen3 := slotState(p, keys)
	if moved := changed(gen2, gen3); !slices.Equal(moved, onC) {
		t.Errorf("after c fell silent: ranks %v changed, want just c's %v", moved, onC)
	}
	for r, a := range addrs {
		if !slices.Equal(a, []string{"a:1"}) {
			t.Errorf("rank %d after c fell silent: %q, want [a:1]", r, a)
		}
	}

	// A rank asking for 3 stripes gets 1 (one loader serves), 2 when d
	// joins, keeping a in its place.
	k3 := slotKey{job: job, rank: 0, k: 3}
	s3, _ := p.watch(k3, nil)
	if got, _, _ := p.current(s3); !slices.Equal(got, []string{"a:1"}) {
		t.Errorf("3 stripes wanted, one loader: %q, want [a:1]", got)
	}
	p.beat("d:1", nil, false)
	if got, gen, _ := p.current(s3); !slices.Equal(got, []string{"a:1", "d:1"}) || gen != 2 {
		t.Errorf("3 stripes wanted, d joined: %q (generation %d), want [a:1 d:1] at generation 2", got, gen)
	}

	// A new rank's watch keeps the serving addresses it names, in place.
	k5 := slotKey{job: job, rank: 1, k: 2}
	s5, _ := p.watch(k5, []string{"x:1", "d:1"})
	if got, _, _ := p.current(s5); len(got) != 2 || got[1] != "d:1" {
		t.Errorf("watch naming [x:1 d:1]: %q, want d:1 kept as stripe 1", got)
	}

	// The limit counts watchers; the last one's unwatch drops the slot.
	p.maxWatches = p.watchers
	if _, ok := p.watch(keys[0], nil); ok {
		t.Error("watch past maxWatches accepted")
	}
	for _, k := range append(keys, k3, k5) {
		p.unwatch(k)
	}
	if p.watchers != 0 || len(p.slots) != 0 {
		t.Errorf("after every unwatch: %d watchers, %d slots; want none", p.watchers, len(p.slots))
	}
}

// TestAssignmentRestart: a restarted coordinator's table keeps the
// addresses the ranks name while the pool reforms, moves nothing when their
// loaders come back, and moves the stripes of one that does not once the
// pool is settled.
func TestAssignmentRestart(t *testing.T) {
	now := time.Unix(1000, 0)
	p := newPool(3*time.Second, time.Second, 100, func() time.Time { return now }, testLogger())
	job := planKey{dataset: "default", worldSize: 2, batchSize: 2}
	k0, k1 := slotKey{job: job, rank: 0, k: 2}, slotKey{job: job, rank: 1, k: 2}
	s0, _ := p.watch(k0, []string{"a:1", "b:1"})
	s1, _ := p.watch(k1, []string{"b:1", "c:1"})
	p.beat("b:1", nil, false)
	now = now.Add(time.Second)
	p.beat("a:1", nil, false)
	p.beat("b:1", nil, false)
	a0, g0, _ := p.current(s0)
	a1, g1, _ := p.current(s1)
	if !slices.Equal(a0, []string{"a:1", "b:1"}) || !slices.Equal(a1, []string{"b:1", "c:1"}) || g0 != 1 || g1 != 1 {
		t.Errorf("while reforming: %q@%d %q@%d, want the ranks' own [a:1 b:1]@1 [b:1 c:1]@1", a0, g0, a1, g1)
	}
	// c never came back: settled, rank 1's stripe 1 moves to a, rank 0
	// stays.
	now = now.Add(2 * time.Second)
	p.beat("a:1", nil, false)
	p.beat("b:1", nil, false)
	a0, g0, _ = p.current(s0)
	a1, g1, _ = p.current(s1)
	if !slices.Equal(a0, []string{"a:1", "b:1"}) || g0 != 1 || !slices.Equal(a1, []string{"b:1", "a:1"}) || g1 != 2 {
		t.Errorf("settled without c: %q@%d %q@%d, want [a:1 b:1]@1 [b:1 a:1]@2", a0, g0, a1, g1)
	}
}

// recvAssignment waits for the next assignment on st.
func recvAssignment(t *testing.T, st grpc.ServerStreamingClient[pb.WatchAssignmentResponse]) *pb.WatchAssignmentResponse {
	t.Helper()
	a, err := st.Recv()
	if err != nil {
		t.Fatalf("WatchAssignment.Recv: %v", err)
	}
	return a
}

// TestWatchAssignment watches two ranks on a real coordinator with real
// loaders: a joining loader takes one rank, a killed one gives it back
// after the missed-beat window, a drained one at once, and PlanEpoch
// names what the watch does.
func TestWatchAssignment(t *testing.T) {
	leaktest.Check(t)
	ctx := testCtx(t)
	r := &fakeReader{m: testManifest(4, 40, 10), fieldSize: 8}
	// A missed-beat window of 20 beats: the test reads every change in
	// turn, and a beat late on a loaded host must not drop a loader.
	const timeout = time.Second
	cfg := testConfig(r)
	cfg.Role = RoleCoordinator
	cfg.PoolTimeout, cfg.HeartbeatInterval = timeout, testBeat
	coord := startServer(t, cfg, fakePlanner)
	a := startPoolLoader(t, r, coord.addr)
	waitPool(t, ctx, coord, "held a", hasAddrs(a.addr))

	job := &pb.JobSpec{WorldSize: 2, BatchSize: 2}
	watch := func(rank uint32) grpc.ServerStreamingClient[pb.WatchAssignmentResponse] {
		st, err := coord.coord.WatchAssignment(ctx, &pb.WatchAssignmentRequest{Job: job, Rank: rank})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	w0, w1 := watch(0), watch(1)
	for rank, st := range []grpc.ServerStreamingClient[pb.WatchAssignmentResponse]{w0, w1} {
		if got := recvAssignment(t, st); !slices.Equal(got.GetAddresses(), []string{a.addr}) || got.GetGeneration() != 1 {
			t.Errorf("rank %d first assignment %v, want [%s] generation 1", rank, got, a.addr)
		}
	}

	b := startPoolLoader(t, r, coord.addr)
	// Exactly one rank moves to b: rank 0, the first in the table's order
	// that can go.
	moved := recvAssignment(t, w0)
	if !slices.Equal(moved.GetAddresses(), []string{b.addr}) || moved.GetGeneration() != 2 {
		t.Errorf("rank 0 after b joined: %v, want [%s] generation 2", moved, b.addr)
	}
	if got := planLoaders(t, ctx, coord, 2, 0); !slices.Equal(got[0], []string{b.addr}) || !slices.Equal(got[1], []string{a.addr}) {
		t.Errorf("PlanEpoch while watched: %q, want the watched [[%s] [%s]]", got, b.addr, a.addr)
	}

	killed := time.Now()
	b.kill()
	back := recvAssignment(t, w0)
	if took := time.Since(killed); took < timeout-testBeat {
		t.Errorf("rank 0 moved off the killed loader after %v, before the %v timeout", took, timeout)
	}
	if !slices.Equal(back.GetAddresses(), []string{a.addr}) || back.GetGeneration() != 3 {
		t.Errorf("rank 0 after b was killed: %v, want [%s] generation 3", back, a.addr)
	}

	// A third loader joins and takes rank 0; drained, it gives it back
	// before its ServeInPool has even returned.
	c := startPoolLoader(t, r, coord.addr)
	if got := recvAssignment(t, w0); !slices.Equal(got.GetAddresses(), []string{c.addr}) {
		t.Errorf("rank 0 after c joined: %v, want [%s]", got, c.addr)
	}
	lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.reg.Leave(lctx); err != nil {
		t.Fatal(err)
	}
	if got := recvAssignment(t, w0); !slices.Equal(got.GetAddresses(), []string{a.addr}) {
		t.Errorf("rank 0 after c drained: %v, want [%s]", got, a.addr)
	}

	body := scrape(t, coord.metrics)
	for _, want := range []string{"shardstream_pool_watches_open 2", "shardstream_pool_assignment_changes_total 4"} {
		if !strings.Contains(body, want) {
			t.Errorf("coordinator /metrics lacks %q", want)
		}
	}
}

// TestWatchAssignmentRefuses: bad requests are INVALID_ARGUMENT naming the
// field, past --max-watches RESOURCE_EXHAUSTED, and a server without a
// pool UNIMPLEMENTED (a client then keeps its plan).
func TestWatchAssignmentRefuses(t *testing.T) {
	leaktest.Check(t)
	ctx := testCtx(t)
	r := &fakeReader{m: testManifest(4, 40, 10), fieldSize: 8}
	cfg := testConfig(r)
	cfg.Role = RoleCoordinator
	cfg.PoolTimeout, cfg.HeartbeatInterval = testPoolTimeout, testBeat
	cfg.MaxWatches = 1
	coord := startServer(t, cfg, fakePlanner)
	startPoolLoader(t, r, coord.addr)

	first := func(req *pb.WatchAssignmentRequest) (*pb.WatchAssignmentResponse, error) {
		st, err := coord.coord.WatchAssignment(ctx, req)
		if err != nil {
			return nil, err
		}
		return st.Recv()
	}
	job := &pb.JobSpec{WorldSize: 2, BatchSize: 2}
	long := strings.Repeat("x", 300)
	for _, tc := range []struct {
		req  *pb.WatchAssignmentRequest
		code codes.Code
		word string
	}{
		{&pb.WatchAssignmentRequest{}, codes.InvalidArgument, "job"},
		{&pb.WatchAssignmentRequest{Job: job, Rank: 2}, codes.InvalidArgument, "rank"},
		{&pb.WatchAssignmentRequest{Job: job, MaxLoadersPerRank: 1025}, codes.InvalidArgument, "max_loaders_per_rank"},
		{&pb.WatchAssignmentRequest{Job: job, CurrentAddresses: make([]string, 1025)}, codes.InvalidArgument, "current_addresses"},
		{&pb.WatchAssignmentRequest{Job: job, CurrentAddresses: []string{long}}, codes.InvalidArgument, "current_addresses[0]"},
		{&pb.WatchAssignmentRequest{Job: &pb.JobSpec{WorldSize: 2}}, codes.InvalidArgument, "job.batch_size"},
		{&pb.WatchAssignmentRequest{Job: &pb.JobSpec{Dataset: "nope", WorldSize: 1, BatchSize: 1}}, codes.NotFound, "nope"},
	} {
		_, err := first(tc.req)
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.word) {
			t.Errorf("WatchAssignment(%v): %v, want %v naming %q", tc.req, err, tc.code, tc.word)
		}
	}

	wctx, cancel := context.WithCancel(ctx)
	st, err := coord.coord.WatchAssignment(wctx, &pb.WatchAssignmentRequest{Job: job})
	if err == nil {
		_, err = st.Recv()
	}
	if err != nil {
		t.Fatalf("first watch: %v", err)
	}
	if _, err := first(&pb.WatchAssignmentRequest{Job: job, Rank: 1}); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-watches") {
		t.Errorf("watch past --max-watches 1: %v, want ResourceExhausted naming the flag", err)
	}
	cancel()

	all := startServer(t, testConfig(r), fakePlanner)
	st2, err := all.coord.WatchAssignment(ctx, &pb.WatchAssignmentRequest{Job: job})
	if err == nil {
		_, err = st2.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("WatchAssignment on serve: %v, want Unimplemented", err)
	}
}
