package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardstream/shardstream/internal/cli"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// poolStatus is what status prints; its JSON form is --json's.
type poolStatus struct {
	Loaders        []loaderStatus `json:"loaders"`
	PoolSize       int            `json:"pool_size"` // loaders listed, draining ones included
	Serving        int            `json:"serving"`   // loaders PlanEpoch assigns
	TimeoutSeconds float64        `json:"timeout_seconds"`
	// The jobs that reported progress recently (ListJobs), and the
	// autoscaling signal (shardstream_loaders_desired); empty and 0 from
	// a coordinator without ListJobs.
	Jobs           []jobStatus `json:"jobs"`
	LoadersDesired float64     `json:"loaders_desired"`
}

type jobStatus struct {
	Name             string       `json:"name"` // the job label
	Dataset          string       `json:"dataset"`
	Epoch            uint64       `json:"epoch"`
	WorldSize        uint32       `json:"world_size"`
	SamplesPerSecond float64      `json:"samples_per_second"`
	MBPerSecond      float64      `json:"mb_per_second"`   // field bytes consumed, 1e6 bytes/s
	DataWaitRatio    float64      `json:"data_wait_ratio"` // share of the ranks' time spent waiting, 0 to 1
	Ranks            []rankStatus `json:"ranks"`
}

type rankStatus struct {
	Rank                 uint32  `json:"rank"`
	Step                 int64   `json:"step"` // the last step the training loop took
	SamplesPerSecond     float64 `json:"samples_per_second"`
	DataWaitRatio        float64 `json:"data_wait_ratio"`
	LastReportAgeSeconds float64 `json:"last_report_age_seconds"`
}

type loaderStatus struct {
	Address            string  `json:"address"`
	State              string  `json:"state"` // serving or draining
	StreamsOpen        uint32  `json:"streams_open"`
	MaxStreams         uint32  `json:"max_streams"`
	MBPerSecond        float64 `json:"mb_per_second"` // batch bytes sent, 1e6 bytes/s
	CPU                float64 `json:"cpu_seconds_per_second"`
	CacheHitRatio      float64 `json:"cache_hit_ratio"`
	LastBeatAgeSeconds float64 `json:"last_beat_age_seconds"`
}

