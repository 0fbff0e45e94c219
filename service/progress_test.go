package service

import (
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardstream/shardstream/internal/leaktest"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// TestJobsAggregate feeds known reports to the job table and checks the
// rates, the wait ratio, the per-rank view, staleness, expiry and bounds.
func TestJobsAggregate(t *testing.T) {
	now := time.Unix(1000, 0)
	js := newJobs(2, 3, time.Minute, func() time.Time { return now }, testLogger())
	job := &pb.JobSpec{Dataset: "ds", Epoch: 3, WorldSize: 2, BatchSize: 4}
	add := func(name string, rank, worker uint32, step int64, samples, bytes uint64, wait, elapsed float64) error {
		return js.add(name, "ds", &pb.ReportProgressRequest{
			Job: job, Rank: rank, Worker: worker, Workers: 2, LastStep: step,
			Samples: samples, Bytes: bytes, WaitSeconds: wait, ElapsedSeconds: elapsed,
		})
	}
	// Rank 0: two workers; rank 1: one report that the next replaces.
	for _, err := range []error{
		add("train", 0, 0, 10, 400, 4000, 0.5, 1),
		add("train", 0, 1, 11, 200, 2000, 0.25, 0.5),
		add("train", 1, 0, 3, 1, 1, 1, 1),
		add("train", 1, 0, 12, 800, 8000, 0, 2),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	list, fresh := js.list()
	if len(list) != 1 || !fresh[0] {
		t.Fatalf("list = %v (fresh %v), want one fresh job", list, fresh)
	}
	j := list[0]
	// 400/1 + 200/0.5 + 800/2 = 1200 samples/s; bytes ×10; wait
	// (0.5+0.25+0)/(1+0.5+2) = 0.75/3.5.
	if j.GetName() != "train" || j.GetDataset() != "ds" || j.GetEpoch() != 3 || j.GetWorldSize() != 2 ||
		j.GetSamplesPerSecond() != 1200 || j.GetBytesPerSecond() != 12000 || math.Abs(j.GetDataWaitRatio()-0.75/3.5) > 1e-12 {
		t.Errorf("job = %v, want train/ds epoch 3 of 2 ranks, 1200 samples/s, 12000 B/s, wait 0.2143", j)
	}
	if r := j.GetRanks(); len(r) != 2 || r[0].GetLastStep() != 11 || r[0].GetSamplesPerSecond() != 800 || r[0].GetDataWaitRatio() != 0.5 ||
		r[1].GetLastStep() != 12 || r[1].GetSamplesPerSecond() != 400 || r[1].GetDataWaitRatio() != 0 {
		t.Errorf("ranks = %v, want rank 0 at step 11, 800/s, wait 0.5; rank 1 at 12, 400/s, wait 0", r)
	}

	// Bounds: 3 reporters in all, 2 jobs.
	if err := add("train", 1, 1, 0, 1, 1, 0, 1); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("a 4th reporter: %v, want ResourceExhausted", err)
	}
	js.maxReporters = 10
	if err := add("other", 0, 0, 0, 1, 1, 0, 1); err != nil {
		t.Fatal(err)
	}
	if err := add("third", 0, 0, 0, 1, 1, 0, 1); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "--max-jobs") {
		t.Errorf("a 3rd job with max 2: %v, want ResourceExhausted naming --max-jobs", err)
	}

	// Stale after reportFresh: listed, rates 0; gone after the expiry.
	now = now.Add(reportFresh)
	list, fresh = js.list()
	if len(list) != 2 || fresh[0] || fresh[1] || list[1].GetSamplesPerSecond() != 0 {
		t.Errorf("after %v: %v fresh %v, want both jobs listed, stale, at 0/s", reportFresh, list, fresh)
	}
	now = now.Add(time.Minute)
	if list, _ = js.list(); len(list) != 0 || js.reporters != 0 {
		t.Errorf("after the expiry: %v (%d reporters), want none", list, js.reporters)
	}
}

