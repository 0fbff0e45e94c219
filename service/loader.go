package service

import (
	"context"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/sampler"
	"github.com/shardstream/shardstream/worker"
)

// loader implements LoaderService. It is stateless: every stream computes
// (or finds in the plan cache) its plan from the request alone.
type loader struct {
	pb.UnimplementedLoaderServiceServer
	*core
	streams chan struct{} // one token per open stream, capacity MaxStreams
}

func (l *loader) StreamBatches(req *pb.StreamBatchesRequest, stream grpc.ServerStreamingServer[pb.StreamBatchesResponse]) (err error) {
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

	j, err := l.resolve(req.GetJob())
	if err != nil {
		return err
	}
	rank := req.GetRank()
	if int64(rank) >= int64(j.key.worldSize) {
		return status.Errorf(codes.InvalidArgument, "rank: %d, must be below job.world_size %d", rank, j.key.worldSize)
	}
	from, maxSteps := req.GetFromStep(), req.GetMaxSteps()
	if from < 0 {
		return status.Errorf(codes.InvalidArgument, "from_step: %d, must be >= 0", from)
	}
	if maxSteps < 0 {
		return status.Errorf(codes.InvalidArgument, "max_steps: %d, must be >= 0 (0: to the end)", maxSteps)
	}
	p, err := l.plans.get(j)
	if err != nil {
		return err
	}
	end := p.Steps()
	if from > end {
		return status.Errorf(codes.OutOfRange, "from_step: %d, past the end of the epoch at step %d", from, end)
	}
	if maxSteps > 0 && maxSteps < end-from {
		end = from + maxSteps
	}
	return l.stream(stream.Context(), stream.Send, j, p, int(rank), from, end)
}

// chunkKey names one chunk of one shard.
type chunkKey struct{ shard, chunk int }

// fetch is one chunk read; chunk and err are written before the step's
// done channel closes.
type fetch struct {
	chunk *worker.Chunk
	err   error
}

// pendingStep is one step in the read-ahead queue.
type pendingStep struct {
	step    int64
	ids     []sampler.SampleID
	keys    []chunkKey // in order of first use
	fetches map[chunkKey]*fetch
	left    atomic.Int64 // fetches not finished
	done    chan struct{}
}

func (ps *pendingStep) finishOne() {
	if ps.left.Add(-1) == 0 {
		close(ps.done)
	}
}

// release gives back the step's chunks once its batch is sent (or will
// not be): their buffers go back to the read path's pool. Only after
// every fetch of the step has finished.
func (ps *pendingStep) release() {
	if ps == nil {
		return
	}
	for _, f := range ps.fetches {
		f.chunk.Release()
		f.chunk = nil
	}
}

// stream sends rank's batches for steps [from, end) in order. A producer
// goroutine plans steps and starts their chunk fetches, at most
// FetchConcurrency at a time, and queues them; the queue holds at most
// ReadaheadSteps steps, so a client that reads slowly stops the read-ahead.
// stream owns every goroutine it starts and waits for them all before it
// returns. Each step's chunks are released once its batch is sent: grpc-go
// has marshalled the message when Send returns, and no stats handler that
// reads messages later is installed (see newServer).
func (l *loader) stream(ctx context.Context, send func(*pb.StreamBatchesResponse) error, j *job, p epochPlan, rank int, from, end int64) error {
	ctx, cancel := context.WithCancel(ctx)
	var (
		wg       sync.WaitGroup
		building *pendingStep // the producer's step not yet queued
		current  *pendingStep // the step being sent
	)
	queue := make(chan *pendingStep, l.cfg.ReadaheadSteps)
	defer func() {
		cancel()
		wg.Wait() // every fetch has finished: their chunks can be released
		building.release()
		current.release()
		for ps := range queue { // closed by the producer
			ps.release()
		}
	}()

	sem := make(chan struct{}, l.cfg.FetchConcurrency)
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(queue)
		for step := from; step < end; step++ {
			ps, err := l.newPendingStep(j, p, rank, step)
			if err != nil { // a step that cannot be planned: its error ends the stream in order
				ps = &pendingStep{step: step, done: make(chan struct{})}
				ps.fetches = map[chunkKey]*fetch{{-1, -1}: {err: err}}
				close(ps.done)
			}
			building = ps
			for _, k := range ps.keys {
				select {
				case sem <- struct{}{}:
				case <-ctx.Done():
					return
				}
				f := ps.fetches[k]
				wg.Add(1)
				go func() {
					defer wg.Done()
					start := time.Now()
					f.chunk, f.err = l.readChunk(ctx, j.ds, k)
					l.metrics.chunkFetch.Observe(time.Since(start).Seconds())
					<-sem
					ps.finishOne()
				}()
			}
			select {
			case queue <- ps:
				building = nil
			case <-ctx.Done():
				return
			}
		}
	}()

	sent := int64(0)
	for {
		start := time.Now() // the wait counts from asking for the step, queued or not
		ps, ok := <-queue
		if !ok {
			break
		}
		current = ps
		select {
		case <-ps.done:
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		}
		l.metrics.stepWait.Observe(time.Since(start).Seconds())
		batch, err := l.assemble(j, p, rank, ps)
		if err != nil {
			return err
		}
		msg := &pb.StreamBatchesResponse{Batch: batch}
		size := proto.Size(msg)
		start = time.Now()
		if err := send(msg); err != nil {
			return err // already a status: the stream's context ended or the transport failed
		}
		current = nil
		ps.release()
		l.metrics.stepSend.Observe(time.Since(start).Seconds())
		l.metrics.batchesSent.Inc()
		l.metrics.samplesSent.Add(float64(len(batch.Samples)))
		l.metrics.bytesSent.Add(float64(size))
		sent++
	}
	if sent != end-from { // the producer stopped early: only when ctx ended
		return status.FromContextError(context.Cause(ctx)).Err()
	}
	return nil
}

