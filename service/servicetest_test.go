package service

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/shardstream/shardstream/manifest"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/sampler"
	"github.com/shardstream/shardstream/worker"
)

// testManifest describes shards of perShard samples in chunks of perChunk
// samples; sizes are nominal (the fake reader makes the bytes up).
func testManifest(shards, perShard, perChunk int) *manifest.Manifest {
	m := &manifest.Manifest{Version: manifest.Version}
	for s := range shards {
		sh := manifest.Shard{Path: fmt.Sprintf("shard-%05d.tar", s), Samples: int64(perShard), Compression: manifest.CompressionNone}
		for first := 0; first < perShard; first += perChunk {
			n := min(perChunk, perShard-first)
			sh.Chunks = append(sh.Chunks, manifest.Chunk{Offset: sh.Size, Size: int64(n) * 1024, RawSize: int64(n) * 1024, FirstSample: int64(first), Samples: int64(n)})
			sh.Size += int64(n) * 1024
		}
		m.Shards = append(m.Shards, sh)
	}
	if err := m.Validate(); err != nil {
		panic(err)
	}
	return m
}

func sampleKey(shard, index int64) string { return fmt.Sprintf("%05d-%06d", shard, index) }

// fakeReader serves made-up chunks of a test manifest: sample (s, i) has
// key sampleKey(s, i), a "cls" field holding the key and a "bin" field of
// fieldSize bytes.
type fakeReader struct {
	m         *manifest.Manifest
	fieldSize int
	calls     atomic.Int64
	// errs maps a chunk to the error reading it gives.
	errs map[chunkKey]error
	// short lists chunks that decode one sample fewer than the manifest says.
	short map[chunkKey]bool
	// gate, when not nil, blocks every read until it is closed or ctx ends.
	gate chan struct{}

	mu    sync.Mutex
	reads map[chunkKey]int // reads of each chunk
}

