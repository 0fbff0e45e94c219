package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/shardstream/shardstream/internal/cli"
	"github.com/shardstream/shardstream/service"
	"github.com/shardstream/shardstream/worker"
)

// serveFlags are the flags of `shardstream serve`.
type serveFlags struct {
	data            string
	listen          string
	metricsAddr     string
	name            string
	loaderAddrs     string
	s3              s3Flags
	cacheDir        string
	cacheSize       string
	memoryCache     string
	fetchBuffers    string
	bufferPool      string
	chunkMemory     string
	window          int
	readahead       int
	maxStreams      int
	logFormat       string
	openTimeout     time.Duration
	shutdownTimeout time.Duration
	security        securityFlags
}

func (f *serveFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.data, "data", "", "dataset root: a local directory or s3://bucket/prefix (required)")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:7070", "gRPC listen address (host:port; port 0 picks a free one)")
	fs.StringVar(&f.metricsAddr, "metrics-addr", "", "serve Prometheus /metrics over HTTP on this address (empty: off)")
	fs.StringVar(&f.name, "name", "default", "dataset name clients use (an empty JobSpec.dataset also finds it)")
	fs.StringVar(&f.loaderAddrs, "loader-addrs", "", "comma-separated loader addresses PlanEpoch hands to ranks round-robin (empty: this server)")
	f.s3.register(fs)
	fs.StringVar(&f.cacheDir, "cache-dir", "", "directory for the read path's on-disk chunk cache (empty: memory only)")
	fs.StringVar(&f.cacheSize, "cache-size", "", "chunk cache size, e.g. 512MiB or 20GiB (empty: the read path's default)")
	fs.StringVar(&f.memoryCache, "memory-cache-size", "", "decoded chunks kept in memory, e.g. 4GiB; 0 turns the cache off (empty: 1GiB)")
	fs.StringVar(&f.fetchBuffers, "fetch-buffer-size", "", "bytes of chunks being downloaded at once, e.g. 1GiB (empty: 512MiB)")
	fs.StringVar(&f.bufferPool, "buffer-pool-size", "", "idle chunk buffers kept for reuse, e.g. 512MiB; 0 keeps none (empty: 256MiB)")
	fs.StringVar(&f.chunkMemory, "chunk-memory", "", "decoded chunks all streams together may hold for their coming steps, e.g. 8GiB; each stream reserves about 2 windows of chunks when it opens (empty: 4GiB)")
	fs.IntVar(&f.window, "window", service.DefaultWindow, "default shuffle window in chunks (manifest chunks of about 8 MiB), for jobs that give none")
	fs.IntVar(&f.readahead, "readahead", service.DefaultReadaheadSteps, "steps each stream reads ahead of the one it sends")
	fs.IntVar(&f.maxStreams, "max-streams", service.DefaultMaxStreams, "most streams served at once; more are refused with RESOURCE_EXHAUSTED")
	fs.StringVar(&f.logFormat, "log-format", "text", "log format on stderr: text or json")
	fs.DurationVar(&f.openTimeout, "open-timeout", time.Minute, "how long opening the dataset (listing, reading the manifest) may take")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", service.DefaultShutdownTimeout, "on SIGTERM, how long open streams may run before they are cut")
	f.security.register(fs)
}

// serveConfig is serve's command line, checked and turned into the
// values the server is built from.
type serveConfig struct {
	serveFlags
	log         *slog.Logger
	loaderAddrs []string      // nil: this server
	read        worker.Config // the read path's, without its Registerer
	chunkMemory int64         // service.Config.ChunkMemoryBytes; 0: its default
	sec         security      // TLS, auth, token keys, reflection, limits
	role        service.Role  // RoleAll for serve; see coordinator.go, loader.go
	// poolTimeout is service.Config.PoolTimeout (coordinator); run, when
	// set, serves srv instead of srv.Serve (loader: registration, drain).
	poolTimeout time.Duration
	run         func(ctx context.Context, srv *service.Server, lis, mlis net.Listener) error
	// maxWatches and maxJobs are service.Config.MaxWatches and MaxJobs
	// (coordinator flags); 0 is the default.
	maxWatches, maxJobs int
}

