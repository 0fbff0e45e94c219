package service

import (
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// newGRPCMetrics is go-grpc-middleware's Prometheus provider: per method
// and code, calls started and handled, messages received and sent, and
// the handling time of every call (grpc_server_*), registered on
// Config.Registry.
func newGRPCMetrics(cfg *Config) (*grpcprom.ServerMetrics, error) {
	sm := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram(
		// 1ms to ~4.5h: unary calls take milliseconds, a stream an epoch.
		grpcprom.WithHistogramBuckets(expBuckets(1e-3, 4, 12)),
	))
	if err := cfg.Registry.Register(sm); err != nil {
		return nil, err
	}
	return sm, nil
}

func expBuckets(start, factor float64, n int) []float64 {
	b := make([]float64, n)
	for i := range b {
		b[i] = start
		start *= factor
	}
	return b
}

// registerRole registers the services of cfg.Role on gs, and the health
// service reporting them SERVING.
func registerRole(gs *grpc.Server, c *core, cfg *Config, m *metrics, sm *grpcprom.ServerMetrics) (*health.Server, error) {
	names := []string{""}
	if cfg.Role == RoleCoordinator {
		c.pool = newPool(cfg.PoolTimeout, cfg.HeartbeatInterval, cfg.MaxWatches, time.Now, cfg.Logger)
		for _, m := range []prometheus.Collector{c.pool.beats, c.pool.moves, watchesOpenGauge(c.pool)} {
			if err := cfg.Registry.Register(m); err != nil {
				return nil, err
			}
		}
		if err := cfg.Registry.Register(poolCollector{c.pool}); err != nil {
			return nil, err
		}
		pb.RegisterPoolServiceServer(gs, &poolService{p: c.pool})
		pb.RegisterLoaderServiceServer(gs, coordinatorOnly{})
		names = append(names, pb.CoordinatorService_ServiceDesc.ServiceName, pb.PoolService_ServiceDesc.ServiceName)
	} else {
		pb.RegisterLoaderServiceServer(gs, &loader{
			core: c, streams: make(chan struct{}, cfg.MaxStreams), chunkMem: newChunkMemory(cfg.ChunkMemoryBytes, m),
			clients: &clientStreams{max: cfg.Limits.MaxClientStreams, n: make(map[string]int)},
		})
		names = append(names, pb.CoordinatorService_ServiceDesc.ServiceName, pb.LoaderService_ServiceDesc.ServiceName)
	}
	// A loader answers GetDataset and PlanEpoch too (plans are pure
	// functions; its plans name itself): a trainer pointed at one loader
	// works as with serve.
	c.jobs = newJobs(cfg.MaxJobs, cfg.MaxJobReporters, cfg.JobExpiry, time.Now, cfg.Logger)
	if err := cfg.Registry.Register(jobsCollector{j: c.jobs, p: c.pool}); err != nil {
		return nil, err
	}
	pb.RegisterCoordinatorServiceServer(gs, &coordinator{core: c})
	hs := health.NewServer()
	for _, name := range names {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	healthpb.RegisterHealthServer(gs, hs)
	sm.InitializeMetrics(gs)
	return hs, nil
}

// coordinatorOnly is the LoaderService of a coordinator: it serves no
// batches, and says where they come from.
type coordinatorOnly struct {
	pb.UnimplementedLoaderServiceServer
}

func (coordinatorOnly) StreamBatches(*pb.StreamBatchesRequest, grpc.ServerStreamingServer[pb.StreamBatchesResponse]) error {
	return status.Error(codes.FailedPrecondition, "this server is a coordinator (shardstream coordinator) and serves no batches: stream from the loaders PlanEpoch names in loader_addresses")
}
