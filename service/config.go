package service

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/sampler"
	"github.com/shardstream/shardstream/worker"
)

// ChunkReader is what the loader needs from the read path: one decoded
// chunk of one shard, and how many bytes getting it read from the store
// (0 when a cache had it). *worker.Reader implements it; it must be safe
// for concurrent use.
type ChunkReader interface {
	Fetch(ctx context.Context, shard, chunk int) (*worker.Chunk, int64, error)
}

// Dataset is one served dataset.
type Dataset struct {
	// Name is how JobSpec.dataset names it; a server with one dataset also
	// answers to the empty name.
	Name string
	// Manifest is the dataset's index; it must not change while served.
	Manifest *manifest.Manifest
	// Chunks reads the dataset's shards.
	Chunks ChunkReader
}

// Config configures a Server. Zero values mean the documented defaults.
type Config struct {
	// Datasets served; at least one, names unique.
	Datasets []Dataset

	// LoaderAddrs are the loader addresses PlanEpoch hands out, assigned
	// to ranks round-robin. Empty: every rank streams from this server
	// (the embedded default).
	LoaderAddrs []string

	// DefaultWindow is the shuffle window, in chunks, for a JobSpec whose
	// window is 0. Default sampler.DefaultWindow (8): the smallest window
	// whose shuffle quality is at least that of the old 4-shard window
	// (docs/planner.md), while a stream holds about 2×8 chunks.
	DefaultWindow int

	// ChunkMemoryBytes bounds the decoded chunks that open streams hold
	// for their coming steps, over the whole server. Each stream reserves
	// its need when it opens — (k·W + 1) × the dataset's largest chunk,
	// with W the job's window and k the windows one step can touch (2 for
	// any batch smaller than a window) — and a stream whose need does not
	// fit is refused with ResourceExhausted naming this bound. Default
	// 4 GiB: about 30 streams of 8 MiB chunks at the default window.
	ChunkMemoryBytes int64

	// ReadaheadSteps is how many steps past the one being sent a stream
	// fetches ahead. Default 8: enough to hide a few slow GETs, while a
	// stream holds at most ReadaheadSteps+2 steps of chunks.
	ReadaheadSteps int

	// FetchConcurrency bounds the chunk reads in flight per stream.
	// Default 16; the read path bounds its own GETs on top of this.
	FetchConcurrency int

	// MaxStreams bounds the StreamBatches calls served at once; more are
	// refused with ResourceExhausted. Default 256. Memory is about
	// MaxStreams × (ReadaheadSteps+2) × batch bytes plus the reader caches.
	MaxStreams int

	// PlanCacheSize is how many epoch plans the loader keeps (an LRU keyed
	// by JobSpec): computing one costs O(shards). Default 64.
	PlanCacheSize int

	// MaxSendMsgSize is the largest message, in bytes, the server sends:
	// one batch must fit. Default 256 MiB. Clients must raise their
	// maximum receive size (gRPC's default is 4 MiB) to match.
	MaxSendMsgSize int

	// MaxWorldSize and MaxBatchSize bound a JobSpec. Defaults 1<<16 ranks
	// and 1<<20 samples.
	MaxWorldSize int
	MaxBatchSize int

	// ShutdownTimeout is how long Serve waits for streams to finish after
	// its context is cancelled before it stops them by force. Default 20s,
	// inside Kubernetes' default 30s termination grace period.
	ShutdownTimeout time.Duration

	// TLS, when not nil, serves gRPC over TLS with it; NewTLSConfig makes
	// one that reloads rotated files and, with a client CA, requires
	// client certificates. Nil: plaintext, for loopback and trusted
	// networks (the embedded default).
	TLS *tls.Config

	// Reflection registers the gRPC reflection service (grpcurl, grpcui).
	// Off by default: it describes the API to anyone who can connect.
	Reflection bool

	// AuthFile, when set, is the file of client tokens (see ParseAuthFile),
	// read again when it changes. Every call but health checks must then
	// carry "authorization: Bearer TOKEN" of a listed client, and may read
	// only the datasets listed for it. Empty: no authentication.
	AuthFile string

	// TokenKeys, when not empty, sign the resume tokens the server emits
	// (HMAC-SHA256 with TokenKeys[0]) and make it refuse tokens not signed
	// by one of them, so a client cannot forge or alter one. Coordinator
	// and loaders must share them. Empty: tokens are not signed.
	TokenKeys [][]byte

	// Limits on what one request may cost, checked before any work; see
	// docs/security.md. Zero values mean the defaults.
	Limits Limits

	// SendBytesPerSecond, when above 0, limits the batch bytes this
	// server sends per second, over all its streams together (a token
	// bucket waited on before each batch is sent). A test and benchmark
	// knob — it makes a loader a fixed-rate bottleneck (shardstream-bench
	// fanin) — not a production setting; no flag sets it. 0: no limit.
	SendBytesPerSecond int64

	sendBucket *sendBucket // SendBytesPerSecond's bucket, made by validate

	// Role says which services this server runs: both (RoleAll, the
	// embedded default), the coordinator with the live loader pool, or a
	// loader.
	Role Role

	// PoolTimeout is the coordinator's missed-beat window: a loader that
	// sent no heartbeat for this long is dropped from the pool. Default
	// 3s: three missed beats at the loaders' 1s interval, so one slow beat
	// never drops a loader, and a dead one stops getting ranks within a
	// few seconds. Only RoleCoordinator uses it.
	PoolTimeout time.Duration

	// HeartbeatInterval is how often loaders beat, as the coordinator
	// tells them. Default 1s.
	HeartbeatInterval time.Duration

	// MaxWatches bounds the WatchAssignment streams a coordinator serves
	// at once (each is a rank, or a DataLoader worker of one, and holds a
	// goroutine and a few hundred bytes); more are refused with
	// ResourceExhausted. Default 4096. Only RoleCoordinator uses it.
	MaxWatches int

	// MaxJobs bounds the jobs whose progress reports the server keeps
	// (ReportProgress), and MaxJobReporters the reporting (rank, worker)
	// pairs over all of them; a report past either is refused with
	// ResourceExhausted. Defaults 256 and 65536 (a few MiB).
	MaxJobs         int
	MaxJobReporters int

	// JobExpiry is how long a job is kept after its last report; its
	// gauges then disappear. Default 1m.
	JobExpiry time.Duration

	// Logger receives request logs and errors. Default: discard.
	Logger *slog.Logger

	// Registry receives the metrics and is served at /metrics. Default: a
	// new registry.
	Registry *prometheus.Registry
}