// runServe serves one dataset with the coordinator and the loader in one
// process. It opens the dataset first and fails with an error naming it
// when it cannot; once serving it prints "listening on ADDR" on stdout, and
// it stops gracefully when ctx ends (SIGINT, SIGTERM).
func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseServe(args, stderr)
	if err != nil {
		return err
	}
	return serve(ctx, c, stdout)
}

// parseServe parses and checks serve's flags; every error is a usage
// error.
func parseServe(args []string, stderr io.Writer) (serveConfig, error) {
	return parseServeAs("serve", args, stderr, nil)
}

// parseServeAs parses the flags serve shares with the coordinator and
// loader commands (name), and extra's own.
func parseServeAs(name string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (serveConfig, error) {
	var c serveConfig
	f := &c.serveFlags
	fs := newFlagSet(name, stderr)
	f.register(fs)
	if extra != nil {
		extra(fs)
	}
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	if f.data == "" {
		return c, cli.Usage(name + ": --data is required")
	}
	sec, err := f.security.parse(fs, f.listen)
	if err != nil {
		return c, err
	}
	c.sec = sec
	switch f.logFormat {
	case "text":
		c.log = slog.New(slog.NewTextHandler(stderr, nil))
	case "json":
		c.log = slog.New(slog.NewJSONHandler(stderr, nil))
	default:
		return c, cli.Usage(fmt.Sprintf("%s: --log-format %q, want text or json", name, f.logFormat))
	}
	if f.window < 1 || f.readahead < 1 || f.maxStreams < 1 || f.openTimeout <= 0 || f.shutdownTimeout <= 0 {
		return c, cli.Usage(name + ": --window, --readahead, --max-streams, --open-timeout and --shutdown-timeout must be positive")
	}
	if f.loaderAddrs != "" {
		for _, a := range strings.Split(f.loaderAddrs, ",") {
			if a = strings.TrimSpace(a); a == "" {
				return c, cli.Usage(fmt.Sprintf("serve: --loader-addrs %q has an empty address", f.loaderAddrs))
			}
			c.loaderAddrs = append(c.loaderAddrs, a)
		}
	}
	c.read = worker.Config{S3: f.s3.config()}
	if err := setCache(&c.read, f.cacheDir, f.cacheSize); err != nil {
		return c, err
	}
	if err := setMemory(&c.read, f.memoryCache, f.fetchBuffers, f.bufferPool); err != nil {
		return c, err
	}
	if f.chunkMemory != "" {
		n, err := parseSize(f.chunkMemory)
		if err != nil || n == 0 {
			return c, cli.Usage(fmt.Sprintf("serve: --chunk-memory %q: want a positive size like 8GiB", f.chunkMemory))
		}
		c.chunkMemory = n
	}
	return c, nil
}

// serve opens the dataset, starts listening and serves until ctx ends;
// service.Server.Serve owns the graceful stop.
func serve(ctx context.Context, c serveConfig, stdout io.Writer) error {
	// One registry for the read path, the service and the process: all
	// served on --metrics-addr.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	c.read.Registerer = reg
	r, err := openDataset(ctx, c.data, c.read, c.openTimeout, c.log)
	if err != nil {
		return err
	}
	defer r.Close()
	m := r.Manifest()

	tlsConfig, err := c.sec.tlsConfig(c.log)
	if err != nil {
		return err
	}
	srv, err := service.New(service.Config{
		TLS:              tlsConfig,
		Reflection:       c.sec.reflection,
		AuthFile:         c.sec.authFile,
		TokenKeys:        c.sec.tokenKeys,
		Limits:           c.sec.limits,
		MaxWorldSize:     c.sec.maxWorldSize,
		MaxBatchSize:     c.sec.maxBatchSize,
		MaxSendMsgSize:   c.sec.maxMessageSize,
		Datasets:         []service.Dataset{{Name: c.name, Manifest: m, Chunks: r}},
		LoaderAddrs:      c.loaderAddrs,
		DefaultWindow:    c.window,
		ChunkMemoryBytes: c.chunkMemory,
		ReadaheadSteps:   c.readahead,
		MaxStreams:       c.maxStreams,
		ShutdownTimeout:  c.shutdownTimeout,
		Role:             c.role,
		PoolTimeout:      c.poolTimeout,
		MaxWatches:       c.maxWatches,
		MaxJobs:          c.maxJobs,
		Logger:           c.log,
		Registry:         reg,
	})
	if err != nil {
		return err
	}
	lis, mlis, err := listen(c.listen, c.metricsAddr)
	if err != nil {
		return err
	}
	c.log.Info("serving", "role", c.role, "dataset", c.name, "data", c.data, "fingerprint", m.Fingerprint(),
		"shards", len(m.Shards), "samples", m.TotalSamples(), "addr", lis.Addr().String(), "metrics", metricsAddr(mlis),
		"tls", tlsConfig != nil, "mtls", c.sec.files.ClientCA != "", "auth", c.sec.authFile != "", "signed_tokens", len(c.sec.tokenKeys) > 0, "reflection", c.sec.reflection)
	if _, err := fmt.Fprintf(stdout, "listening on %s\n", lis.Addr()); err != nil {
		lis.Close()
		if mlis != nil {
			mlis.Close()
		}
		return err
	}
	if c.run != nil {
		return c.run(ctx, srv, lis, mlis)
	}
	return srv.Serve(ctx, lis, mlis)
}

// openDataset opens the read path on uri, giving up after timeout with an
// error that names the flag to raise.
func openDataset(ctx context.Context, uri string, cfg worker.Config, timeout time.Duration, log *slog.Logger) (*worker.Reader, error) {
	octx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	r, err := worker.Open(octx, uri, cfg, log)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, fmt.Errorf("open dataset %s: no answer in %v (--open-timeout): %w", uri, timeout, err)
		}
		return nil, err // the read path's errors name the uri
	}
	return r, nil
}