// Fetch reads a made-up chunk; every read counts its stored size as read
// from the store (the fake has no cache).
func (f *fakeReader) Fetch(ctx context.Context, s, c int) (*worker.Chunk, int64, error) {
	f.calls.Add(1)
	f.mu.Lock()
	if f.reads == nil {
		f.reads = make(map[chunkKey]int)
	}
	f.reads[chunkKey{s, c}]++
	f.mu.Unlock()
	if f.gate != nil {
		select {
		case <-f.gate:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	if err := f.errs[chunkKey{s, c}]; err != nil {
		return nil, 0, err
	}
	mc := f.m.Shards[s].Chunks[c]
	n := mc.Samples
	if f.short[chunkKey{s, c}] {
		n--
	}
	ch := &worker.Chunk{FirstSample: mc.FirstSample}
	for i := range n {
		key := sampleKey(int64(s), mc.FirstSample+i)
		ch.Samples = append(ch.Samples, worker.Sample{Key: key, Fields: []worker.Field{
			{Name: "cls", Data: []byte(key)},
			{Name: "bin", Data: bytes.Repeat([]byte{byte(i)}, f.fieldSize)},
		}})
	}
	return ch, mc.Size, nil
}

// waitRead waits until f has been asked for a chunk.
func (f *fakeReader) waitRead(t *testing.T, ctx context.Context) {
	t.Helper()
	for f.calls.Load() == 0 {
		if ctx.Err() != nil {
			t.Fatal("no chunk read started")
		}
		time.Sleep(time.Millisecond) // polling a counter: nothing to wait on
	}
}

// seqPlan is a simple reference plan: samples in storage order, dealt out
// step by step, rank by rank; the tail that does not fill a step is
// dropped. Its tokens are "fake:<fingerprint>:<seed>:<epoch>:<window>:<policy>:<step>".
// Its LastUse is exact, computed by walking the whole plan once.
type seqPlan struct {
	job         sampler.Job
	ids         []sampler.SampleID
	unit        []int // unit[i]: the unit of ids[i]
	world, bs   int
	offset      int64 // steps consumed before the resume point
	steps       int64
	last        map[[2]int]int64 // {rank, unit}: the last step rank uses unit
	batchCalled atomic.Int64
}

func newSeqPlan(units []sampler.Unit, job sampler.Job, resume *sampler.Token, world, bs int) (epochPlan, error) {
	p := &seqPlan{job: job, world: world, bs: bs, last: make(map[[2]int]int64)}
	for u, un := range units {
		for i := range un.Samples {
			p.ids = append(p.ids, sampler.SampleID{Shard: un.Shard, Index: un.First + i})
			p.unit = append(p.unit, u)
		}
	}
	if resume != nil && len(resume.Segments) > 0 {
		p.offset = resume.Segments[0].Steps
	}
	p.steps = int64(len(p.ids))/int64(world*bs) - p.offset
	if p.steps < 0 {
		return nil, fmt.Errorf("%w: token past the end", sampler.ErrInvalid)
	}
	for step := range p.steps {
		for r := range world {
			first := p.first(r, step)
			for i := range int64(bs) {
				p.last[[2]int{r, p.unit[first+i]}] = step
			}
		}
	}
	return p, nil
}

func (p *seqPlan) first(rank int, step int64) int64 {
	return ((p.offset+step)*int64(p.world) + int64(rank)) * int64(p.bs)
}

func (p *seqPlan) Steps() int64   { return p.steps }
func (p *seqPlan) Samples() int64 { return p.steps * int64(p.world*p.bs) }
func (p *seqPlan) Dropped() int64 { return int64(len(p.ids)) % int64(p.world*p.bs) }
func (p *seqPlan) Padded() int64  { return 0 }
func (p *seqPlan) Batch(rank int, step int64, dst []sampler.SampleID) []sampler.SampleID {
	p.batchCalled.Add(1)
	first := p.first(rank, step)
	return append(dst, p.ids[first:first+int64(p.bs)]...)
}
func (p *seqPlan) LastUse(rank int, step int64, dst []int64) []int64 {
	first := p.first(rank, step)
	for i := range int64(p.bs) {
		dst = append(dst, p.last[[2]int{rank, p.unit[first+i]}])
	}
	return dst
}
func (p *seqPlan) Token(step int64) string {
	j := p.job
	return fmt.Sprintf("fake:%s:%d:%d:%d:%d:%d", j.Fingerprint, j.Seed, j.Epoch, j.Window, j.Policy, p.offset+step)
}

func parseFakeToken(s string) (sampler.Token, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 7 || parts[0] != "fake" {
		return sampler.Token{}, fmt.Errorf("%w: %q", sampler.ErrBadToken, s)
	}
	var n [5]uint64
	for i, p := range parts[2:] {
		v, err := strconv.ParseUint(p, 10, 64)
		if err != nil {
			return sampler.Token{}, fmt.Errorf("%w: %q", sampler.ErrBadToken, s)
		}
		n[i] = v
	}
	return sampler.Token{
		Job:      sampler.Job{Fingerprint: parts[1], Seed: n[0], Epoch: n[1], Window: int(n[2]), Policy: sampler.Policy(n[3])},
		Segments: []sampler.Segment{{Steps: int64(n[4])}},
	}, nil
}

var fakePlanner = planner{newPlan: newSeqPlan, parseToken: parseFakeToken}

// testServer is a Server on a loopback listener with a client connection.
type testServer struct {
	srv     *Server
	addr    string
	conn    *grpc.ClientConn
	coord   pb.CoordinatorServiceClient
	loader  pb.LoaderServiceClient
	metrics string // base URL of /metrics
	stop    func() error
}

// startServer serves cfg with planner pl until the test ends.
func startServer(t testing.TB, cfg Config, pl planner, dialOpts ...grpc.DialOption) *testServer {
	t.Helper()
	return startServerOn(t, cfg, pl, "127.0.0.1:0", dialOpts...)
}

// startServerOn is startServer listening on addr.
func startServerOn(t testing.TB, cfg Config, pl planner, addr string, dialOpts ...grpc.DialOption) *testServer {
	t.Helper()
	srv, err := newServer(cfg, pl)
	if err != nil {
		t.Fatalf("newServer: %v", err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	mlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis, mlis) }()
	var once sync.Once
	var serveErr error
	stop := func() error {
		once.Do(func() {
			cancel()
			select {
			case serveErr = <-done:
			case <-time.After(30 * time.Second):
				serveErr = errors.New("Serve did not return 30s after its context ended")
			}
		})
		return serveErr
	}
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256 << 20)),
	}, dialOpts...)
	conn, err := grpc.NewClient(lis.Addr().String(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{
		srv: srv, addr: lis.Addr().String(), conn: conn,
		coord: pb.NewCoordinatorServiceClient(conn), loader: pb.NewLoaderServiceClient(conn),
		metrics: "http://" + mlis.Addr().String() + "/metrics", stop: stop,
	}
	t.Cleanup(func() {
		conn.Close()
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ts
}

// dialTest connects to addr until the test ends.
func dialTest(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// testCtx is a context that ends before the test's deadline.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// collect reads up to limit batches (limit < 0: all) from stream and
// returns them with the stream's error: nil at a clean end or at the limit.
func collect(stream grpc.ServerStreamingClient[pb.StreamBatchesResponse], limit int) ([]*pb.Batch, error) {
	var out []*pb.Batch
	err := recvEach(stream, limit, func(b *pb.Batch) { out = append(out, b) })
	return out, err
}

// recvEach calls f on each of up to limit batches (limit < 0: all) of
// stream, keeping none, and returns the stream's error: nil at a clean end
// or at the limit.
func recvEach(stream grpc.ServerStreamingClient[pb.StreamBatchesResponse], limit int, f func(*pb.Batch)) error {
	for n := 0; limit < 0 || n < limit; n++ {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		f(r.GetBatch())
	}
	return nil
}

// streamAll opens req's stream on c and reads it to its end: its batches
// and its error, nil at a clean end.
func streamAll(ctx context.Context, c pb.LoaderServiceClient, req *pb.StreamBatchesRequest) ([]*pb.Batch, error) {
	st, err := c.StreamBatches(ctx, req)
	if err != nil {
		return nil, err
	}
	return collect(st, -1)
}

// ids lists the sample identities of batches in order.
func ids(batches []*pb.Batch) []sampler.SampleID {
	var out []sampler.SampleID
	for _, b := range batches {
		for _, s := range b.GetSamples() {
			out = append(out, sampler.SampleID{Shard: int64(s.GetShard()), Index: int64(s.GetIndex())})
		}
	}
	return out
}
