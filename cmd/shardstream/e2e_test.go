package main

// End-to-end tests of the real binary: build it, make a dataset, run
// `shardstream serve` on a local directory and on a real MinIO, and stream
// whole epochs with the generated Go client.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shardstream/shardstream/internal/miniotest"
	"github.com/shardstream/shardstream/manifest"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/store/s3store"
	"github.com/shardstream/shardstream/store/storeuri"
	"github.com/shardstream/shardstream/wds"
)

// buildBinary returns the shardstream binary: $SHARDSTREAM_BIN when set
// (`make go-test` builds it first), else one built into a test directory.
func buildBinary(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("e2e: builds and runs the binary; skipped with -short")
	}
	if bin := os.Getenv("SHARDSTREAM_BIN"); bin != "" {
		if fi, err := os.Stat(bin); err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("SHARDSTREAM_BIN=%s: not a file (%v)", bin, err)
		}
		return bin
	}
	bin := filepath.Join(t.TempDir(), "shardstream")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// e2eSample is the content of sample i of shard s in the test dataset.
func e2eSample(s, i int) (key string, cls, bin []byte) {
	key = fmt.Sprintf("s%03d_%06d", s, i)
	cls = []byte(fmt.Sprint(s*1000 + i))
	bin = bytes.Repeat([]byte{byte(s), byte(i)}, 100+i%50)
	return
}

// makeDataset writes a dataset of plain WebDataset tar shards, perShard
// samples each in chunks of perChunk samples, and its manifest, into dir.
func makeDataset(t testing.TB, dir string, shards, perShard, perChunk int) *manifest.Manifest {
	return makeDatasetSized(t, dir, shards, perShard, perChunk, 0)
}

// makeDatasetSized is makeDataset with bin fields of binSize bytes (0: the
// e2eSample content).
func makeDatasetSized(t testing.TB, dir string, shards, perShard, perChunk, binSize int) *manifest.Manifest {
	t.Helper()
	m := &manifest.Manifest{Version: manifest.Version}
	for s := range shards {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		sh := manifest.Shard{Path: fmt.Sprintf("shard-%06d.tar", s), Samples: int64(perShard), Compression: manifest.CompressionNone}
		start, first := int64(0), 0
		for i := range perShard {
			key, cls, bin := e2eSample(s, i)
			if binSize > 0 {
				bin = bytes.Repeat([]byte{byte(i)}, binSize)
			}
			for _, f := range []struct {
				ext  string
				data []byte
			}{{"cls", cls}, {"bin", bin}} {
				hdr := &tar.Header{Name: key + "." + f.ext, Mode: 0o644, Size: int64(len(f.data)), ModTime: time.Unix(1700000000, 0), Typeflag: tar.TypeReg}
				if err := tw.WriteHeader(hdr); err != nil {
					t.Fatal(err)
				}
				if _, err := tw.Write(f.data); err != nil {
					t.Fatal(err)
				}
			}
			if err := tw.Flush(); err != nil {
				t.Fatal(err)
			}
			if i+1-first == perChunk || i == perShard-1 {
				end := int64(buf.Len())
				sh.Chunks = append(sh.Chunks, manifest.Chunk{Offset: start, Size: end - start, RawSize: end - start, FirstSample: int64(first), Samples: int64(i + 1 - first)})
				start, first = end, i+1
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		sh.Size = int64(buf.Len())
		if err := os.WriteFile(filepath.Join(dir, sh.Path), buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		m.Shards = append(m.Shards, sh)
	}
	data, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, manifest.FileName), data, 0o644); err != nil {
		t.Fatal(err)
	}
	return m
}

// syncBuffer is a bytes.Buffer safe for a writer and readers at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// serveProc is a running `shardstream serve`.
type serveProc struct {
	cmd    *exec.Cmd
	addr   string
	stderr *syncBuffer
	exited chan struct{} // closed once the process has exited; err is then set
	err    error
}

// startServe runs `shardstream serve --listen 127.0.0.1:0 args…` and
// returns once it printed its "listening on" line. The process inherits
// the test's environment. It is stopped with SIGTERM at cleanup, which
// must make it exit 0.
func startServe(t testing.TB, bin string, args ...string) *serveProc {
	t.Helper()
	return startProc(t, bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--shutdown-timeout", "5s"}, args...)...)
}

// startProc runs `shardstream args…` (a serving command) like startServe.
func startProc(t testing.TB, bin string, args ...string) *serveProc {
	t.Helper()
	p := &serveProc{stderr: &syncBuffer{}, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stderr = p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	var readers sync.WaitGroup
	readers.Add(1)
	go func() { // ends at the process's exit (stdout's EOF)
		defer readers.Done()
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // only the first line matters
			}
		}
	}()
	go func() {
		readers.Wait() // Wait must not run before the pipe is drained
		p.err = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
			return
		default:
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
			if p.err != nil {
				t.Errorf("serve after SIGTERM: %v\nstderr:\n%s", p.err, p.stderr)
			}
		case <-time.After(30 * time.Second):
			p.cmd.Process.Kill()
			<-p.exited
			t.Errorf("serve did not exit 30s after SIGTERM\nstderr:\n%s", p.stderr)
		}
	})
	select {
	case line := <-lines:
		addr, ok := strings.CutPrefix(line, "listening on ")
		if !ok {
			t.Fatalf("serve printed %q, want \"listening on ADDR\"", line)
		}
		p.addr = addr
	case <-p.exited:
		t.Fatalf("serve exited before serving: %v\nstderr:\n%s", p.err, p.stderr)
	case <-time.After(60 * time.Second):
		t.Fatalf("serve printed no \"listening on\" line in 60s\nstderr:\n%s", p.stderr)
	}
	return p
}

