package service

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/sampler"
)

// Limits bound what one request may make the server do. Each is checked
// before any work, and a request past one is refused with a message that
// names the limit and the serve flag that sets it. Config.MaxWorldSize,
// MaxBatchSize, MaxStreams, MaxSendMsgSize and ChunkMemoryBytes are limits
// too; they predate this struct.
type Limits struct {
	// MaxWindow bounds job.window, in chunks (--max-window). Default 1024:
	// 128× the default window; a stream also reserves about 2 windows of
	// chunks against ChunkMemoryBytes, which refuses large windows sooner
	// on big chunks.
	MaxWindow int

	// MaxWindowSamples bounds the samples one shuffle window may hold, as
	// the window's chunks × the dataset's largest chunk sample count
	// (--max-window-samples). The window shuffle keeps a 4-byte permutation
	// entry per sample of the window, per rank streamed. Default 1<<22:
	// 16 MiB per rank.
	MaxWindowSamples int64

	// MaxConcurrentPlans bounds the plans being computed at once; a request
	// that needs a new plan past it is refused with ResourceExhausted
	// (--max-concurrent-plans). Planning is CPU-bound, O(chunks). Default
	// GOMAXPROCS, at least 2.
	MaxConcurrentPlans int

	// PlanCacheBytes bounds the estimated memory of the cached plans
	// (--plan-cache-size); the least recently used go first, and a plan
	// estimated larger than the whole cache is refused with
	// ResourceExhausted. A plan costs about 12 bytes per chunk of the
	// dataset plus its ranks' state (see planBytes). Default 1 GiB: 64 plans
	// of an 1.3-million-chunk (10 TiB) dataset.
	PlanCacheBytes int64

	// MaxConnStreams is HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS: the calls
	// one connection may have open at once (--max-conn-streams). A client
	// past it waits for a stream to end (gRPC queues the call; it ends with
	// DeadlineExceeded at the call's deadline). Default MaxStreams + 64:
	// one connection may hold every stream slot and still make unary
	// calls and health checks beside them.
	MaxConnStreams int

	// MaxClientStreams bounds the StreamBatches calls one client may have
	// open at once (--max-client-streams); more are refused with
	// ResourceExhausted. A client is its auth-file name, or without an auth
	// file its peer's IP address. Default MaxStreams: no bound beyond the
	// server's.
	MaxClientStreams int

	// SendTimeout is how long sending one batch may block on a client that
	// does not read (--send-timeout). Past it the stream ends with
	// DeadlineExceeded and gives back its slot and chunk memory; the client
	// resumes from its last step like after a loader restart. Default 10
	// minutes: longer than an evaluation or checkpoint pause of a trainer
	// that holds its iterator. Negative: no timeout.
	SendTimeout time.Duration
}

// Defaults, as documented on Limits.
const (
	DefaultMaxWindow        = 1024
	DefaultMaxWindowSamples = 1 << 22
	DefaultPlanCacheBytes   = 1 << 30
	DefaultSendTimeout      = 10 * time.Minute
)

// validate fills defaults; maxStreams is Config.MaxStreams, validated.
func (l *Limits) validate(maxStreams int) error {
	for _, f := range []struct {
		name string
		p    *int
		def  int
	}{
		{"MaxWindow", &l.MaxWindow, DefaultMaxWindow},
		{"MaxConcurrentPlans", &l.MaxConcurrentPlans, max(2, runtime.GOMAXPROCS(0))},
		{"MaxConnStreams", &l.MaxConnStreams, maxStreams + 64},
		{"MaxClientStreams", &l.MaxClientStreams, maxStreams},
	} {
		if *f.p < 0 {
			return fmt.Errorf("service.Config.Limits.%s: %d, want >= 0", f.name, *f.p)
		}
		if *f.p == 0 {
			*f.p = f.def
		}
	}
	if l.MaxWindow > sampler.MaxWindowSamples {
		return fmt.Errorf("service.Config.Limits.MaxWindow: %d, want <= %d", l.MaxWindow, sampler.MaxWindowSamples)
	}
	for _, f := range []struct {
		name string
		p    *int64
		def  int64
	}{
		{"MaxWindowSamples", &l.MaxWindowSamples, DefaultMaxWindowSamples},
		{"PlanCacheBytes", &l.PlanCacheBytes, DefaultPlanCacheBytes},
	} {
		if *f.p < 0 {
			return fmt.Errorf("service.Config.Limits.%s: %d, want >= 0", f.name, *f.p)
		}
		if *f.p == 0 {
			*f.p = f.def
		}
	}
	if l.MaxWindowSamples > sampler.MaxWindowSamples {
		return fmt.Errorf("service.Config.Limits.MaxWindowSamples: %d, want <= %d (the planner's limit)", l.MaxWindowSamples, int64(sampler.MaxWindowSamples))
	}
	if l.SendTimeout == 0 {
		l.SendTimeout = DefaultSendTimeout
	}
	return nil
}

