package service

import (
	"context"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/sampler"
	"github.com/shardstream/shardstream/worker"
)

// rankStream is one StreamBatches call once its request is valid: rank's
// batches for the steps from, from+stride, ... below end of plan, sent in
// order. A stride above 1 makes the stream one of several that share the
// rank's steps (DataLoader workers, stripes over loaders).
//
// Two parts share it. The producer, a goroutine, plans steps, starts the
// fetches of the chunks they need and queues the steps; the queue holds at
// most ReadaheadSteps of them, so a client that reads slowly blocks Send,
// the queue fills and the read-ahead stops. The consumer, the handler's
// goroutine, takes steps off the queue in order, waits for their chunks,
// assembles and sends each batch and releases the chunks no later step
// needs.
//
// Chunk lifetimes come from the plan: the plan's LastUse says, for every
// sample, the last step of the rank that uses its chunk. A strided stream
// sends only the steps ≡ from (mod stride), so its last use of the chunk is
// the last of its own steps at or before that one (lastSent); holding the
// chunk to a step it never sends would pin it to the end of the stream.
// The producer fetches a chunk once, at its first use, keeps it in held
// until the step of its last use is planned, then hands it to that step,
// whose consumer releases it once the batch is sent. So each chunk is read once per epoch
// and rank (the Pad policy's repeated samples in the last step excepted),
// and a stream holds the chunks of about the windows its current and
// read-ahead steps touch. Their decoded bytes count against budget, the
// stream's share of Config.ChunkMemoryBytes reserved when it opened; the
// producer starts no fetch past it while the consumer has queued steps to
// send (it always may for the step the consumer waits on, so a stream
// never deadlocks on its own budget).
//
// Invariants:
//   - run owns every goroutine it starts (the producer and each fetch) and
//     waits for them all before it returns;
//   - every chunk is released exactly once: by the consumer after Send of
//     its last step returns (grpc-go has marshalled the message by then,
//     and newServer installs no stats handler that reads messages later),
//     or by run after every goroutine ended, on any other exit path;
//   - errors, of planning or reading, arrive in step order: a step carries
//     its own and the consumer returns it when the step's turn comes.
type rankStream struct {
	l         *loader
	j         *job
	plan      epochPlan
	rank      int
	from, end int64 // the steps sent: from, from+stride, ... below end
	stride    int64 // at least 1
	columnar  bool  // send Batch.columns, not Batch.samples
	budget    int64 // decoded chunk bytes this stream may hold: its reservation

	wg    sync.WaitGroup    // the producer and every fetch
	queue chan *pendingStep // planned steps, fetches started; the producer closes it
	sem   chan struct{}     // one token per fetch in flight
	freed chan struct{}     // the consumer took a step or released chunks (capacity 1)

	held      map[chunkKey]*fetch // the producer's: fetched chunks a later step still needs
	expiring  map[int64][]*fetch  // the producer's: held chunks by the step of their last use
	heldBytes atomic.Int64        // decoded bytes of chunks fetched and not released
	peak      int64               // the producer's: the most heldBytes reached

	building *pendingStep // the producer's: planned, not queued yet
	sending  *pendingStep // the consumer's: taken off the queue, not released yet
}

// chunkKey names one chunk of one shard.
type chunkKey struct{ shard, chunk int }

// fetch is one chunk read, shared by every step that uses the chunk; chunk
// and err are written before done closes.
type fetch struct {
	key      chunkKey
	size     int64 // decoded size, counted against the stream's budget
	last     int64 // the last step that uses the chunk
	done     chan struct{}
	chunk    *worker.Chunk
	err      error
	released bool // the consumer's, or run's once every goroutine ended
}

// pendingStep is one planned step on its way to the client.
type pendingStep struct {
	step    int64
	ids     []sampler.SampleID
	keys    []chunkKey // the chunks ids need, in order of first use
	last    []int64    // last[i]: the last step that uses keys[i]
	err     error      // planning failed: the step has no chunks, and the stream ends with err at its turn
	fetches map[chunkKey]*fetch
	expire  []*fetch // the chunks whose last use is this step: released once it is sent
}

// run sends the stream's batches until the last one is sent, a step fails
// or ctx ends, then releases what was not sent.
func (s *rankStream) run(ctx context.Context, send func(*pb.StreamBatchesResponse) error) error {
	ctx, cancel := context.WithCancel(ctx)
	s.queue = make(chan *pendingStep, s.l.cfg.ReadaheadSteps)
	s.sem = make(chan struct{}, s.l.cfg.FetchConcurrency)
	s.freed = make(chan struct{}, 1)
	s.held = make(map[chunkKey]*fetch)
	s.expiring = make(map[int64][]*fetch)
	defer func() {
		cancel()
		s.wg.Wait() // no fetch is running: every chunk can be released
		for _, f := range s.held {
			s.release(f)
		}
		s.releaseStep(s.building)
		s.releaseStep(s.sending)
		for ps := range s.queue { // closed by the producer
			s.releaseStep(ps)
		}
		s.l.metrics.streamChunkPeak.Observe(float64(s.peak))
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.produce(ctx)
	}()
	return s.consume(ctx, send)
}