// serveFails runs `shardstream serve args…`, which must exit non-zero within
// a minute, print nothing on stdout, and name want on stderr.
func serveFails(t *testing.T, bin, want string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--open-timeout", "20s"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("serve %q hung: killed after 60s\nstderr:\n%s", args, stderr.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("serve %q: %v, want a non-zero exit\nstderr:\n%s", args, err, stderr.String())
	}
	if stdout.Len() != 0 {
		t.Errorf("serve %q printed %q on stdout, want nothing", args, stdout.String())
	}
	if !strings.Contains(stderr.String(), want) {
		t.Errorf("serve %q: stderr %q does not name %q", args, stderr.String(), want)
	}
	t.Logf("serve %q: exit %d: %s", args, ee.ExitCode(), strings.TrimSpace(stderr.String()))
}

// dial connects to a serve process with the receive limit the server's
// batches need.
func dial(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// epoch is one epoch streamed on every rank.
type epoch struct {
	plan    *pb.PlanEpochResponse
	batches [][]*pb.Batch // by rank
}

// streamEpoch plans job on the coordinator at addr and streams every rank
// to the end from the loader the plan names.
func streamEpoch(t *testing.T, ctx context.Context, addr string, job *pb.JobSpec) epoch {
	t.Helper()
	conn := dial(t, addr)
	plan, err := pb.NewCoordinatorServiceClient(conn).PlanEpoch(ctx, &pb.PlanEpochRequest{Job: job})
	if err != nil {
		t.Fatalf("PlanEpoch: %v", err)
	}
	e := epoch{plan: plan}
	for rank := range job.WorldSize {
		lc := pb.NewLoaderServiceClient(conn)
		if a := plan.LoaderAddresses[rank]; a != "" {
			lc = pb.NewLoaderServiceClient(dial(t, a))
		}
		st, err := lc.StreamBatches(ctx, &pb.StreamBatchesRequest{Job: job, Rank: rank})
		if err != nil {
			t.Fatal(err)
		}
		var got []*pb.Batch
		for {
			r, err := st.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("rank %d after %d batches: %v", rank, len(got), err)
			}
			got = append(got, r.Batch)
		}
		e.batches = append(e.batches, got)
	}
	return e
}

// checkEpoch checks that an epoch is balanced and delivers the dataset's
// samples with their content: exactly once under drop-last (delivered +
// dropped = all), at least once under pad.
func checkEpoch(t *testing.T, m *manifest.Manifest, job *pb.JobSpec, e epoch) {
	t.Helper()
	checkEpochWith(t, m, job, e, func(s *pb.Sample) (string, []byte, []byte) {
		return e2eSample(int(s.Shard), int(s.Index))
	})
}

