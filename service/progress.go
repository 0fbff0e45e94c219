package service

import (
	"cmp"
	"context"
	"log/slog"
	"math"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// Progress reports (ReportProgress): what the trainers' loops consumed and
// how long they waited for it, kept per job for the shardstream_job_*
// gauges, `shardstream status` and the autoscaling signal.

const (
	// A reporter's rates count while its last report is younger than
	// this: five missed reports at the clients' one a second.
	reportFresh = 5 * time.Second
	// reportInterval is the period clients are asked to report at.
	reportInterval = time.Second
	// maxReportElapsed bounds ReportProgressRequest.elapsed_seconds.
	maxReportElapsed = 3600.0
	maxJobNameLen    = 128
)

// jobNameRE is what a job_name may hold: it becomes a metric label.
var jobNameRE = regexp.MustCompile(`^[A-Za-z0-9_.:/-]+$`)

// jobs holds the recent reports of every job, bounded by job count and
// reporter count, each job forgotten expiry after its last report.
type jobs struct {
	maxJobs, maxReporters int
	expiry                time.Duration
	now                   func() time.Time
	log                   *slog.Logger

	mu        sync.Mutex
	byName    map[string]*jobState
	reporters int // over all jobs
}

// jobState is one job (by job_name) and its reporters' last reports.
type jobState struct {
	name, dataset string
	epoch         uint64
	world         uint32
	last          time.Time
	reports       map[reporterKey]*report
}

type reporterKey struct{ rank, worker uint32 }

// report is one reporter's last report.
type report struct {
	at                            time.Time
	lastStep                      int64
	samples, bytes, wait, elapsed float64
}

func newJobs(maxJobs, maxReporters int, expiry time.Duration, now func() time.Time, log *slog.Logger) *jobs {
	return &jobs{maxJobs: maxJobs, maxReporters: maxReporters, expiry: expiry, now: now, log: log, byName: make(map[string]*jobState)}
}

// expireLocked forgets the jobs silent for expiry.
func (js *jobs) expireLocked(now time.Time) {
	for name, j := range js.byName {
		if now.Sub(j.last) >= js.expiry {
			js.reporters -= len(j.reports)
			delete(js.byName, name)
			js.log.Info("jobs: job expired: no progress report", "job", name, "silent", now.Sub(j.last).Round(time.Second))
		}
	}
}

// add records one validated report of the named job.
func (js *jobs) add(name, dataset string, req *pb.ReportProgressRequest) error {
	now := js.now()
	js.mu.Lock()
	defer js.mu.Unlock()
	js.expireLocked(now)
	j := js.byName[name]
	if j == nil {
		if len(js.byName) >= js.maxJobs {
			return status.Errorf(codes.ResourceExhausted, "ReportProgress: the server keeps %d jobs already (--max-jobs); job %q is not tracked until one expires", js.maxJobs, name)
		}
		j = &jobState{name: name, reports: make(map[reporterKey]*report)}
		js.byName[name] = j
		js.log.Info("jobs: job reporting", "job", name, "dataset", dataset, "world_size", req.GetJob().GetWorldSize())
	}
	key := reporterKey{rank: req.GetRank(), worker: req.GetWorker()}
	r := j.reports[key]
	if r == nil {
		if js.reporters >= js.maxReporters {
			return status.Errorf(codes.ResourceExhausted, "ReportProgress: the server keeps %d reporting ranks already (Config.MaxJobReporters)", js.maxReporters)
		}
		r = &report{}
		j.reports[key] = r
		js.reporters++
	}
	j.dataset, j.epoch, j.world, j.last = dataset, req.GetJob().GetEpoch(), req.GetJob().GetWorldSize(), now
	*r = report{
		at: now, lastStep: req.GetLastStep(),
		samples: float64(req.GetSamples()), bytes: float64(req.GetBytes()),
		wait: req.GetWaitSeconds(), elapsed: req.GetElapsedSeconds(),
	}
	return nil
}

// rates sums the fresh reports of rs: samples and bytes per second, and
// the share of their time the reporters waited.
func rates(rs []*report, now time.Time) (samples, bytes, wait float64, fresh bool) {
	var waited, elapsed float64
	for _, r := range rs {
		if now.Sub(r.at) >= reportFresh || r.elapsed <= 0 {
			continue
		}
		fresh = true
		samples += r.samples / r.elapsed
		bytes += r.bytes / r.elapsed
		waited += r.wait
		elapsed += r.elapsed
	}
	if elapsed > 0 {
		wait = waited / elapsed
	}
	return samples, bytes, wait, fresh
}

// list describes every job and its ranks, sorted by name and rank; fresh
// tells which jobs have a fresh report.
func (js *jobs) list() ([]*pb.JobProgress, []bool) {
	now := js.now()
	js.mu.Lock()
	defer js.mu.Unlock()
	js.expireLocked(now)
	var out []*pb.JobProgress
	var fresh []bool
	for _, j := range js.byName {
		byRank := make(map[uint32][]*report)
		var all []*report
		for k, r := range j.reports {
			byRank[k.rank] = append(byRank[k.rank], r)
			all = append(all, r)
		}
		sps, bps, wait, ok := rates(all, now)
		jp := &pb.JobProgress{
			Name: j.name, Dataset: j.dataset, Epoch: j.epoch, WorldSize: j.world,
			SamplesPerSecond: sps, BytesPerSecond: bps, DataWaitRatio: wait,
		}
		for rank, rs := range byRank {
			rp := &pb.RankProgress{Rank: rank, LastStep: math.MinInt64, LastReportAgeMs: math.MaxUint32}
			for _, r := range rs {
				rp.LastStep = max(rp.LastStep, r.lastStep)
				rp.LastReportAgeMs = min(rp.LastReportAgeMs, uint32(min(now.Sub(r.at).Milliseconds(), math.MaxUint32)))
			}
			rp.SamplesPerSecond, _, rp.DataWaitRatio, _ = rates(rs, now)
			jp.Ranks = append(jp.Ranks, rp)
		}
		slices.SortFunc(jp.Ranks, func(a, b *pb.RankProgress) int { return cmp.Compare(a.GetRank(), b.GetRank()) })
		out = append(out, jp)
		fresh = append(fresh, ok)
	}
	idx := make([]int, len(out))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return strings.Compare(out[a].GetName(), out[b].GetName()) })
	sorted, sfresh := make([]*pb.JobProgress, len(out)), make([]bool, len(out))
	for i, k := range idx {
		sorted[i], sfresh[i] = out[k], fresh[k]
	}
	return sorted, sfresh
}