// steps is how many batches the stream sends.
func (s *rankStream) steps() int64 {
	if s.end <= s.from {
		return 0
	}
	return (s.end - s.from + s.stride - 1) / s.stride
}

// lastSent is the last step of the stream at or before step (which is at
// least from): where a chunk whose rank-wide last use is step is released.
func (s *rankStream) lastSent(step int64) int64 {
	return s.from + (step-s.from)/s.stride*s.stride
}

// produce plans the stream's steps in order, starts their fetches and
// queues them, until every step is queued or ctx ends; then it closes the
// queue.
func (s *rankStream) produce(ctx context.Context) {
	defer close(s.queue)
	for step := s.from; step < s.end; step += s.stride {
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

// planStep plans step's batch, the chunks it needs and their last uses. A
// step that cannot be planned carries its error instead.
func (s *rankStream) planStep(step int64) *pendingStep {
	ps := &pendingStep{step: step}
	ps.ids, ps.keys, ps.last, ps.err = s.planBatch(step)
	return ps
}

// planBatch returns step's samples, the chunks they are in (in order of
// first use) and the last step of this stream that uses each chunk.
func (s *rankStream) planBatch(step int64) (ids []sampler.SampleID, keys []chunkKey, last []int64, err error) {
	defer func() { // the producer goroutine is outside the recovery interceptor's reach
		if v := recover(); v != nil {
			s.l.cfg.Logger.Error("panic planning a step", "plan", s.j.key, "rank", s.rank, "step", step, "panic", v, "stack", string(debug.Stack()))
			ids, keys, last, err = nil, nil, nil, status.Errorf(codes.Internal, "plan rank %d: internal error: %v", s.rank, v)
		}
	}()
	ids = s.plan.Batch(s.rank, step, nil)
	uses := s.plan.LastUse(s.rank, step, nil)
	shards := s.j.ds.manifest.Shards
	index := make(map[chunkKey]int)
	for i, id := range ids {
		if id.Shard < 0 || id.Shard >= int64(len(shards)) || id.Index < 0 || id.Index >= shards[id.Shard].Samples {
			return nil, nil, nil, status.Errorf(codes.Internal, "plan names sample %d of shard %d, which the manifest of %d shards lacks", id.Index, id.Shard, len(shards))
		}
		if uses[i] < step || uses[i] >= s.plan.Steps() {
			return nil, nil, nil, status.Errorf(codes.Internal, "plan says sample %d of shard %d at step %d is last used at step %d", id.Index, id.Shard, step, uses[i])
		}
		k := chunkKey{int(id.Shard), shards[id.Shard].ChunkOf(id.Index)}
		use := s.lastSent(uses[i])
		if j, ok := index[k]; ok {
			last[j] = max(last[j], use)
			continue
		}
		index[k] = len(keys)
		keys = append(keys, k)
		last = append(last, use)
	}
	return ids, keys, last, nil
}

// startFetches gives ps its chunks: those a planned step already fetched,
// and fetches it starts in order for the others, each once there is room
// in the budget and a free fetch slot. Then it hands ps every held chunk
// whose last use is ps's step, whether or not ps reads it: the plan's last
// use is exact to the window, so the window's last step may hold none of
// some of its chunks. It returns false when ctx ended first; every fetch
// started is in s.held or ps.expire either way.
func (s *rankStream) startFetches(ctx context.Context, ps *pendingStep) bool {
	ps.fetches = make(map[chunkKey]*fetch, len(ps.keys))
	for i, k := range ps.keys {
		f := s.held[k]
		if f == nil {
			size := s.j.ds.manifest.Shards[k.shard].Chunks[k.chunk].RawSize
			if !s.waitRoom(ctx, size) {
				return false
			}
			select {
			case s.sem <- struct{}{}:
			case <-ctx.Done():
				return false
			}
			f = &fetch{key: k, size: size, last: -1, done: make(chan struct{})}
			s.held[k] = f
			s.peak = max(s.peak, s.heldBytes.Add(size))
			s.l.chunkMem.hold(size)
			s.wg.Add(1)
			go s.fetch(ctx, k, f)
		}
		if last := max(ps.last[i], ps.step); last > f.last {
			f.last = last
			s.expiring[last] = append(s.expiring[last], f) // an entry under an earlier step goes stale
		}
		ps.fetches[k] = f
	}
	for _, f := range s.expiring[ps.step] {
		if f.last == ps.step && s.held[f.key] == f {
			ps.expire = append(ps.expire, f)
			delete(s.held, f.key)
		}
	}
	delete(s.expiring, ps.step)
	return true
}

// waitRoom waits until a chunk of size bytes fits the stream's budget, or
// the consumer has no queued step to send: then the step being built is
// the one it waits for, and it gets its chunks whatever the budget.
func (s *rankStream) waitRoom(ctx context.Context, size int64) bool {
	for s.heldBytes.Load()+size > s.budget && len(s.queue) > 0 {
		select {
		case <-s.freed:
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// fetch reads chunk k into f and frees its slot.
func (s *rankStream) fetch(ctx context.Context, k chunkKey, f *fetch) {
	defer s.wg.Done()
	start := time.Now()
	var stored int64
	f.chunk, stored, f.err = s.l.readChunk(ctx, s.j.ds, k)
	s.l.metrics.fetched.add(s.j, stored)
	s.l.metrics.chunkFetch.Observe(time.Since(start).Seconds())
	<-s.sem
	close(f.done)
}

// consume sends the queued steps in order until the last one is sent, a
// step fails or ctx ends.
func (s *rankStream) consume(ctx context.Context, send func(*pb.StreamBatchesResponse) error) error {
	for range s.steps() {
		ps, err := s.next(ctx)
		if err != nil {
			return err
		}
		if err := s.sendStep(ctx, ps, send); err != nil {
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
	s.signalFreed() // the queue shrank: the producer may be waiting on it
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
func (s *rankStream) sendStep(ctx context.Context, ps *pendingStep, send func(*pb.StreamBatchesResponse) error) error {
	batch, err := s.assemble(ps)
	if err != nil {
		return err
	}
	msg := &pb.StreamBatchesResponse{Batch: batch}
	size := proto.Size(msg)
	if err := s.l.cfg.sendBucket.wait(ctx, size); err != nil { // Config.SendBytesPerSecond
		return err
	}
	start := time.Now()
	if err := send(msg); err != nil {
		return err // already a status: the stream's context ended or the transport failed
	}
	s.sending = nil
	s.releaseStep(ps)
	m := s.l.metrics
	m.stepSend.Observe(time.Since(start).Seconds())
	m.batchesSent.Inc()
	m.samplesSent.Add(float64(len(ps.ids)))
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
	smps := make([]*worker.Sample, len(ps.ids))
	for i, id := range ps.ids {
		sh := &shards[id.Shard]
		ci := sh.ChunkOf(id.Index)
		c := ps.fetches[chunkKey{int(id.Shard), ci}].chunk
		k := id.Index - c.FirstSample
		if k < 0 || k >= int64(len(c.Samples)) {
			return nil, status.Errorf(codes.DataLoss, "step %d: shard %q chunk %d at offset %d decoded samples [%d, %d), sample %d is missing",
				ps.step, sh.Path, ci, sh.Chunks[ci].Offset, c.FirstSample, c.FirstSample+int64(len(c.Samples)), id.Index)
		}
		smps[i] = &c.Samples[k]
	}
	b := &pb.Batch{
		Rank:        uint32(s.rank),
		Epoch:       s.j.key.epoch,
		Step:        ps.step,
		ResumeToken: s.plan.Token(ps.step + 1),
	}
	if s.columnar {
		cols, err := columnsOf(ps.ids, smps)
		if err != nil {
			return nil, status.Errorf(codes.DataLoss, "step %d: %v", ps.step, err)
		}
		b.Columns = cols
		return b, nil
	}
	b.Samples = make([]*pb.Sample, len(smps))
	for i, smp := range smps {
		fields := make([]*pb.Field, len(smp.Fields))
		for fi, f := range smp.Fields {
			fields[fi] = &pb.Field{Name: f.Name, Data: f.Data} // shares the chunk's bytes: no copy
		}
		b.Samples[i] = &pb.Sample{Shard: uint64(ps.ids[i].Shard), Index: uint64(ps.ids[i].Index), Key: smp.Key, Fields: fields}
	}
	return b, nil
}

// releaseStep releases the chunks whose last use is ps: after its batch is
// sent (its chunks were all read), or after every goroutine of the stream
// ended.
func (s *rankStream) releaseStep(ps *pendingStep) {
	if ps == nil {
		return
	}
	for _, f := range ps.expire {
		s.release(f)
	}
	ps.expire = nil
}

// release gives back f's chunk: its buffer goes back to the read path's
// pool, and its bytes to the stream's budget.
func (s *rankStream) release(f *fetch) {
	if f.released {
		return
	}
	f.released = true
	f.chunk.Release()
	f.chunk = nil
	s.heldBytes.Add(-f.size)
	s.l.chunkMem.unhold(f.size)
	s.signalFreed()
}

// signalFreed wakes a producer waiting for room; a pending signal is
// enough, so it never blocks.
func (s *rankStream) signalFreed() {
	select {
	case s.freed <- struct{}{}:
	default:
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