// checkEpochWith is checkEpoch with the expected key, cls and bin of a
// delivered sample given by want.
func checkEpochWith(t *testing.T, m *manifest.Manifest, job *pb.JobSpec, e epoch, want func(*pb.Sample) (key string, cls, bin []byte)) {
	t.Helper()
	type id struct{ shard, index uint64 }
	seen := map[id]int{}
	for rank, bs := range e.batches {
		if int64(len(bs)) != e.plan.Steps {
			t.Errorf("rank %d: %d batches, plan says %d for every rank", rank, len(bs), e.plan.Steps)
		}
		for step, b := range bs {
			if b.Rank != uint32(rank) || b.Step != int64(step) || len(b.Samples) != int(job.BatchSize) || b.ResumeToken == "" {
				t.Fatalf("rank %d batch %d: rank %d step %d, %d samples, token %q", rank, step, b.Rank, b.Step, len(b.Samples), b.ResumeToken)
			}
			for _, s := range b.Samples {
				key, cls, bin := want(s)
				if s.Key != key || len(s.Fields) != 2 || s.Fields[0].Name != "cls" || !bytes.Equal(s.Fields[0].Data, cls) ||
					s.Fields[1].Name != "bin" || !bytes.Equal(s.Fields[1].Data, bin) {
					t.Fatalf("sample %d/%d: key %q, %d fields; want key %q with cls %q and %d bytes of bin", s.Shard, s.Index, s.Key, len(s.Fields), key, cls, len(bin))
				}
				seen[id{s.Shard, s.Index}]++
			}
		}
	}
	total := m.TotalSamples()
	pad := job.LastBatch == pb.LastBatchPolicy_LAST_BATCH_POLICY_PAD
	for k, n := range seen {
		if n != 1 && !pad {
			t.Errorf("sample %v delivered %d times", k, n)
		}
	}
	switch {
	case !pad && int64(len(seen))+e.plan.Dropped != total:
		t.Errorf("drop-last: %d distinct samples delivered + %d dropped, want %d", len(seen), e.plan.Dropped, total)
	case pad && int64(len(seen)) != total:
		t.Errorf("pad: %d distinct samples delivered, want all %d", len(seen), total)
	}
}