// The autoscaling signal's constants (docs/operations.md, "Autoscaling").
const (
	// maxWaitRatio caps the wait ratio in the demand estimate: a job that
	// waits 90% of the time or more counts as wanting 10× what it gets.
	maxWaitRatio = 0.9
	// targetUtilization is the share of its estimated capacity a loader
	// should run at: 20% headroom for bursts and a loader's loss.
	targetUtilization = 0.8
	// minCapacityCPU: a loader's capacity is estimated only from beats
	// with at least this much CPU use (cores), so idle noise does not
	// make a tiny denominator.
	minCapacityCPU = 0.05
	// maxLoadersDesired clamps the signal.
	maxLoadersDesired = 1024
)

// loadersDesired is the autoscaling signal: the loaders the jobs' demand
// needs at targetUtilization of the loaders' measured capacity.
//
//	demand   = Σ over jobs with fresh reports of bytes/s ÷ (1 − min(wait ratio, 0.9))
//	capacity = mean over serving loaders (with ≥ 0.05 CPU in use) of
//	           bytes_per_second × cpu_cores ÷ cpu_seconds_per_second
//	desired  = ceil(demand ÷ (0.8 × capacity)), clamped to [1, 1024]
//
// With no fresh job it is 1 (nothing reads); when the jobs consume nothing
// (all stalled) or no loader's capacity is measurable, it holds at the
// serving loaders' count (at least 1).
func loadersDesired(js []*pb.JobProgress, fresh []bool, loaders []member) float64 {
	var demand float64
	reporting := false
	for i, j := range js {
		if !fresh[i] {
			continue
		}
		reporting = true
		demand += j.GetBytesPerSecond() / (1 - min(max(j.GetDataWaitRatio(), 0), maxWaitRatio))
	}
	serving, n := 0, 0
	var capSum float64
	for _, m := range loaders {
		if m.leaving {
			continue
		}
		serving++
		l := m.load
		if l.GetCpuCores() > 0 && l.GetCpuSecondsPerSecond() >= minCapacityCPU && l.GetBytesPerSecond() > 0 {
			capSum += l.GetBytesPerSecond() * float64(l.GetCpuCores()) / l.GetCpuSecondsPerSecond()
			n++
		}
	}
	clamp := func(x float64) float64 { return min(max(x, 1), maxLoadersDesired) }
	switch {
	case !reporting:
		return 1
	case demand <= 0 || n == 0:
		return clamp(float64(serving))
	}
	return clamp(math.Ceil(demand / (targetUtilization * capSum / float64(n))))
}

