package main

import (
	"context"
	"flag"
	"io"
	"time"

	"github.com/shardstream/shardstream/internal/cli"
	"github.com/shardstream/shardstream/service"
)

// runCoordinator serves the coordinator role: it opens the dataset to plan
// epochs, keeps the live loader pool from the loaders' heartbeats, and
// hands pool loaders to ranks in PlanEpoch. It serves no batches. Its
// flags are serve's (the read-path ones only matter for opening the
// manifest) plus --pool-timeout, --max-watches and --max-jobs.
func runCoordinator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var poolTimeout time.Duration
	var maxWatches, maxJobs int
	c, err := parseServeAs("coordinator", args, stderr, func(fs *flag.FlagSet) {
		fs.DurationVar(&poolTimeout, "pool-timeout", service.DefaultPoolTimeout, "drop a loader from the pool after this long without a heartbeat (loaders beat every 1s)")
		fs.IntVar(&maxWatches, "max-watches", service.DefaultMaxWatches, "WatchAssignment streams served at once (one per rank, or per DataLoader worker); more are refused")
		fs.IntVar(&maxJobs, "max-jobs", service.DefaultMaxJobs, "jobs whose progress reports are kept (the shardstream_job_* gauges); reports of more are refused")
	})
	if err != nil {
		return err
	}
	if len(c.loaderAddrs) > 0 {
		return cli.Usage("coordinator: --loader-addrs: the coordinator's loaders come from the pool (they register with 'shardstream loader --coordinator ADDR'); a static list is serve's")
	}
	if poolTimeout < time.Second {
		return cli.Usage("coordinator: --pool-timeout must be at least 1s (loaders beat every 1s)")
	}
	if maxWatches < 1 || maxJobs < 1 {
		return cli.Usage("coordinator: --max-watches and --max-jobs must be at least 1")
	}
	c.role, c.poolTimeout, c.maxWatches, c.maxJobs = service.RoleCoordinator, poolTimeout, maxWatches, maxJobs
	return serve(ctx, c, stdout)
}