// Defaults, as documented on Config.
const (
	DefaultWindow            = sampler.DefaultWindow
	DefaultReadaheadSteps    = 8
	DefaultFetchConcurrency  = 16
	DefaultMaxStreams        = 256
	DefaultPlanCacheSize     = 64
	DefaultMaxSendMsgSize    = 256 << 20
	DefaultMaxWorldSize      = 1 << 16
	DefaultMaxBatchSize      = 1 << 20
	DefaultShutdownTimeout   = 20 * time.Second
	DefaultChunkMemoryBytes  = 4 << 30
	DefaultPoolTimeout       = 3 * time.Second
	DefaultHeartbeatInterval = time.Second
	DefaultMaxWatches        = 4096
	DefaultMaxJobs           = 256
	DefaultMaxJobReporters   = 1 << 16
	DefaultJobExpiry         = time.Minute
)

// Role is what a Server serves.
type Role int

const (
	// RoleAll is the coordinator and the loader in one server (shardstream
	// serve): PlanEpoch hands out Config.LoaderAddrs, or this server.
	RoleAll Role = iota
	// RoleCoordinator plans epochs and keeps the live loader pool
	// (PoolService); PlanEpoch hands out pool loaders. Its LoaderService
	// refuses with FailedPrecondition.
	RoleCoordinator
	// RoleLoader streams batches; it joins a coordinator's pool with
	// Server.Register.
	RoleLoader
)

func (r Role) String() string {
	switch r {
	case RoleAll:
		return "all"
	case RoleCoordinator:
		return "coordinator"
	case RoleLoader:
		return "loader"
	}
	return fmt.Sprintf("Role(%d)", int(r))
}

