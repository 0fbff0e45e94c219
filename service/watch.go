package service

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// WatchAssignment streams one rank's stripe loaders from the coordinator's
// assignment table (assign.go): at once, then at every change. The watch
// also drives the dropping of silent loaders: it reads the pool every
// heartbeat interval, and a read expires the loaders past the timeout and
// moves their stripes.
func (c *coordinator) WatchAssignment(req *pb.WatchAssignmentRequest, stream grpc.ServerStreamingServer[pb.WatchAssignmentResponse]) error {
	ctx := stream.Context()
	if c.pool == nil {
		return status.Error(codes.Unimplemented, "WatchAssignment: this server has no live loader pool (it is 'shardstream serve' or a loader): its plans' loaders never move, keep streaming from them")
	}
	if err := c.allow(ctx, req.GetJob().GetDataset()); err != nil {
		return err
	}
	// Cheap checks first: the job is resolved (and its dataset looked up)
	// only for a request that is otherwise well formed.
	k := req.GetMaxLoadersPerRank()
	if k > maxStride {
		return status.Errorf(codes.InvalidArgument, "max_loaders_per_rank: %d, must be at most %d", k, maxStride)
	}
	cur := req.GetCurrentAddresses()
	if len(cur) > maxStride {
		return status.Errorf(codes.InvalidArgument, "current_addresses: %d addresses, want at most %d", len(cur), maxStride)
	}
	for i, a := range cur {
		if len(a) > maxAddrLen {
			return status.Errorf(codes.InvalidArgument, "current_addresses[%d]: %d bytes, want at most %d", i, len(a), maxAddrLen)
		}
	}
	j, err := c.resolve(req.GetJob())
	if err != nil {
		return err
	}
	if rank := req.GetRank(); int64(rank) >= int64(j.key.worldSize) {
		return status.Errorf(codes.InvalidArgument, "rank: %d, must be below job.world_size %d", rank, j.key.worldSize)
	}
	key := slotKey{job: j.key, rank: int(req.GetRank()), k: int(max(k, 1))}
	s, ok := c.pool.watch(key, cur)
	if !ok {
		return status.Errorf(codes.ResourceExhausted, "WatchAssignment: the coordinator serves %d watches already (--max-watches); the rank keeps its plan's loaders", c.pool.maxWatches)
	}
	defer c.pool.unwatch(key)
	tick := time.NewTicker(c.pool.interval)
	defer tick.Stop()
	var sent uint64
	for {
		addrs, gen, changed := c.pool.current(s)
		// An empty pool gives nothing to send: the rank keeps its loaders
		// (and its streams' own failover) until loaders come back.
		if gen != sent && len(addrs) > 0 {
			if err := stream.Send(&pb.WatchAssignmentResponse{Addresses: addrs, Generation: gen}); err != nil {
				return err
			}
			sent = gen
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-tick.C:
		}
	}
}

// watchesOpenGauge reports the open WatchAssignment streams.
func watchesOpenGauge(p *pool) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "shardstream_pool_watches_open", Help: "WatchAssignment streams open (at most --max-watches).",
	}, func() float64 {
		p.mu.Lock()
		defer p.mu.Unlock()
		return float64(p.watchers)
	})
}