func (c *coordinator) ReportProgress(ctx context.Context, req *pb.ReportProgressRequest) (*pb.ReportProgressResponse, error) {
	if err := c.allow(ctx, req.GetJob().GetDataset()); err != nil {
		return nil, err
	}
	name := req.GetJobName()
	if name != "" && (len(name) > maxJobNameLen || !jobNameRE.MatchString(name)) {
		return nil, status.Errorf(codes.InvalidArgument, "job_name: %.140q, want at most %d bytes of [A-Za-z0-9_.:/-]", name, maxJobNameLen)
	}
	el, wait := req.GetElapsedSeconds(), req.GetWaitSeconds()
	if !(el > 0 && el <= maxReportElapsed) {
		return nil, status.Errorf(codes.InvalidArgument, "elapsed_seconds: %v, must be in (0, %v]", el, maxReportElapsed)
	}
	if !(wait >= 0 && wait <= el) {
		return nil, status.Errorf(codes.InvalidArgument, "wait_seconds: %v, must be in [0, elapsed_seconds %v]", wait, el)
	}
	if w := max(req.GetWorkers(), 1); req.GetWorker() >= w {
		return nil, status.Errorf(codes.InvalidArgument, "worker: %d, must be below workers %d", req.GetWorker(), w)
	}
	j, err := c.resolve(req.GetJob())
	if err != nil {
		return nil, err
	}
	if int64(req.GetRank()) >= int64(j.key.worldSize) {
		return nil, status.Errorf(codes.InvalidArgument, "rank: %d, must be below job.world_size %d", req.GetRank(), j.key.worldSize)
	}
	if name == "" {
		name = j.ds.name
	}
	if name == "" {
		name = "default"
	}
	if err := c.jobs.add(name, j.ds.name, req); err != nil {
		return nil, err
	}
	return &pb.ReportProgressResponse{IntervalSeconds: reportInterval.Seconds()}, nil
}

func (c *coordinator) ListJobs(ctx context.Context, _ *pb.ListJobsRequest) (*pb.ListJobsResponse, error) {
	js, fresh := c.jobs.list()
	resp := &pb.ListJobsResponse{}
	if c.pool != nil {
		ms, _ := c.pool.snapshot()
		resp.LoadersDesired = loadersDesired(js, fresh, ms)
	}
	// With an auth file a client sees the jobs of the datasets it may read.
	for _, j := range js {
		if c.allow(ctx, j.GetDataset()) == nil {
			resp.Jobs = append(resp.Jobs, j)
		}
	}
	return resp, nil
}

var (
	jobSamplesDesc = prometheus.NewDesc("shardstream_job_samples_per_second",
		"Samples per second a job's ranks consumed, over their last progress reports.", []string{"job"}, nil)
	jobBytesDesc = prometheus.NewDesc("shardstream_job_bytes_per_second",
		"Field bytes per second a job's ranks consumed, over their last progress reports.", []string{"job"}, nil)
	jobWaitDesc = prometheus.NewDesc("shardstream_job_data_wait_ratio",
		"Share of a job's ranks' time spent waiting for data (0 to 1), over their last progress reports.", []string{"job"}, nil)
	loadersDesiredDesc = prometheus.NewDesc("shardstream_loaders_desired",
		"Loaders the reporting jobs' demand needs at 80% of the loaders' measured capacity (docs/operations.md, Autoscaling).", nil, nil)
)

// jobsCollector exports the jobs' gauges at scrape time, and with a pool
// the autoscaling signal.
type jobsCollector struct {
	j *jobs
	p *pool // nil but on a coordinator
}

func (c jobsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{jobSamplesDesc, jobBytesDesc, jobWaitDesc, loadersDesiredDesc} {
		ch <- d
	}
}

func (c jobsCollector) Collect(ch chan<- prometheus.Metric) {
	js, fresh := c.j.list()
	for _, j := range js {
		ch <- prometheus.MustNewConstMetric(jobSamplesDesc, prometheus.GaugeValue, j.GetSamplesPerSecond(), j.GetName())
		ch <- prometheus.MustNewConstMetric(jobBytesDesc, prometheus.GaugeValue, j.GetBytesPerSecond(), j.GetName())
		ch <- prometheus.MustNewConstMetric(jobWaitDesc, prometheus.GaugeValue, j.GetDataWaitRatio(), j.GetName())
	}
	if c.p != nil {
		ms, _ := c.p.snapshot()
		ch <- prometheus.MustNewConstMetric(loadersDesiredDesc, prometheus.GaugeValue, loadersDesired(js, fresh, ms))
	}
}