// validate rejects bad combinations and fills defaults. Every error names
// the field: "service.Config.ReadaheadSteps: -1, want >= 0".
func (c *Config) validate() error {
	if len(c.Datasets) == 0 {
		return errors.New("service.Config.Datasets: empty, want at least one")
	}
	seen := make(map[string]bool, len(c.Datasets))
	for i, d := range c.Datasets {
		switch {
		case d.Manifest == nil:
			return fmt.Errorf("service.Config.Datasets[%d].Manifest: nil (dataset %q)", i, d.Name)
		case d.Chunks == nil:
			return fmt.Errorf("service.Config.Datasets[%d].Chunks: nil (dataset %q), want a chunk reader", i, d.Name)
		case seen[d.Name]:
			return fmt.Errorf("service.Config.Datasets[%d].Name: %q, given twice", i, d.Name)
		}
		seen[d.Name] = true
	}
	for i, a := range c.LoaderAddrs {
		if a == "" {
			return fmt.Errorf("service.Config.LoaderAddrs[%d]: empty, want an address", i)
		}
	}
	type intField struct {
		name string
		p    *int
		def  int
		max  int // 0: none
	}
	for _, f := range []intField{
		{"DefaultWindow", &c.DefaultWindow, DefaultWindow, 0},
		{"ReadaheadSteps", &c.ReadaheadSteps, DefaultReadaheadSteps, 0},
		{"FetchConcurrency", &c.FetchConcurrency, DefaultFetchConcurrency, 0},
		{"MaxStreams", &c.MaxStreams, DefaultMaxStreams, 0},
		{"PlanCacheSize", &c.PlanCacheSize, DefaultPlanCacheSize, 0},
		{"MaxSendMsgSize", &c.MaxSendMsgSize, DefaultMaxSendMsgSize, 0},
		{"MaxWorldSize", &c.MaxWorldSize, DefaultMaxWorldSize, sampler.MaxWorldSize},
		{"MaxBatchSize", &c.MaxBatchSize, DefaultMaxBatchSize, sampler.MaxBatchSize},
		{"MaxWatches", &c.MaxWatches, DefaultMaxWatches, 0},
		{"MaxJobs", &c.MaxJobs, DefaultMaxJobs, 0},
		{"MaxJobReporters", &c.MaxJobReporters, DefaultMaxJobReporters, 0},
	} {
		if *f.p < 0 {
			return fmt.Errorf("service.Config.%s: %d, want >= 0", f.name, *f.p)
		}
		if *f.p == 0 {
			*f.p = f.def
		}
		if f.max > 0 && *f.p > f.max {
			return fmt.Errorf("service.Config.%s: %d, want <= %d (the planner's limit)", f.name, *f.p, f.max)
		}
	}
	if c.ChunkMemoryBytes < 0 {
		return fmt.Errorf("service.Config.ChunkMemoryBytes: %d, want >= 0", c.ChunkMemoryBytes)
	}
	if c.ChunkMemoryBytes == 0 {
		c.ChunkMemoryBytes = DefaultChunkMemoryBytes
	}
	if c.ShutdownTimeout < 0 {
		return fmt.Errorf("service.Config.ShutdownTimeout: %v, want >= 0", c.ShutdownTimeout)
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if err := c.Limits.validate(c.MaxStreams); err != nil {
		return err
	}
	for i, k := range c.TokenKeys {
		if len(k) < minTokenKeyLen {
			return fmt.Errorf("service.Config.TokenKeys[%d]: %d bytes, want at least %d", i, len(k), minTokenKeyLen)
		}
	}
	if c.SendBytesPerSecond < 0 {
		return fmt.Errorf("service.Config.SendBytesPerSecond: %d, want >= 0", c.SendBytesPerSecond)
	}
	c.sendBucket = newSendBucket(c.SendBytesPerSecond)
	if c.Role < RoleAll || c.Role > RoleLoader {
		return fmt.Errorf("service.Config.Role: %v, want RoleAll, RoleCoordinator or RoleLoader", c.Role)
	}
	if c.Role == RoleCoordinator && len(c.LoaderAddrs) > 0 {
		return errors.New("service.Config.LoaderAddrs: set with RoleCoordinator, whose loaders come from the pool")
	}
	for _, d := range []struct {
		name string
		p    *time.Duration
		def  time.Duration
	}{
		{"PoolTimeout", &c.PoolTimeout, DefaultPoolTimeout},
		{"HeartbeatInterval", &c.HeartbeatInterval, DefaultHeartbeatInterval},
		{"JobExpiry", &c.JobExpiry, DefaultJobExpiry},
	} {
		if *d.p < 0 {
			return fmt.Errorf("service.Config.%s: %v, want >= 0", d.name, *d.p)
		}
		if *d.p == 0 {
			*d.p = d.def
		}
	}
	if c.PoolTimeout < c.HeartbeatInterval {
		return fmt.Errorf("service.Config.PoolTimeout: %v, shorter than HeartbeatInterval %v: every loader would be dropped between beats", c.PoolTimeout, c.HeartbeatInterval)
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	return nil
}
