package service

import (
	"context"
	"runtime/debug"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/worker"
)

// loader implements LoaderService. It is stateless: every stream computes
// (or finds in the plan cache) its plan from the request alone.
type loader struct {
	pb.UnimplementedLoaderServiceServer
	*core
	streams  chan struct{}  // one token per open stream, capacity MaxStreams
	chunkMem *chunkMemory   // Config.ChunkMemoryBytes, reserved by open streams
	clients  *clientStreams // Limits.MaxClientStreams
}

// StreamBatches streams one rank's batches, holding one of MaxStreams
// slots while it runs.
func (l *loader) StreamBatches(req *pb.StreamBatchesRequest, stream grpc.ServerStreamingServer[pb.StreamBatchesResponse]) (err error) {
	if err := l.allow(stream.Context(), req.GetJob().GetDataset()); err != nil {
		return err
	}
	id := clientID(stream.Context())
	if err := l.clients.acquire(id); err != nil {
		return err
	}
	defer l.clients.release(id)
	select {
	case l.streams <- struct{}{}:
	default:
		err = status.Errorf(codes.ResourceExhausted, "loader: %d streams open, the most this server serves (--max-streams); retry or use another loader", cap(l.streams))
		l.metrics.streamsTotal.WithLabelValues(codes.ResourceExhausted.String()).Inc()
		return err
	}
	l.metrics.streamsOpen.Inc()
	defer func() {
		<-l.streams
		l.metrics.streamsOpen.Dec()
		l.metrics.streamsTotal.WithLabelValues(status.Code(err).String()).Inc()
	}()

	rs, err := l.newRankStream(req)
	if err != nil {
		return err
	}
	need, why := streamNeed(rs.j.ds, rs.j.key.window, rs.j.key.batchSize)
	if err := l.chunkMem.reserve(need, why); err != nil {
		return err
	}
	defer l.chunkMem.unreserve(need)
	rs.budget = need
	return rs.run(stream.Context(), stallSender(stream, l.cfg.Limits.SendTimeout))
}

// maxStride bounds StreamBatchesRequest.stride: the DataLoader workers or
// loader stripes of one rank. 1024 is far more than either (a rank has
// tens of workers at most), and small enough that a stream's steps stay
// close together in the plan.
const maxStride = 1024

// newRankStream validates req and finds its plan. Errors are gRPC
// statuses naming the offending field.
func (l *loader) newRankStream(req *pb.StreamBatchesRequest) (*rankStream, error) {
	j, err := l.resolve(req.GetJob())
	if err != nil {
		return nil, err
	}
	rank := req.GetRank()
	if int64(rank) >= int64(j.key.worldSize) {
		return nil, status.Errorf(codes.InvalidArgument, "rank: %d, must be below job.world_size %d", rank, j.key.worldSize)
	}
	from, maxSteps := req.GetFromStep(), req.GetMaxSteps()
	if from < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "from_step: %d, must be >= 0", from)
	}
	if maxSteps < 0 {
		return nil, status.Errorf(codes.InvalidArgument, "max_steps: %d, must be >= 0 (0: to the end)", maxSteps)
	}
	stride := int64(max(req.GetStride(), 1))
	if stride > maxStride {
		return nil, status.Errorf(codes.InvalidArgument, "stride: %d, must be at most %d", stride, maxStride)
	}
	p, err := l.plans.get(j)
	if err != nil {
		return nil, err
	}
	end := p.Steps()
	if from > end {
		return nil, status.Errorf(codes.OutOfRange, "from_step: %d, past the end of the epoch at step %d", from, end)
	}
	if maxSteps > 0 && maxSteps < (end-from+stride-1)/stride {
		end = from + maxSteps*stride
	}
	return &rankStream{l: l, j: j, plan: p, rank: int(rank), from: from, end: end, stride: stride, columnar: req.GetColumnar()}, nil
}

// readChunk reads one chunk. A panic in the read path (a decoder bug on
// strange bytes) becomes this stream's error instead of killing every
// stream of the process: the gRPC recovery interceptor only covers the
// handler's own goroutine.
func (l *loader) readChunk(ctx context.Context, ds *dataset, k chunkKey) (c *worker.Chunk, stored int64, err error) {
	defer func() {
		if p := recover(); p != nil {
			sh := ds.manifest.Shards[k.shard]
			l.cfg.Logger.ErrorContext(ctx, "panic reading a chunk", "shard", sh.Path, "chunk", k.chunk, "panic", p, "stack", string(debug.Stack()))
			c, stored, err = nil, 0, status.Errorf(codes.Internal, "read shard %d (%s) chunk %d at offset %d: internal error: %v", k.shard, sh.Path, k.chunk, sh.Chunks[k.chunk].Offset, p)
		}
	}()
	return ds.chunks.Fetch(ctx, k.shard, k.chunk)
}
