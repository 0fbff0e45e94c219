package service

import (
	"context"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/sampler"
	"github.com/shardstream/shardstream/worker"
)

// rankStream is one StreamBatches call once its request is valid: rank's
// batches for steps [from, end) of plan, sent in order.
//
// Two parts share it. The producer, a goroutine, plans steps, starts their
// chunk fetches (at most FetchConcurrency at a time) and queues the steps;
// the queue holds at most ReadaheadSteps of them, so a client that reads
// slowly blocks Send, the queue fills and the read-ahead stops. The
// consumer, the handler's goroutine, takes steps off the queue in order,
// waits for their chunks, assembles and sends each batch and releases its
// chunks. A stream holds at most ReadaheadSteps+2 steps of chunks: the
// queue's, the producer's unqueued one and the consumer's.
//
// Invariants:
//   - run owns every goroutine it starts (the producer and each fetch) and
//     waits for them all before it returns;
//   - every chunk is released exactly once: by the consumer after Send
//     returns (grpc-go has marshalled the message by then, and newServer
//     installs no stats handler that reads messages later), or by run
//     after every goroutine ended, on any other exit path;
//   - errors, of planning or reading, arrive in step order: a step carries
//     its own and the consumer returns it when the step's turn comes.
type rankStream struct {
	l         *loader
	j         *job
	plan      epochPlan
	rank      int
	from, end int64

	wg    sync.WaitGroup    // the producer and every fetch
	queue chan *pendingStep // planned steps, fetches started; the producer closes it
	sem   chan struct{}     // one token per fetch in flight

	building *pendingStep // the producer's: planned, not queued yet
	sending  *pendingStep // the consumer's: taken off the queue, not released yet
}

// chunkKey names one chunk of one shard.
type chunkKey struct{ shard, chunk int }

// fetch is one chunk read; chunk and err are written before done closes.
type fetch struct {
	done  chan struct{}
	chunk *worker.Chunk
	err   error
}

// pendingStep is one planned step on its way to the client.
type pendingStep struct {
	step    int64
	ids     []sampler.SampleID
	keys    []chunkKey // the chunks ids need, in order of first use
	err     error      // planning failed: the step has no chunks, and the stream ends with err at its turn
	fetches map[chunkKey]*fetch
}

// run sends the stream's batches until the last one is sent, a step fails
// or ctx ends, then releases what was not sent.
func (s *rankStream) run(ctx context.Context, send func(*pb.StreamBatchesResponse) error) error {
	ctx, cancel := context.WithCancel(ctx)
	s.queue = make(chan *pendingStep, s.l.cfg.ReadaheadSteps)
	s.sem = make(chan struct{}, s.l.cfg.FetchConcurrency)
	defer func() {
		cancel()
		s.wg.Wait() // no fetch is running: every chunk can be released
		s.building.release()
		s.sending.release()
		for ps := range s.queue { // closed by the producer
			ps.release()
		}
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.produce(ctx)
	}()
	return s.consume(ctx, send)
}

// produce plans steps [from, end) in order, starts their fetches and
// queues them, until every step is queued or ctx ends; then it closes the
// queue.
func (s *rankStream) produce(ctx context.Context) {
	defer close(s.queue)
	for step := s.from; step < s.end; step++ {
		ps := s.planStep(step)
		s.building = ps
		if !s.startFetches(ctx, ps) {
			return
		}
		select {
		case s.queue <- ps:
			s.building = nil
		case <-ctx.Done():
			return
		}
	}
}

// planStep plans step's batch and the chunks it needs. A step that cannot
// be planned carries its error instead.
func (s *rankStream) planStep(step int64) *pendingStep {
	ps := &pendingStep{step: step}
	ps.ids, ps.keys, ps.err = s.planBatch(step)
	return ps
}

// planBatch returns step's samples and the chunks they are in, in order of
// first use.
func (s *rankStream) planBatch(step int64) (ids []sampler.SampleID, keys []chunkKey, err error) {
	defer func() { // the producer goroutine is outside the recovery interceptor's reach
		if v := recover(); v != nil {
			s.l.cfg.Logger.Error("panic planning a step", "plan", s.j.key, "rank", s.rank, "step", step, "panic", v, "stack", string(debug.Stack()))
			ids, keys, err = nil, nil, status.Errorf(codes.Internal, "plan rank %d: internal error: %v", s.rank, v)
		}
	}()
	ids = s.plan.Batch(s.rank, step, nil)
	shards := s.j.ds.manifest.Shards
	seen := make(map[chunkKey]bool)
	for _, id := range ids {
		if id.Shard < 0 || id.Shard >= int64(len(shards)) || id.Index < 0 || id.Index >= shards[id.Shard].Samples {
			return nil, nil, status.Errorf(codes.Internal, "plan names sample %d of shard %d, which the manifest of %d shards lacks", id.Index, id.Shard, len(shards))
		}
		k := chunkKey{int(id.Shard), shards[id.Shard].ChunkOf(id.Index)}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return ids, keys, nil
}

// startFetches starts reading ps's chunks in order, each once a fetch slot
// is free. It returns false when ctx ended first; ps.fetches holds the
// fetches started either way.
func (s *rankStream) startFetches(ctx context.Context, ps *pendingStep) bool {
	ps.fetches = make(map[chunkKey]*fetch, len(ps.keys))
	for _, k := range ps.keys {
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return false
		}
		f := &fetch{done: make(chan struct{})}
		ps.fetches[k] = f
		s.wg.Add(1)
		go s.fetch(ctx, k, f)
	}
	return true
}