// listen opens the gRPC listener and, when metrics is set, the metrics
// one (nil otherwise).
func listen(addr, metrics string) (lis, mlis net.Listener, err error) {
	if lis, err = net.Listen("tcp", addr); err != nil {
		return nil, nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	if metrics != "" {
		if mlis, err = net.Listen("tcp", metrics); err != nil {
			lis.Close()
			return nil, nil, fmt.Errorf("listen for metrics on %s: %w", metrics, err)
		}
	}
	return lis, mlis, nil
}

// setCache applies --cache-dir and --cache-size to the read path's config.
func setCache(cfg *worker.Config, dir, size string) error {
	if size != "" {
		n, err := parseSize(size)
		if err != nil {
			return cli.Usage(fmt.Sprintf("serve: --cache-size: %v", err))
		}
		if dir == "" {
			return cli.Usage("serve: --cache-size needs --cache-dir")
		}
		cfg.CacheBytes = n
	}
	cfg.CacheDir = dir
	return nil
}

// setMemory applies the read path's memory bounds. In the flags 0 means
// "none" where the read path allows it; in worker.Config that is a
// negative value, 0 being "the default".
func setMemory(cfg *worker.Config, memoryCache, fetchBuffers, bufferPool string) error {
	for _, b := range []struct {
		flag, value string
		dst         *int64
		zeroOK      bool
	}{
		{"--memory-cache-size", memoryCache, &cfg.MemoryCacheBytes, true},
		{"--fetch-buffer-size", fetchBuffers, &cfg.FetchBufferBytes, false},
		{"--buffer-pool-size", bufferPool, &cfg.BufferPoolBytes, true},
	} {
		if b.value == "" {
			continue
		}
		n, err := parseSize(b.value)
		switch {
		case err != nil:
			return cli.Usage(fmt.Sprintf("serve: %s: %v", b.flag, err))
		case n == 0 && !b.zeroOK:
			return cli.Usage(fmt.Sprintf("serve: %s must be positive", b.flag))
		case n == 0:
			n = -1
		}
		*b.dst = n
	}
	return nil
}

// metricsAddr is the metrics listener's address for logs; "" when off.
func metricsAddr(l net.Listener) string {
	if l == nil {
		return ""
	}
	return l.Addr().String()
}
