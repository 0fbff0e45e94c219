package service

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// core is what the coordinator and the loader share: the datasets, the
// config, the planner and its cache.
type core struct {
	cfg     *Config
	catalog *catalog
	planner planner
	plans   *planCache
	metrics *metrics
	pool    *pool // the live loader pool; nil but in RoleCoordinator
	jobs    *jobs // the jobs' progress reports
}

// coordinator implements CoordinatorService. It holds no job state: a plan
// is a pure function of the request, so a restarted coordinator answers
// exactly as before.
type coordinator struct {
	pb.UnimplementedCoordinatorServiceServer
	*core
}

func (c *coordinator) GetDataset(ctx context.Context, req *pb.GetDatasetRequest) (*pb.GetDatasetResponse, error) {
	if err := c.allow(ctx, req.GetDataset()); err != nil {
		return nil, err
	}
	ds, err := c.catalog.lookup(req.GetDataset())
	if err != nil {
		return nil, err
	}
	return &pb.GetDatasetResponse{
		Name:        ds.name,
		Fingerprint: ds.fingerprint,
		Shards:      uint64(len(ds.manifest.Shards)),
		Samples:     uint64(ds.manifest.TotalSamples()),
		Bytes:       uint64(ds.manifest.TotalBytes()),
	}, nil
}

func (c *coordinator) PlanEpoch(ctx context.Context, req *pb.PlanEpochRequest) (resp *pb.PlanEpochResponse, err error) {
	defer func() { c.metrics.plansTotal.WithLabelValues(status.Code(err).String()).Inc() }()
	if err := c.allow(ctx, req.GetJob().GetDataset()); err != nil {
		return nil, err
	}
	j, err := c.resolve(req.GetJob())
	if err != nil {
		return nil, err
	}
	p, err := c.plans.get(j)
	if err != nil {
		return nil, err
	}
	k := req.GetMaxLoadersPerRank()
	if k > maxStride {
		return nil, status.Errorf(codes.InvalidArgument, "max_loaders_per_rank: %d, must be at most %d", k, maxStride)
	}
	stripes, err := c.loadersFor(int(j.key.worldSize), int(max(k, 1)))
	if err != nil {
		return nil, err
	}
	if c.pool != nil {
		c.pool.assigned(j.key, int(max(k, 1)), stripes)
	}
	addrs := make([]string, len(stripes))
	rl := make([]*pb.RankLoaders, len(stripes))
	for r, s := range stripes {
		addrs[r] = s[0]
		rl[r] = &pb.RankLoaders{Addresses: s}
	}
	return &pb.PlanEpochResponse{
		DatasetFingerprint: j.ds.fingerprint,
		Steps:              p.Steps(),
		Samples:            p.Samples(),
		Dropped:            p.Dropped(),
		Padded:             p.Padded(),
		ResumeToken:        p.Token(0),
		LoaderAddresses:    addrs,
		RankLoaders:        rl,
		Window:             uint32(j.key.window),
	}, nil
}

// loadersFor gives each of world ranks up to k distinct loader addresses:
// from the live pool on a coordinator, else round-robin over
// Config.LoaderAddrs (rank r gets r, r+1, ... mod n), else this server
// (the empty address).
func (c *coordinator) loadersFor(world, k int) ([][]string, error) {
	out := make([][]string, world)
	switch n := len(c.cfg.LoaderAddrs); {
	case c.pool != nil:
		out = c.pool.assign(world, k)
		if out == nil {
			return nil, status.Errorf(codes.Unavailable, "no loader in the pool: none has sent a heartbeat in the last %v, or all are draining; start loaders with 'shardstream loader --coordinator ADDR'", c.pool.timeout)
		}
	case n > 0:
		k = min(k, n)
		for r := range out {
			out[r] = make([]string, k)
			for j := range k {
				out[r][j] = c.cfg.LoaderAddrs[(r+j)%n]
			}
		}
	default:
		for r := range out {
			out[r] = []string{""}
		}
	}
	return out, nil
}