func TestE2ELocal(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	m := makeDataset(t, dir, 7, 53, 10)
	metricsAddr := freeAddr(t)
	p := startServe(t, bin, "--data", dir, "--readahead", "3", "--metrics-addr", metricsAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ds, err := pb.NewCoordinatorServiceClient(dial(t, p.addr)).GetDataset(ctx, &pb.GetDatasetRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if ds.Name != "default" || ds.Fingerprint != m.Fingerprint() || ds.Shards != 7 || ds.Samples != 7*53 {
		t.Errorf("GetDataset = %v, want default, %s, 7 shards, %d samples", ds, m.Fingerprint(), 7*53)
	}
	for _, job := range []*pb.JobSpec{
		{WorldSize: 3, BatchSize: 8, Seed: 1},
		{WorldSize: 4, BatchSize: 5, Seed: 2, Epoch: 3, Window: 2, LastBatch: pb.LastBatchPolicy_LAST_BATCH_POLICY_PAD},
		{WorldSize: 1, BatchSize: 371}, // one batch of the whole dataset
	} {
		t.Run(fmt.Sprintf("world%d_batch%d_%v", job.WorldSize, job.BatchSize, job.LastBatch), func(t *testing.T) {
			checkEpoch(t, m, job, streamEpoch(t, ctx, p.addr, job))
		})
	}

	t.Run("metrics", func(t *testing.T) {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+metricsAddr+"/metrics", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{"shardstream_loader_batches_sent_total", "shardstream_read_bytes_total", "go_goroutines", "process_resident_memory_bytes"} {
			if !strings.Contains(string(body), want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}

// freeAddr returns a loopback address free at the time of the call.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestE2ELoaderDeath kills a loader mid-stream (SIGKILL) and resumes the
// rank on another loader from the next step: the trainer sees exactly the
// uninterrupted stream. The coordinator hands out the loaders it is given.
func TestE2ELoaderDeath(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	makeDataset(t, dir, 6, 50, 10)
	b := startServe(t, bin, "--data", dir)
	a := startServe(t, bin, "--data", dir, "--loader-addrs", b.addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	job := &pb.JobSpec{WorldSize: 2, BatchSize: 4, Seed: 8}

	plan, err := pb.NewCoordinatorServiceClient(dial(t, a.addr)).PlanEpoch(ctx, &pb.PlanEpochRequest{Job: job})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.LoaderAddresses) != 2 || plan.LoaderAddresses[0] != b.addr || plan.LoaderAddresses[1] != b.addr {
		t.Errorf("loader addresses %q, want [%s %s]", plan.LoaderAddresses, b.addr, b.addr)
	}

	recv := func(addr string, from int64, limit int) ([]*pb.Batch, error) {
		st, err := pb.NewLoaderServiceClient(dial(t, addr)).StreamBatches(ctx, &pb.StreamBatchesRequest{Job: job, Rank: 1, FromStep: from})
		if err != nil {
			return nil, err
		}
		var got []*pb.Batch
		for limit < 0 || len(got) < limit {
			r, err := st.Recv()
			if err == io.EOF {
				return got, nil
			}
			if err != nil {
				return got, err
			}
			got = append(got, r.Batch)
		}
		return got, nil
	}
	full, err := recv(b.addr, 0, -1)
	if err != nil || int64(len(full)) != plan.Steps {
		t.Fatalf("uninterrupted stream: %d batches, %v; want %d", len(full), err, plan.Steps)
	}

	const k = 5
	head, err := recv(a.addr, 0, k)
	if err != nil || len(head) != k {
		t.Fatalf("stream from the loader to kill: %d batches, %v", len(head), err)
	}
	a.cmd.Process.Kill()
	<-a.exited
	tail, err := recv(b.addr, k, -1)
	if err != nil {
		t.Fatal(err)
	}
	got := append(head, tail...)
	if len(got) != len(full) {
		t.Fatalf("resumed stream has %d batches, uninterrupted %d", len(got), len(full))
	}
	for i := range full {
		if got[i].String() != full[i].String() {
			t.Fatalf("batch %d differs after the loader died at step %d:\n got  %v\n want %v", i, k, got[i], full[i])
		}
	}
}

// wdsSample is sample i of the zstd test dataset.
func wdsSample(i int) wds.Sample {
	return wds.Sample{Key: fmt.Sprintf("k%06d", i), Fields: []wds.Field{
		{Name: "cls", Data: []byte(fmt.Sprint(i))},
		{Name: "bin", Data: bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 50+i%200)},
	}}
}

// makeZstdDataset writes n samples with wds.WriteDataset: seekable zstd
// shards of about shardSize bytes in chunks of about chunkSize raw bytes.
func makeZstdDataset(t *testing.T, dir string, n int, shardSize, chunkSize int64) *manifest.Manifest {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := storeuri.Open(ctx, dir, s3store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	i := 0
	m, err := wds.WriteDataset(ctx, st, func() (wds.Sample, bool, error) {
		if i == n {
			return wds.Sample{}, false, nil
		}
		i++
		return wdsSample(i - 1), true, nil
	}, wds.DatasetOptions{ShardSize: shardSize, ChunkSize: chunkSize, Compression: manifest.CompressionZstd})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestE2EZstd serves a dataset of seekable zstd shards written by the
// format package and checks every epoch sample by content; then a frame
// with garbage in it ends the stream with DataLoss naming shard and offset.
func TestE2EZstd(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	const n = 1000
	m := makeZstdDataset(t, dir, n, 24<<10, 4<<10)
	if len(m.Shards) < 4 || len(m.Shards[0].Chunks) < 2 || m.Shards[0].Compression != manifest.CompressionZstd {
		t.Fatalf("dataset has %d shards, %d chunks in the first, compression %q: want several zstd shards of several chunks",
			len(m.Shards), len(m.Shards[0].Chunks), m.Shards[0].Compression)
	}
	p := startServe(t, bin, "--data", dir)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	byKey := func(s *pb.Sample) (string, []byte, []byte) {
		var i int
		if _, err := fmt.Sscanf(s.Key, "k%06d", &i); err != nil {
			return "k?", nil, nil
		}
		w := wdsSample(i)
		return w.Key, w.Fields[0].Data, w.Fields[1].Data
	}
	for _, job := range []*pb.JobSpec{
		{WorldSize: 3, BatchSize: 16, Seed: 5},
		{WorldSize: 2, BatchSize: 7, Seed: 6, LastBatch: pb.LastBatchPolicy_LAST_BATCH_POLICY_PAD},
	} {
		checkEpochWith(t, m, job, streamEpoch(t, ctx, p.addr, job), byKey)
	}

	// Garbage in the middle of one zstd frame: same size, bad bytes.
	bad := m.Shards[len(m.Shards)/2]
	c := bad.Chunks[1]
	f, err := os.OpenFile(filepath.Join(dir, bad.Path), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0x5A}, int(min(c.Size/2, 256))), c.Offset+c.Size/4); err != nil {
		t.Fatal(err)
	}
	f.Close()
	q := startServe(t, bin, "--data", dir) // a fresh process: nothing cached
	st, err := pb.NewLoaderServiceClient(dial(t, q.addr)).StreamBatches(ctx, &pb.StreamBatchesRequest{Job: &pb.JobSpec{WorldSize: 1, BatchSize: 10}})
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for {
		_, err = st.Recv()
		if err != nil {
			break
		}
		got++
	}
	if status.Code(err) != codes.DataLoss {
		t.Fatalf("stream over a damaged zstd frame ended after %d batches with %v, want DataLoss", got, err)
	}
	if msg := status.Convert(err).Message(); !strings.Contains(msg, bad.Path) || !strings.Contains(msg, fmt.Sprint(c.Offset)) {
		t.Errorf("error %q does not name shard %s and offset %d", msg, bad.Path, c.Offset)
	}
	t.Logf("after %d batches: %v", got, err)
}

func TestE2EMinIO(t *testing.T) {
	srv := miniotest.Start(t)
	bin := buildBinary(t)
	srv.CreateBucket(t, "data")
	srv.Env(t) // the serve process finds its credentials in the standard AWS chain

	dir := t.TempDir()
	m := makeDataset(t, dir, 5, 40, 7)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := storeuri.Open(ctx, "s3://data/sets/one", srv.S3Config())
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Write(ctx, filepath.Base(f), bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
	}

	p := startServe(t, bin, "--data", "s3://data/sets/one", "--s3-endpoint", srv.Endpoint, "--s3-path-style", "--name", "one")
	job := &pb.JobSpec{Dataset: "one", WorldSize: 2, BatchSize: 6, Seed: 9}
	checkEpoch(t, m, job, streamEpoch(t, ctx, p.addr, job))

	t.Run("missing bucket", func(t *testing.T) {
		serveFails(t, bin, "s3://nobucket/x", "--data", "s3://nobucket/x", "--s3-endpoint", srv.Endpoint, "--s3-path-style")
	})
	t.Run("missing prefix", func(t *testing.T) {
		serveFails(t, bin, "s3://data/nothing", "--data", "s3://data/nothing", "--s3-endpoint", srv.Endpoint, "--s3-path-style")
	})
}

func TestE2EBadInput(t *testing.T) {
	bin := buildBinary(t)

	t.Run("missing path", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nope")
		serveFails(t, bin, missing, "--data", missing)
	})
	t.Run("no manifest", func(t *testing.T) {
		dir := t.TempDir()
		serveFails(t, bin, dir, "--data", dir)
	})
	t.Run("unparsable manifest", func(t *testing.T) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, manifest.FileName), []byte(`{"version": 1, "shards": [`), 0o644); err != nil {
			t.Fatal(err)
		}
		serveFails(t, bin, "manifest", "--data", dir)
	})
	t.Run("truncated shard", func(t *testing.T) {
		dir := t.TempDir()
		m := makeDataset(t, dir, 3, 30, 5)
		bad := m.Shards[1]
		if err := os.Truncate(filepath.Join(dir, bad.Path), bad.Size/2); err != nil {
			t.Fatal(err)
		}
		p := startServe(t, bin, "--data", dir)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// One rank reading the whole epoch must reach the shard.
		job := &pb.JobSpec{WorldSize: 1, BatchSize: 10, Seed: 4}
		st, err := pb.NewLoaderServiceClient(dial(t, p.addr)).StreamBatches(ctx, &pb.StreamBatchesRequest{Job: job})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			_, err = st.Recv()
			if err != nil {
				break
			}
			n++
		}
		if err == io.EOF {
			t.Fatalf("stream ended cleanly after %d batches over a truncated shard", n)
		}
		if c := status.Code(err); c != codes.DataLoss && c != codes.FailedPrecondition {
			t.Errorf("stream error %v, want DataLoss or FailedPrecondition", err)
		}
		if msg := status.Convert(err).Message(); !strings.Contains(msg, bad.Path) || !strings.Contains(msg, "offset") {
			t.Errorf("stream error %q does not name shard %s and an offset", msg, bad.Path)
		}
		t.Logf("after %d batches: %v", n, err)
	})
	t.Run("corrupt shard", func(t *testing.T) {
		dir := t.TempDir()
		m := makeDataset(t, dir, 3, 30, 5)
		bad := m.Shards[2]
		c := bad.Chunks[3]
		f, err := os.OpenFile(filepath.Join(dir, bad.Path), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		// Garbage over the chunk's first tar header: same size, bad bytes.
		if _, err := f.WriteAt(bytes.Repeat([]byte{0xA5}, 512), c.Offset); err != nil {
			t.Fatal(err)
		}
		f.Close()
		p := startServe(t, bin, "--data", dir)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		job := &pb.JobSpec{WorldSize: 1, BatchSize: 10, Seed: 4}
		st, err := pb.NewLoaderServiceClient(dial(t, p.addr)).StreamBatches(ctx, &pb.StreamBatchesRequest{Job: job})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			_, err = st.Recv()
			if err != nil {
				break
			}
			n++
		}
		if status.Code(err) != codes.DataLoss {
			t.Fatalf("stream over a corrupt chunk ended after %d batches with %v, want DataLoss", n, err)
		}
		if msg := status.Convert(err).Message(); !strings.Contains(msg, bad.Path) || !strings.Contains(msg, fmt.Sprint(c.Offset)) {
			t.Errorf("stream error %q does not name shard %s and offset %d", msg, bad.Path, c.Offset)
		}
		t.Logf("after %d batches: %v", n, err)
	})
	t.Run("sigterm", func(t *testing.T) {
		dir := t.TempDir()
		makeDataset(t, dir, 1, 5, 5)
		p := startServe(t, bin, "--data", dir)
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.exited:
			if p.err != nil {
				t.Errorf("serve after SIGTERM: %v, want exit 0\nstderr:\n%s", p.err, p.stderr)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("serve did not exit 30s after SIGTERM")
		}
	})
}

// BenchmarkServeLocal streams one rank of an epoch from `shardstream serve`
// over a local directory (in the page cache after the first pass): the
// whole loader (read path, plan, assembly, gRPC) in its own process. One op
// is one batch of 32 samples of 64 KiB.
func BenchmarkServeLocal(b *testing.B) {
	const shards, perShard, perChunk, batch, binSize = 16, 256, 32, 32, 64 << 10
	bin := buildBinary(b)
	dir := b.TempDir()
	makeDatasetSized(b, dir, shards, perShard, perChunk, binSize)
	p := startServe(b, bin, "--data", dir)
	conn := dial(b, p.addr)
	lc := pb.NewLoaderServiceClient(conn)
	ctx := context.Background()
	job := &pb.JobSpec{WorldSize: 1, BatchSize: batch}
	b.SetBytes(batch * binSize)
	b.ResetTimer()
	for sent := 0; sent < b.N; {
		st, err := lc.StreamBatches(ctx, &pb.StreamBatchesRequest{Job: job, MaxSteps: int64(b.N - sent)})
		if err != nil {
			b.Fatal(err)
		}
		for {
			_, err := st.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			sent++
		}
		job.Epoch++ // a new epoch: another permutation of the same chunks
	}
}