// fetch reads chunk k into f and frees its slot.
func (s *rankStream) fetch(ctx context.Context, k chunkKey, f *fetch) {
	defer s.wg.Done()
	start := time.Now()
	f.chunk, f.err = s.l.readChunk(ctx, s.j.ds, k)
	s.l.metrics.chunkFetch.Observe(time.Since(start).Seconds())
	<-s.sem
	close(f.done)
}

// consume sends the queued steps in order until the last one is sent, a
// step fails or ctx ends.
func (s *rankStream) consume(ctx context.Context, send func(*pb.StreamBatchesResponse) error) error {
	for range s.end - s.from {
		ps, err := s.next(ctx)
		if err != nil {
			return err
		}
		if err := s.sendStep(ps, send); err != nil {
			return err
		}
	}
	return nil
}

// next takes the next step off the queue, which makes it the consumer's
// (s.sending), and waits for its chunks.
func (s *rankStream) next(ctx context.Context) (*pendingStep, error) {
	start := time.Now() // the wait counts from asking for the step, queued or not
	ps, ok := <-s.queue
	if !ok { // the producer stops before the end only when ctx ended
		return nil, status.FromContextError(context.Cause(ctx)).Err()
	}
	s.sending = ps
	for _, f := range ps.fetches {
		select {
		case <-f.done:
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	s.l.metrics.stepWait.Observe(time.Since(start).Seconds())
	return ps, nil
}

// sendStep assembles ps's batch, sends it and releases its chunks.
func (s *rankStream) sendStep(ps *pendingStep, send func(*pb.StreamBatchesResponse) error) error {
	batch, err := s.assemble(ps)
	if err != nil {
		return err
	}
	msg := &pb.StreamBatchesResponse{Batch: batch}
	size := proto.Size(msg)
	start := time.Now()
	if err := send(msg); err != nil {
		return err // already a status: the stream's context ended or the transport failed
	}
	s.sending = nil
	ps.release()
	m := s.l.metrics
	m.stepSend.Observe(time.Since(start).Seconds())
	m.batchesSent.Inc()
	m.samplesSent.Add(float64(len(batch.Samples)))
	m.bytesSent.Add(float64(size))
	return nil
}

// assemble builds ps's batch from its fetched chunks, or returns the step's
// error, or the first among its chunks', as a status naming shard and
// offset.
func (s *rankStream) assemble(ps *pendingStep) (*pb.Batch, error) {
	if ps.err != nil {
		return nil, stepStatus(ps.step, ps.err)
	}
	for _, k := range ps.keys {
		if err := ps.fetches[k].err; err != nil {
			return nil, stepStatus(ps.step, err)
		}
	}
	shards := s.j.ds.manifest.Shards
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
		smp := &c.Samples[k]
		fields := make([]*pb.Field, len(smp.Fields))
		for fi, f := range smp.Fields {
			fields[fi] = &pb.Field{Name: f.Name, Data: f.Data} // shares the chunk's bytes: no copy
		}
		samples[i] = &pb.Sample{Shard: uint64(id.Shard), Index: uint64(id.Index), Key: smp.Key, Fields: fields}
	}
	return &pb.Batch{
		Rank:        uint32(s.rank),
		Epoch:       s.j.key.epoch,
		Step:        ps.step,
		Samples:     samples,
		ResumeToken: s.plan.Token(ps.step + 1),
	}, nil
}

// release gives back ps's chunks: their buffers go back to the read path's
// pool. Only once none of its fetches is running: after its batch is sent
// (its chunks were all read), or after every goroutine of the stream ended.
func (ps *pendingStep) release() {
	if ps == nil {
		return
	}
	for _, f := range ps.fetches {
		f.chunk.Release()
		f.chunk = nil
	}
}

// stepStatus turns a step's planning or read-path error into a status
// naming the step. The read path's errors already name the shard and
// offset.
func stepStatus(step int64, err error) error {
	if s, ok := status.FromError(err); ok {
		return status.Errorf(s.Code(), "step %d: %s", step, s.Message())
	}
	return status.Errorf(readCode(err), "step %d: %v", step, err)
}