// TestLoadersDesired pins the autoscaling formula on known numbers.
func TestLoadersDesired(t *testing.T) {
	loader := func(addr string, bps, cpu float64, cores uint32, leaving bool) member {
		return member{addr: addr, leaving: leaving, load: &pb.LoaderLoad{BytesPerSecond: bps, CpuSecondsPerSecond: cpu, CpuCores: cores}}
	}
	// Two loaders at 100 MB/s on 1 of 4 cores each: 400 MB/s capacity
	// each (the mean), 320 MB/s at 80%.
	two := []member{loader("a", 100e6, 1, 4, false), loader("b", 100e6, 1, 4, false), loader("c", 0, 0, 4, true)}
	job := func(bps, wait float64) *pb.JobProgress {
		return &pb.JobProgress{BytesPerSecond: bps, DataWaitRatio: wait}
	}
	for _, tc := range []struct {
		name    string
		jobs    []*pb.JobProgress
		fresh   []bool
		loaders []member
		want    float64
	}{
		{"no job reports", nil, nil, two, 1},
		{"stale job only", []*pb.JobProgress{job(1e9, 0.5)}, []bool{false}, two, 1},
		// 200 MB/s, no wait: 200/320 → 1.
		{"no wait", []*pb.JobProgress{job(200e6, 0)}, []bool{true}, two, 1},
		// 200 MB/s waiting half the time: 400 MB/s wanted → 2.
		{"half waiting", []*pb.JobProgress{job(200e6, 0.5)}, []bool{true}, two, 2},
		// Two jobs: 200/(1-0.75) + 150/(1-0) = 950 MB/s → 3.
		{"two jobs", []*pb.JobProgress{job(200e6, 0.75), job(150e6, 0)}, []bool{true, true}, two, 3},
		// Wait 0.99 is capped at 0.9: 100 MB/s × 10 = 1 GB/s → 4.
		{"wait capped", []*pb.JobProgress{job(100e6, 0.99)}, []bool{true}, two, 4},
		// Stalled (nothing consumed): hold at the serving count.
		{"stalled", []*pb.JobProgress{job(0, 1)}, []bool{true}, two, 2},
		// No measurable capacity (idle loaders): hold.
		{"idle loaders", []*pb.JobProgress{job(1e9, 0.5)}, []bool{true}, []member{loader("a", 1e6, 0.01, 4, false)}, 1},
		// Clamped to 1024.
		{"clamped", []*pb.JobProgress{job(1e15, 0)}, []bool{true}, two, 1024},
	} {
		if got := loadersDesired(tc.jobs, tc.fresh, tc.loaders); got != tc.want {
			t.Errorf("%s: loadersDesired = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestReportProgress sends reports to a real coordinator with a loader in
// its pool and reads the gauges and ListJobs; bad reports are
// INVALID_ARGUMENT naming the field.
func TestReportProgress(t *testing.T) {
	leaktest.Check(t)
	ctx := testCtx(t)
	r := &fakeReader{m: testManifest(4, 40, 10), fieldSize: 8}
	coord := startCoordinator(t, r, "127.0.0.1:0")
	job := &pb.JobSpec{WorldSize: 2, BatchSize: 4, Epoch: 1}
	ok := &pb.ReportProgressRequest{Job: job, JobName: "resnet", Rank: 1, LastStep: 7, Steps: 4, Samples: 16, Bytes: 1600, WaitSeconds: 0.5, ElapsedSeconds: 2}
	resp, err := coord.coord.ReportProgress(ctx, ok)
	if err != nil || resp.GetIntervalSeconds() != 1 {
		t.Fatalf("ReportProgress = %v, %v; want interval 1s", resp, err)
	}
	// No job_name: the dataset's name.
	if _, err := coord.coord.ReportProgress(ctx, &pb.ReportProgressRequest{Job: job, Samples: 2, ElapsedSeconds: 1}); err != nil {
		t.Fatal(err)
	}
	body := scrape(t, coord.metrics)
	for _, want := range []string{
		`shardstream_job_samples_per_second{job="resnet"} 8`,
		`shardstream_job_bytes_per_second{job="resnet"} 800`,
		`shardstream_job_data_wait_ratio{job="resnet"} 0.25`,
		`shardstream_job_samples_per_second{job="default"} 2`,
		// No loader in the pool measured: hold at the serving count, 0 → 1.
		`shardstream_loaders_desired 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("coordinator /metrics lacks %q", want)
		}
	}
	jobs, err := coord.coord.ListJobs(ctx, &pb.ListJobsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if js := jobs.GetJobs(); len(js) != 2 || js[1].GetName() != "resnet" || js[1].GetDataset() != "default" ||
		len(js[1].GetRanks()) != 1 || js[1].GetRanks()[0].GetRank() != 1 || js[1].GetRanks()[0].GetLastStep() != 7 || jobs.GetLoadersDesired() != 1 {
		t.Errorf("ListJobs = %v, want default and resnet (rank 1 at step 7), 1 loader desired", jobs)
	}

	bad := func(f func(*pb.ReportProgressRequest)) *pb.ReportProgressRequest {
		req := &pb.ReportProgressRequest{Job: job, Samples: 1, ElapsedSeconds: 1}
		f(req)
		return req
	}
	for _, tc := range []struct {
		req  *pb.ReportProgressRequest
		word string
	}{
		{bad(func(r *pb.ReportProgressRequest) { r.Job = nil }), "job"},
		{bad(func(r *pb.ReportProgressRequest) { r.JobName = "a b" }), "job_name"},
		{bad(func(r *pb.ReportProgressRequest) { r.JobName = strings.Repeat("a", 129) }), "job_name"},
		{bad(func(r *pb.ReportProgressRequest) { r.ElapsedSeconds = 0 }), "elapsed_seconds"},
		{bad(func(r *pb.ReportProgressRequest) { r.ElapsedSeconds = math.NaN() }), "elapsed_seconds"},
		{bad(func(r *pb.ReportProgressRequest) { r.ElapsedSeconds = 4000 }), "elapsed_seconds"},
		{bad(func(r *pb.ReportProgressRequest) { r.WaitSeconds = 2 }), "wait_seconds"},
		{bad(func(r *pb.ReportProgressRequest) { r.WaitSeconds = -1 }), "wait_seconds"},
		{bad(func(r *pb.ReportProgressRequest) { r.Worker, r.Workers = 2, 2 }), "worker"},
		{bad(func(r *pb.ReportProgressRequest) { r.Rank = 2 }), "rank"},
		{bad(func(r *pb.ReportProgressRequest) { r.Job = &pb.JobSpec{WorldSize: 1} }), "job.batch_size"},
	} {
		_, err := coord.coord.ReportProgress(ctx, tc.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.word) {
			t.Errorf("ReportProgress(%v): %v, want InvalidArgument naming %q", tc.req, err, tc.word)
		}
	}
}
