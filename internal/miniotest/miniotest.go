// Package miniotest runs a real MinIO server on loopback for tests and
// benchmarks: a fresh data directory, free ports, fixed root credentials,
// readiness by polling MinIO's liveness endpoint, and a clean stop.
//
// In a test:
//
//	srv := miniotest.Start(t) // skips (or fails under CI=true) without a minio binary
//	srv.CreateBucket(t, "data")
//	uri := "s3://data/ds"     // read it with srv.Endpoint, srv.AccessKey, srv.SecretKey
//
// Outside tests (cmd/shardstream-bench), Launch and Close do the same.
//
// The binary is found through the SHARDSTREAM_MINIO environment variable,
// then minio on PATH, then $(go env GOPATH)/bin/minio.
package miniotest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/shardstream/shardstream/store/s3store"
)

// Fixed root credentials of every server this package starts. They only
// ever guard a loopback server holding test data.
const (
	AccessKey = "shardstream"
	SecretKey = "shardstream-secret"
	Region    = "us-east-1"
)

// readyTimeout bounds the wait for a starting server; MinIO is usually
// live in well under a second, a loaded 2-core CI machine may take several.
const readyTimeout = 60 * time.Second

// Server is one running MinIO process.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Region    string
	Dir       string // data directory

	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	out    *tailBuffer   // the process's last output, for error messages
	once   sync.Once
	ownDir bool
}

// Binary returns the path of the minio binary, or an error saying where it
// looked.
func Binary() (string, error) {
	if p := os.Getenv("SHARDSTREAM_MINIO"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("SHARDSTREAM_MINIO=%s: %w", p, err)
		}
		return p, nil
	}
	if p, err := exec.LookPath("minio"); err == nil {
		return p, nil
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			gopath = strings.TrimSpace(string(out))
		}
	}
	if gopath != "" {
		p := filepath.Join(strings.Split(gopath, string(os.PathListSeparator))[0], "bin", "minio")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no minio binary: set SHARDSTREAM_MINIO, put minio on PATH or run `make tools`")
}

// BinaryFor returns the minio binary for a test. Without one it skips the
// test, except under CI=true where a missing backend is a failure.
func BinaryFor(t testing.TB) string {
	t.Helper()
	bin, err := Binary()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("miniotest: %v (CI=true: a missing backend fails)", err)
		}
		t.Skipf("miniotest: %v", err)
	}
	return bin
}

// Start starts a MinIO server for the test and stops it at the test's
// cleanup. Without a binary it skips the test, except under CI=true where
// a missing backend is a failure.
func Start(t testing.TB) *Server {
	t.Helper()
	bin := BinaryFor(t)
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	s, err := Launch(ctx, bin, t.TempDir())
	if err != nil {
		t.Fatalf("miniotest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("miniotest: %v", err)
		}
	})
	return s
}

// Launch starts the minio binary serving dir (a fresh temporary directory
// when dir is empty, removed by Close) and returns once it is live. ctx
// bounds the start only. Ports are picked free; a port taken between the
// pick and the bind is retried.
func Launch(ctx context.Context, binary, dir string) (*Server, error) {
	ownDir := false
	if dir == "" {
		d, err := os.MkdirTemp("", "miniotest-")
		if err != nil {
			return nil, err
		}
		dir, ownDir = d, true
	}
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		s, err := launchOnce(ctx, binary, dir)
		if err == nil {
			s.ownDir = ownDir
			return s, nil
		}
		lastErr = err
		if ctx.Err() != nil {
			break
		}
	}
	if ownDir {
		os.RemoveAll(dir)
	}
	return nil, lastErr
}

func launchOnce(ctx context.Context, binary, dir string) (*Server, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0])
	s := &Server{
		Endpoint:  "http://" + addr,
		AccessKey: AccessKey,
		SecretKey: SecretKey,
		Region:    Region,
		Dir:       dir,
		exited:    make(chan struct{}),
		out:       &tailBuffer{max: 8 << 10},
	}
	// Not CommandContext: ctx bounds the start, the process lives until Close.
	s.cmd = exec.Command(binary, "server", filepath.Join(dir, "data"),
		"--address", addr,
		"--console-address", fmt.Sprintf("127.0.0.1:%d", ports[1]),
		"--quiet")
	s.cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+AccessKey,
		"MINIO_ROOT_PASSWORD="+SecretKey,
		"MINIO_REGION="+Region,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	)
	s.cmd.Stdout = s.out
	s.cmd.Stderr = s.out
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	go func() { // owned by the Server: ends when the process exits
		s.cmd.Wait()
		close(s.exited)
	}()
	if err := s.waitLive(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// waitLive polls the liveness endpoint until it answers 200, the process
// exits, or ctx ends.
func (s *Server) waitLive(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.Endpoint+"/minio/health/live", nil)
		if resp, err := client.Do(req); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-s.exited:
			return fmt.Errorf("minio at %s exited before it was live: %s", s.Endpoint, s.out.String())
		case <-ctx.Done():
			return fmt.Errorf("minio at %s not live: %w; output: %s", s.Endpoint, ctx.Err(), s.out.String())
		case <-tick.C:
		}
	}
}

// Close stops the server (SIGTERM, then SIGKILL after 5s) and removes its
// data directory when Launch made it.
func (s *Server) Close() error {
	var err error
	s.once.Do(func() {
		if s.cmd.Process != nil {
			s.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-s.exited:
			case <-time.After(5 * time.Second):
				s.cmd.Process.Kill()
				<-s.exited
			}
		}
		if s.ownDir {
			err = os.RemoveAll(s.Dir)
		}
	})
	return err
}

// Client returns an S3 client for the server with its root credentials.
func (s *Server) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
}

// MakeBucket creates a bucket.
func (s *Server) MakeBucket(ctx context.Context, name string) error {
	_, err := s.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
	if err != nil {
		return fmt.Errorf("create bucket %s at %s: %w", name, s.Endpoint, err)
	}
	return nil
}

// CreateBucket creates a bucket or fails the test.
func (s *Server) CreateBucket(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.MakeBucket(ctx, name); err != nil {
		t.Fatal(err)
	}
}

// Env sets the AWS SDK's environment for the test (credentials, region),
// so that code using the default credential chain reaches this server.
// Like t.Setenv, it cannot be used in parallel tests.
func (s *Server) Env(t testing.TB) {
	t.Helper()
	t.Setenv("AWS_ACCESS_KEY_ID", s.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", s.SecretKey)
	t.Setenv("AWS_REGION", s.Region)
	t.Setenv("AWS_ENDPOINT_URL_S3", s.Endpoint)
}

// freePorts returns n distinct ports free on loopback at the time of the
// call.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("pick a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - b.max; over > 0 {
		b.buf.Next(over)
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.TrimSpace(b.buf.String())
}

// S3Config is the client configuration that reaches the server.
func (s *Server) S3Config() s3store.Config {
	return s3store.Config{Endpoint: s.Endpoint, PathStyle: true, Region: s.Region, AccessKey: s.AccessKey, SecretKey: s.SecretKey}
}