// readChunk reads one chunk. A panic in the read path (a decoder bug on
// strange bytes) becomes this stream's error instead of killing every
// stream of the process: the gRPC recovery interceptor only covers the
// handler's own goroutine.
func (l *loader) readChunk(ctx context.Context, ds *dataset, k chunkKey) (c *worker.Chunk, err error) {
	defer func() {
		if p := recover(); p != nil {
			sh := ds.manifest.Shards[k.shard]
			l.cfg.Logger.ErrorContext(ctx, "panic reading a chunk", "shard", sh.Path, "chunk", k.chunk, "panic", p, "stack", string(debug.Stack()))
			c, err = nil, status.Errorf(codes.Internal, "read shard %d (%s) chunk %d at offset %d: internal error: %v", k.shard, sh.Path, k.chunk, sh.Chunks[k.chunk].Offset, p)
		}
	}()
	return ds.chunks.Chunk(ctx, k.shard, k.chunk)
}

// newPendingStep plans step's batch and the chunks it needs.
func (l *loader) newPendingStep(j *job, p epochPlan, rank int, step int64) (_ *pendingStep, err error) {
	defer func() { // the producer goroutine is outside the recovery interceptor's reach
		if v := recover(); v != nil {
			l.cfg.Logger.Error("panic planning a step", "plan", j.key, "rank", rank, "step", step, "panic", v, "stack", string(debug.Stack()))
			err = status.Errorf(codes.Internal, "plan rank %d: internal error: %v", rank, v)
		}
	}()
	ps := &pendingStep{step: step, done: make(chan struct{})}
	ps.ids = p.Batch(rank, step, nil)
	ps.fetches = make(map[chunkKey]*fetch)
	shards := j.ds.manifest.Shards
	for _, id := range ps.ids {
		if id.Shard < 0 || id.Shard >= int64(len(shards)) || id.Index < 0 || id.Index >= shards[id.Shard].Samples {
			return nil, status.Errorf(codes.Internal, "plan names sample %d of shard %d, which the manifest of %d shards lacks", id.Index, id.Shard, len(shards))
		}
		k := chunkKey{int(id.Shard), shards[id.Shard].ChunkOf(id.Index)}
		if _, ok := ps.fetches[k]; !ok {
			ps.fetches[k] = &fetch{}
			ps.keys = append(ps.keys, k)
		}
	}
	ps.left.Store(int64(len(ps.keys)))
	if len(ps.keys) == 0 {
		close(ps.done)
	}
	return ps, nil
}

// assemble builds step's batch from its fetched chunks, or returns the
// first error among them as a status naming shard and offset.
func (l *loader) assemble(j *job, p epochPlan, rank int, ps *pendingStep) (*pb.Batch, error) {
	for _, f := range ps.fetches {
		if f.err != nil {
			return nil, readStatus(ps.step, f.err)
		}
	}
	shards := j.ds.manifest.Shards
	samples := make([]*pb.Sample, len(ps.ids))
	for i, id := range ps.ids {
		sh := &shards[id.Shard]
		ci := sh.ChunkOf(id.Index)
		c := ps.fetches[chunkKey{int(id.Shard), ci}].chunk
		k := id.Index - c.FirstSample
		if k < 0 || k >= int64(len(c.Samples)) {
			return nil, status.Errorf(codes.DataLoss, "step %d: shard %q chunk %d at offset %d decoded samples [%d, %d), sample %d is missing",
				ps.step, sh.Path, ci, sh.Chunks[ci].Offset, c.FirstSample, c.FirstSample+int64(len(c.Samples)), id.Index)
		}
		s := &c.Samples[k]
		fields := make([]*pb.Field, len(s.Fields))
		for fi, f := range s.Fields {
			fields[fi] = &pb.Field{Name: f.Name, Data: f.Data} // shares the chunk's bytes: no copy
		}
		samples[i] = &pb.Sample{Shard: uint64(id.Shard), Index: uint64(id.Index), Key: s.Key, Fields: fields}
	}
	return &pb.Batch{
		Rank:        uint32(rank),
		Epoch:       j.key.epoch,
		Step:        ps.step,
		Samples:     samples,
		ResumeToken: p.Token(ps.step + 1),
	}, nil
}

// readStatus turns a read-path error into a status. The read path's
// errors already name the shard and offset.
func readStatus(step int64, err error) error {
	if s, ok := status.FromError(err); ok {
		return status.Errorf(s.Code(), "step %d: %s", step, s.Message())
	}
	return status.Errorf(readCode(err), "step %d: %v", step, err)
}
