package service

import (
	"context"

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
	addrs := make([]string, j.key.worldSize)
	if n := len(c.cfg.LoaderAddrs); n > 0 {
		for r := range addrs {
			addrs[r] = c.cfg.LoaderAddrs[r%n]
		}
	}
	return &pb.PlanEpochResponse{
		DatasetFingerprint: j.ds.fingerprint,
		Steps:              p.Steps(),
		Samples:            p.Samples(),
		Dropped:            p.Dropped(),
		Padded:             p.Padded(),
		ResumeToken:        p.Token(0),
		LoaderAddresses:    addrs,
	}, nil
}