// checkLimits refuses a job whose cost passes a limit, before any
// planning: its window, its batch's estimated bytes against the largest
// message, and the world and batch sizes its resume token names.
func (s *core) checkLimits(j *job) error {
	lim, ds := &s.cfg.Limits, j.ds
	if j.key.window > lim.MaxWindow {
		return status.Errorf(codes.InvalidArgument, "job.window: %d chunks, more than this server's limit of %d (--max-window)", j.key.window, lim.MaxWindow)
	}
	if ws := min(int64(j.key.window), int64(len(ds.units))) * ds.maxUnitSamples; ws > lim.MaxWindowSamples {
		return status.Errorf(codes.InvalidArgument, "job.window: %d chunks of up to %d samples, up to %d samples a window, more than this server's limit of %d (--max-window-samples)",
			j.key.window, ds.maxUnitSamples, ws, lim.MaxWindowSamples)
	}
	if est := int64(j.key.batchSize) * ds.sampleBytes; est > int64(s.cfg.MaxSendMsgSize) {
		return status.Errorf(codes.InvalidArgument, "job.batch_size: %d samples of about %d bytes, about %d bytes a batch, more than the largest message of %d bytes (--max-message-size)",
			j.key.batchSize, ds.sampleBytes, est, s.cfg.MaxSendMsgSize)
	}
	if j.resume != nil {
		for i, seg := range j.resume.Segments {
			if seg.WorldSize < 1 || seg.WorldSize > s.cfg.MaxWorldSize {
				return status.Errorf(codes.InvalidArgument, "job.resume_token: segment %d has world size %d, must be in [1, %d] (--max-world-size)", i, seg.WorldSize, s.cfg.MaxWorldSize)
			}
			if seg.BatchSize < 1 || seg.BatchSize > s.cfg.MaxBatchSize {
				return status.Errorf(codes.InvalidArgument, "job.resume_token: segment %d has batch size %d, must be in [1, %d] (--max-batch-size)", i, seg.BatchSize, s.cfg.MaxBatchSize)
			}
		}
	}
	if b := planBytes(j); b > lim.PlanCacheBytes {
		return status.Errorf(codes.ResourceExhausted, "job: its plan needs about %d bytes, more than this server's whole plan cache of %d (--plan-cache-size)", b, lim.PlanCacheBytes)
	}
	return nil
}

// planBytes estimates the memory of j's plan (see sampler.Plan): 12 bytes
// per unit for the permuted order and its prefix sums; per rank of every
// segment its carry and the current segment's block pointer (16 bytes);
// and per rank of the first segment one cached window block of 4 bytes per
// sample, at most a window's samples and at most the rank's share.
func planBytes(j *job) int64 {
	ds := j.ds
	n := int64(len(ds.units))*12 + 1024
	world := int64(j.key.worldSize)
	first := world
	if j.resume != nil && len(j.resume.Segments) > 0 {
		first = int64(j.resume.Segments[0].WorldSize)
		for _, seg := range j.resume.Segments {
			n += 16 * int64(seg.WorldSize)
		}
	}
	n += 16 * world
	window := min(int64(j.key.window), int64(len(ds.units))) * ds.maxUnitSamples
	share := ds.samples/max(first, 1) + 1
	n += first * 4 * min(window, share)
	return n
}

// planSlots is Limits.MaxConcurrentPlans: a request that needs a plan
// computed takes a slot or is refused.
type planSlots chan struct{}

func (p planSlots) try() bool {
	select {
	case p <- struct{}{}:
		return true
	default:
		return false
	}
}

func (p planSlots) done() { <-p }

// errPlansBusy refuses a plan computation past Limits.MaxConcurrentPlans.
func errPlansBusy(n int) error {
	return status.Errorf(codes.ResourceExhausted, "plan: %d plans are being computed, the most this server computes at once (--max-concurrent-plans); retry", n)
}

// clientStreams counts the open streams of each client against
// Limits.MaxClientStreams.
type clientStreams struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

// clientID names the caller for per-client limits: its auth-file name, or
// its peer's IP address without an auth file.
func clientID(ctx context.Context) string {
	if c := clientFrom(ctx); c != nil {
		return "name:" + c.Name
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			return "addr:" + host
		}
		return "addr:" + p.Addr.String()
	}
	return ""
}

// acquire takes one of id's stream slots, or says with ResourceExhausted
// that it has none left; release gives it back.
func (c *clientStreams) acquire(id string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[id] >= c.max {
		return status.Errorf(codes.ResourceExhausted, "loader: this client has %d streams open, the most one client may (--max-client-streams)", c.n[id])
	}
	c.n[id]++
	return nil
}

func (c *clientStreams) release(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[id]--; c.n[id] <= 0 {
		delete(c.n, id)
	}
}

// stallSender sends each batch with a deadline: a client that does not
// read a batch within timeout loses the stream. grpc-go's Send cannot be
// interrupted, so each message is encoded here (after which it shares no
// bytes with the chunks, which the stream may then release) and written by
// a goroutine; past the timeout the handler returns, grpc-go ends the
// stream, and the blocked write returns, ending that goroutine.
func stallSender(stream grpc.ServerStreamingServer[pb.StreamBatchesResponse], timeout time.Duration) func(*pb.StreamBatchesResponse) error {
	if timeout < 0 {
		return stream.Send
	}
	timer := time.NewTimer(timeout)
	timer.Stop()
	return func(msg *pb.StreamBatchesResponse) error {
		pm := new(grpc.PreparedMsg)
		if err := pm.Encode(stream, msg); err != nil {
			return status.Errorf(codes.Internal, "encode batch: %v", err)
		}
		done := make(chan error, 1)
		go func() { done <- stream.SendMsg(pm) }()
		timer.Reset(timeout)
		defer timer.Stop()
		select {
		case err := <-done:
			return err
		case <-timer.C:
			return status.Errorf(codes.DeadlineExceeded, "loader: the client read no batch for %v (--send-timeout); the stream ends and gives back its slot, resume from the last step received", timeout)
		}
	}
}
