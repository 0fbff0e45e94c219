package worker

import (
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardstream/shardstream/store"
	"github.com/shardstream/shardstream/store/s3store"
)

// Config configures a Reader. Zero values mean the documented defaults.
type Config struct {
	// S3 configures the client for s3:// URIs. Its MaxConns defaults to
	// Concurrency + 8: a connection per GET slot, plus room for Stat calls.
	S3 s3store.Config

	// Store, when set, is read instead of opening the uri (which then
	// only names the dataset in errors). For tests and embedding.
	Store store.Store

	// PartSize is the size in bytes of one ranged GET. Default 8 MiB: on
	// S3 a GET's first byte costs tens of milliseconds, so parts must be
	// large enough to amortise it, and small enough that a chunk splits
	// into several parts fetched in parallel (AWS's guidance is 8–16 MiB).
	PartSize int64
	// Concurrency bounds the ranged GETs in flight over the whole Reader,
	// whatever the number of callers. Default 16: on loopback MinIO
	// throughput flattens past 8–16; one S3 connection gives about
	// 80–100 MB/s, so 16 reach ~1.5 GB/s, more than a loader's few
	// cores decompress.
	Concurrency int
	// MaxAttempts is how many times one part is tried before the read
	// fails Unavailable. Default 6: with RetryBase 100ms and doubling,
	// about 6 s of backoff at most, enough to ride out S3 throttling
	// bursts while a stuck read still fails in seconds, not minutes.
	MaxAttempts int
	// RetryBase is the first backoff ceiling; each retry doubles it, up
	// to RetryMax, and sleeps a random duration between half of it and
	// all of it (jitter, so throttled readers do not retry in lockstep).
	// Defaults 100ms and 5s.
	RetryBase, RetryMax time.Duration
	// PartTimeout bounds one GET attempt, first byte to last. Default 30s:
	// an 8 MiB part takes ~0.1s at S3's per-connection speed; a part
	// stuck for 30s is a dead connection worth a retry on a fresh one.
	PartTimeout time.Duration
	// FetchBufferBytes bounds the bytes held in fetch buffers (chunks being
	// downloaded and not yet decoded) over the whole Reader. Default
	// 512 MiB. A chunk larger than this takes the whole budget.
	FetchBufferBytes int64
	// BufferPoolBytes bounds the idle chunk buffers kept for reuse after
	// their chunks are released (Chunk.Release) or evicted. Default
	// 256 MiB: the buffers of Concurrency chunks of 8–16 MiB in flight,
	// so a steady stream allocates almost nothing; negative keeps none.
	BufferPoolBytes int64

	// MemoryCacheBytes bounds the decoded chunks kept in memory (LRU, by
	// decoded size). Default 1 GiB: a loader's shuffle window of a few
	// shards; negative disables the cache (concurrent callers still share
	// one fetch).
	MemoryCacheBytes int64
	// CacheDir, when set, keeps fetched chunk bytes (as stored: zstd
	// chunks stay compressed) on local disk, checksummed, so a later
	// epoch reads them from disk instead of the store.
	CacheDir string
	// CacheBytes bounds CacheDir (LRU by access). Default 10 GiB.
	CacheBytes int64

	// MaxManifestBytes bounds the manifest read. Default 1 GiB (a manifest
	// of millions of shards is hundreds of MiB).
	MaxManifestBytes int64

	// Registerer receives the Reader's metrics; nil registers none.
	// Readers sharing one Registerer share the collectors.
	Registerer prometheus.Registerer
}

func (c *Config) validate() error {
	// BufferPoolBytes and MemoryCacheBytes may be negative: "keep none".
	for _, f := range []struct {
		name     string
		value    any
		negative bool
	}{
		{"PartSize", c.PartSize, c.PartSize < 0},
		{"Concurrency", c.Concurrency, c.Concurrency < 0},
		{"MaxAttempts", c.MaxAttempts, c.MaxAttempts < 0},
		{"RetryBase", c.RetryBase, c.RetryBase < 0},
		{"RetryMax", c.RetryMax, c.RetryMax < 0},
		{"PartTimeout", c.PartTimeout, c.PartTimeout < 0},
		{"FetchBufferBytes", c.FetchBufferBytes, c.FetchBufferBytes < 0},
		{"CacheBytes", c.CacheBytes, c.CacheBytes < 0},
		{"MaxManifestBytes", c.MaxManifestBytes, c.MaxManifestBytes < 0},
	} {
		if f.negative {
			return fmt.Errorf("worker: Config.%s %v, want >= 0", f.name, f.value)
		}
	}
	def := func(v *int64, d int64) {
		if *v == 0 {
			*v = d
		}
	}
	def(&c.PartSize, 8<<20)
	def(&c.FetchBufferBytes, 512<<20)
	def(&c.BufferPoolBytes, 256<<20)
	def(&c.MemoryCacheBytes, 1<<30)
	def(&c.CacheBytes, 10<<30)
	def(&c.MaxManifestBytes, 1<<30)
	if c.Concurrency == 0 {
		c.Concurrency = 16
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 6
	}
	if c.RetryBase == 0 {
		c.RetryBase = 100 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 5 * time.Second
	}
	if c.RetryMax < c.RetryBase {
		return fmt.Errorf("worker: RetryMax %v < RetryBase %v", c.RetryMax, c.RetryBase)
	}
	if c.PartTimeout == 0 {
		c.PartTimeout = 30 * time.Second
	}
	return nil
}

func (c *Config) s3Config() s3store.Config {
	s3 := c.S3
	if s3.MaxConns == 0 {
		s3.MaxConns = c.Concurrency + 8
	}
	return s3
}
