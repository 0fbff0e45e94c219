package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// TestE2EPool runs the real binary as a coordinator and two loaders: the
// loaders register, status prints them and a job's progress reports
// (table and JSON), PlanEpoch spreads
// ranks over them, a loader SIGTERMed with a stream open leaves the pool,
// finishes the stream and exits 0, and a SIGKILLed one is dropped after
// the missed-beat window.
func TestE2EPool(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	makeDataset(t, dir, 6, 50, 10)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	coord := startProc(t, bin, "coordinator", "--data", dir, "--listen", "127.0.0.1:0", "--pool-timeout", "2s")
	loaders := []*serveProc{
		startProc(t, bin, "loader", "--coordinator", coord.addr, "--data", dir, "--listen", "127.0.0.1:0", "--pre-stop", "300ms", "--drain-timeout", "30s"),
		startProc(t, bin, "loader", "--coordinator", coord.addr, "--data", dir, "--listen", "127.0.0.1:0", "--pre-stop", "300ms", "--drain-timeout", "30s"),
	}
	a, b := loaders[0], loaders[1]

	statusJSON := func() poolStatus {
		t.Helper()
		var out, errb bytes.Buffer
		if err := run(ctx, []string{"status", "--coordinator", coord.addr, "--json"}, &out, &errb); err != nil {
			t.Fatalf("status --json: %v\n%s", err, errb.String())
		}
		var st poolStatus
		if err := json.Unmarshal(out.Bytes(), &st); err != nil {
			t.Fatalf("status --json printed %q: %v", out.String(), err)
		}
		return st
	}
	// waitStatus polls status --json until ok holds.
	waitStatus := func(what string, ok func(poolStatus) bool) poolStatus {
		t.Helper()
		for {
			st := statusJSON()
			if ok(st) {
				return st
			}
			select {
			case <-ctx.Done():
				t.Fatalf("pool never %s: %+v\ncoordinator stderr:\n%s", what, st, coord.stderr)
			case <-time.After(50 * time.Millisecond): // polling the coordinator: nothing to wait on
			}
		}
	}
	serving := func(st poolStatus) []string {
		var out []string
		for _, l := range st.Loaders {
			if l.State == "serving" {
				out = append(out, l.Address)
			}
		}
		slices.Sort(out)
		return out
	}
	both := []string{a.addr, b.addr}
	slices.Sort(both)
	waitStatus("held both loaders", func(st poolStatus) bool { return slices.Equal(serving(st), both) })

	var table, errb bytes.Buffer
	if err := run(ctx, []string{"status", "--coordinator", coord.addr}, &table, &errb); err != nil {
		t.Fatalf("status: %v\n%s", err, errb.String())
	}
	for _, want := range []string{"ADDRESS", "STREAMS", "MB/S", "CPU", "CACHE HITS", "LAST BEAT", a.addr, b.addr, "pool: 2 loaders, 2 serving, 0 draining", "jobs: none reported progress"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("status table lacks %q:\n%s", want, table.String())
		}
	}
	t.Logf("status:\n%s", table.String())

	// Two ranks of a job report progress: status shows the job, its
	// rates and the step of each rank.
	cc := pb.NewCoordinatorServiceClient(dial(t, coord.addr))
	job := &pb.JobSpec{WorldSize: 4, BatchSize: 4, Seed: 3}
	for rank, step := range []int64{41, 40} {
		if _, err := cc.ReportProgress(ctx, &pb.ReportProgressRequest{
			Job: job, JobName: "bert", Rank: uint32(rank), LastStep: step,
			Steps: 10, Samples: 40, Bytes: 4e6, WaitSeconds: 0.5, ElapsedSeconds: 2,
		}); err != nil {
			t.Fatal(err)
		}
	}
	if js := statusJSON(); len(js.Jobs) != 1 || js.Jobs[0].Name != "bert" || js.Jobs[0].Dataset != "default" || js.Jobs[0].WorldSize != 4 ||
		js.Jobs[0].SamplesPerSecond != 40 || js.Jobs[0].MBPerSecond != 4 || js.Jobs[0].DataWaitRatio != 0.25 ||
		len(js.Jobs[0].Ranks) != 2 || js.Jobs[0].Ranks[0].Step != 41 || js.Jobs[0].Ranks[1].Step != 40 || js.LoadersDesired < 1 {
		t.Errorf("status --json jobs %+v, loaders desired %v; want bert on default, 40 samples/s, 4 MB/s, wait 0.25, ranks at 41 and 40", js.Jobs, js.LoadersDesired)
	}
	table.Reset()
	if err := run(ctx, []string{"status", "--coordinator", coord.addr}, &table, &errb); err != nil {
		t.Fatalf("status: %v\n%s", err, errb.String())
	}
	for _, want := range []string{"JOB", "SAMPLES/S", "WAIT", "STEP BY RANK", "bert", "2/4", "40.0", "25%", "0:41 1:40", "loaders desired: "} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("status table lacks %q:\n%s", want, table.String())
		}
	}
	t.Logf("status with a job:\n%s", table.String())

	plan, err := cc.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: job, MaxLoadersPerRank: 2})
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]int{}
	for r, rl := range plan.RankLoaders {
		addrs := slices.Clone(rl.Addresses)
		slices.Sort(addrs)
		if !slices.Equal(addrs, both) {
			t.Errorf("rank %d stripes on %q, want both loaders", r, rl.Addresses)
		}
		used[plan.LoaderAddresses[r]]++
	}
	if used[a.addr] != 2 || used[b.addr] != 2 {
		t.Errorf("first loaders of the ranks %v, want 2 ranks on each", used)
	}

	// A stream open on b when it gets SIGTERM.
	st, err := pb.NewLoaderServiceClient(dial(t, b.addr)).StreamBatches(ctx, &pb.StreamBatchesRequest{Job: job, Rank: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != nil {
		t.Fatal(err)
	}
	b.cmd.Process.Signal(syscall.SIGTERM)
	waitStatus("saw b draining", func(st poolStatus) bool { return slices.Equal(serving(st), []string{a.addr}) && st.PoolSize == 2 })
	plan, err = cc.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: job, MaxLoadersPerRank: 2})
	if err != nil {
		t.Fatal(err)
	}
	for r, rl := range plan.RankLoaders {
		if !slices.Equal(rl.Addresses, []string{a.addr}) {
			t.Errorf("rank %d on %q while b drains, want only a", r, rl.Addresses)
		}
	}
	n := 1
	for {
		_, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("stream on the draining loader broke after %d batches: %v", n, err)
		}
		n++
	}
	if int64(n) != plan.Steps {
		t.Errorf("draining loader sent %d batches, want the whole epoch's %d", n, plan.Steps)
	}
	select {
	case <-b.exited:
		if b.err != nil {
			t.Errorf("drained loader exited with %v, want 0\nstderr:\n%s", b.err, b.stderr)
		}
	case <-ctx.Done():
		t.Fatalf("drained loader did not exit\nstderr:\n%s", b.stderr)
	}

	a.cmd.Process.Kill()
	<-a.exited
	killed := time.Now()
	waitStatus("dropped the killed loader", func(st poolStatus) bool { return st.PoolSize == 0 })
	t.Logf("killed loader dropped after %v (--pool-timeout 2s)", time.Since(killed))
	if _, err := cc.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: job}); err == nil || !strings.Contains(err.Error(), "no loader in the pool") {
		t.Errorf("PlanEpoch with an empty pool: %v, want an error saying the pool is empty", err)
	}
}