// runStatus prints a coordinator's loader pool and the jobs its clients
// report (ReportProgress), as tables, or as JSON with --json.
func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("status", stderr)
	coord := fs.String("coordinator", "", "the coordinator's gRPC address, host:port (required)")
	asJSON := fs.Bool("json", false, "print JSON for scripts instead of a table")
	timeout := fs.Duration("timeout", 10*time.Second, "how long to wait for the coordinator")
	var cc coordClientFlags
	cc.register(fs, false)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dial, err := cc.dialOptions("", "")
	if err != nil {
		return cli.Usage("status: " + err.Error())
	}
	if *coord == "" {
		return cli.Usage("status: --coordinator is required")
	}
	conn, err := grpc.NewClient(*coord, dial...)
	if err != nil {
		return fmt.Errorf("coordinator %s: %w", *coord, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := pb.NewPoolServiceClient(conn).ListLoaders(ctx, &pb.ListLoadersRequest{})
	if status.Code(err) == codes.Unimplemented {
		return fmt.Errorf("%s has no loader pool: it is not a coordinator ('shardstream serve' is its own loader, or uses its static --loader-addrs): %w", *coord, err)
	}
	if err != nil {
		return fmt.Errorf("list loaders of %s: %w", *coord, err)
	}
	st := newPoolStatus(resp)
	jobs, err := pb.NewCoordinatorServiceClient(conn).ListJobs(ctx, &pb.ListJobsRequest{})
	switch {
	case status.Code(err) == codes.Unimplemented: // a coordinator from before ListJobs
	case err != nil:
		return fmt.Errorf("list jobs of %s: %w", *coord, err)
	default:
		st.addJobs(jobs)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	return st.table(stdout)
}

func newPoolStatus(resp *pb.ListLoadersResponse) poolStatus {
	st := poolStatus{Loaders: []loaderStatus{}, Jobs: []jobStatus{}, PoolSize: len(resp.GetLoaders()), TimeoutSeconds: float64(resp.GetTimeoutMs()) / 1e3}
	for _, l := range resp.GetLoaders() {
		state := "serving"
		if l.GetLeaving() {
			state = "draining"
		} else {
			st.Serving++
		}
		ld := l.GetLoad()
		st.Loaders = append(st.Loaders, loaderStatus{
			Address: l.GetAddress(), State: state,
			StreamsOpen: ld.GetStreamsOpen(), MaxStreams: ld.GetMaxStreams(),
			MBPerSecond: ld.GetBytesPerSecond() / 1e6, CPU: ld.GetCpuSecondsPerSecond(),
			CacheHitRatio: ld.GetCacheHitRatio(), LastBeatAgeSeconds: float64(l.GetLastBeatAgeMs()) / 1e3,
		})
	}
	return st
}

func (st *poolStatus) addJobs(resp *pb.ListJobsResponse) {
	st.LoadersDesired = resp.GetLoadersDesired()
	for _, j := range resp.GetJobs() {
		js := jobStatus{
			Name: j.GetName(), Dataset: j.GetDataset(), Epoch: j.GetEpoch(), WorldSize: j.GetWorldSize(),
			SamplesPerSecond: j.GetSamplesPerSecond(), MBPerSecond: j.GetBytesPerSecond() / 1e6,
			DataWaitRatio: j.GetDataWaitRatio(), Ranks: []rankStatus{},
		}
		for _, r := range j.GetRanks() {
			js.Ranks = append(js.Ranks, rankStatus{
				Rank: r.GetRank(), Step: r.GetLastStep(), SamplesPerSecond: r.GetSamplesPerSecond(),
				DataWaitRatio: r.GetDataWaitRatio(), LastReportAgeSeconds: float64(r.GetLastReportAgeMs()) / 1e3,
			})
		}
		st.Jobs = append(st.Jobs, js)
	}
}

// maxRanksShown bounds the steps-by-rank line of the table (--json has
// them all).
const maxRanksShown = 16

func (st poolStatus) table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ADDRESS\tSTATE\tSTREAMS\tMB/S\tCPU\tCACHE HITS\tLAST BEAT")
	for _, l := range st.Loaders {
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%.1f\t%.2f\t%.0f%%\t%.1fs ago\n", l.Address, l.State, l.StreamsOpen, l.MaxStreams,
			l.MBPerSecond, l.CPU, 100*l.CacheHitRatio, l.LastBeatAgeSeconds)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if _, err := fmt.Fprintf(w, "pool: %d loaders, %d serving, %d draining (dropped after %gs without a heartbeat)\n",
		st.PoolSize, st.Serving, st.PoolSize-st.Serving, st.TimeoutSeconds); err != nil {
		return err
	}
	if len(st.Jobs) == 0 {
		_, err := fmt.Fprintln(w, "jobs: none reported progress")
		return err
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tDATASET\tEPOCH\tRANKS\tSAMPLES/S\tMB/S\tWAIT\tSTEP BY RANK")
	for _, j := range st.Jobs {
		var steps []string
		for i, r := range j.Ranks {
			if i == maxRanksShown {
				steps = append(steps, fmt.Sprintf("… (%d more)", len(j.Ranks)-i))
				break
			}
			steps = append(steps, fmt.Sprintf("%d:%d", r.Rank, r.Step))
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d/%d\t%.1f\t%.1f\t%.0f%%\t%s\n", j.Name, j.Dataset, j.Epoch, len(j.Ranks), j.WorldSize,
			j.SamplesPerSecond, j.MBPerSecond, 100*j.DataWaitRatio, strings.Join(steps, " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "loaders desired: %g (docs/operations.md, Autoscaling)\n", st.LoadersDesired)
	return err
}
