package worker

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"

	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store"
	"github.com/shardstream/shardstream/store/storeuri"
	"github.com/shardstream/shardstream/wds"
)

// Field is one named part of a sample ("jpg", "cls", …).
type Field = wds.Field

// Sample is one decoded training example: its key and its fields in tar
// order.
type Sample = wds.Sample

// Reader reads decoded chunks of one dataset. Safe for concurrent use.
type Reader struct {
	uri   string
	cfg   Config
	log   *slog.Logger
	store store.Store
	man   *manifest.Manifest
	m     *metrics

	gets    *weighted // GET slots
	buffers *weighted // fetch buffer bytes
	cache   *chunkCache
	pool    *bufPool
	disk    *diskCache // nil without CacheDir
	dec     wds.Decoder

	checkMu sync.Mutex
	checked map[int]bool // shards whose object matched the manifest
}

// Open opens the dataset at uri (a local directory, file://, or
// s3://bucket/prefix) and reads its manifest. Missing paths, buckets and
// unparsable manifests are errors naming the uri. log may be nil.
func Open(ctx context.Context, uri string, cfg Config, log *slog.Logger) (*Reader, error) {
	if err := cfg.validate(); err != nil {
		return nil, &Error{Shard: -1, Path: uri, Op: "open", Kind: Other, Err: err}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st := cfg.Store
	if st == nil {
		var err error
		if st, err = storeuri.Open(ctx, uri, cfg.s3Config()); err != nil {
			kind := Other
			if errors.Is(err, store.ErrNotFound) {
				kind = NotFound
			}
			return nil, &Error{Shard: -1, Path: uri, Op: "open", Kind: kind, Err: err}
		}
	}
	m := newMetrics(cfg.Registerer)
	r := &Reader{
		uri:     uri,
		cfg:     cfg,
		log:     log.With("dataset", uri),
		store:   st,
		m:       m,
		pool:    newBufPool(cfg.BufferPoolBytes, m.bufInUse, m.bufIdle),
		gets:    newWeighted(int64(cfg.Concurrency)),
		buffers: newWeighted(cfg.FetchBufferBytes),
		cache:   newChunkCache(cfg.MemoryCacheBytes),
		checked: make(map[int]bool),
	}
	if cfg.CacheDir != "" {
		d, err := openDiskCache(cfg.CacheDir, cfg.CacheBytes)
		if err != nil {
			return nil, &Error{Shard: -1, Path: uri, Op: "open", Kind: Other, Err: err}
		}
		r.disk = d
	}
	man, err := r.readManifest(ctx)
	if err != nil {
		r.m.errs.WithLabelValues(KindOf(err).String()).Inc()
		return nil, err
	}
	r.man = man
	return r, nil
}

func (r *Reader) readManifest(ctx context.Context) (*manifest.Manifest, error) {
	var data []byte
	err := r.retry(ctx, nil, -1, r.uri, 0, "open", func(ctx context.Context) error {
		rc, err := r.store.ReadRange(ctx, manifest.FileName, 0, -1)
		if err != nil {
			return err
		}
		defer rc.Close()
		data, err = io.ReadAll(io.LimitReader(rc, r.cfg.MaxManifestBytes+1))
		return err
	})
	if err != nil {
		var e *Error
		if errors.As(err, &e) {
			e.Err = fmt.Errorf("%s: %w", manifest.FileName, e.Err)
		}
		return nil, err
	}
	if int64(len(data)) > r.cfg.MaxManifestBytes {
		return nil, &Error{Shard: -1, Path: r.uri, Op: "open", Kind: Corrupt,
			Err: fmt.Errorf("%s: larger than MaxManifestBytes %d", manifest.FileName, r.cfg.MaxManifestBytes)}
	}
	m, err := manifest.Parse(data)
	if err != nil {
		return nil, &Error{Shard: -1, Path: r.uri, Op: "open", Kind: Corrupt, Err: fmt.Errorf("%s: %w", manifest.FileName, err)}
	}
	return m, nil
}

// Manifest is the dataset's manifest. Read-only.
func (r *Reader) Manifest() *manifest.Manifest { return r.man }

// Chunk returns chunk c of shard s, decoded; errors are *Error naming
// shard and offset. The result is shared: do not modify it. Release it
// when done, so its buffer can be reused (see Chunk).
func (r *Reader) Chunk(ctx context.Context, s, c int) (*Chunk, error) {
	ch, _, err := r.Fetch(ctx, s, c)
	return ch, err
}

// Fetch is Chunk that also says how many bytes this call read from the
// store: the chunk's stored size when this call fetched it, 0 when it came
// from the memory or disk cache or from another caller's fetch. Callers
// add it up to account for what a job costs in store traffic.
func (r *Reader) Fetch(ctx context.Context, s, c int) (*Chunk, int64, error) {
	if s < 0 || s >= len(r.man.Shards) || c < 0 || c >= len(r.man.Shards[s].Chunks) {
		err := &Error{Shard: s, Op: "chunk", Kind: Other, Err: fmt.Errorf("no chunk %d of shard %d in a manifest of %d shards", c, s, len(r.man.Shards))}
		if s >= 0 && s < len(r.man.Shards) {
			err.Path = r.man.Shards[s].Path
		}
		r.m.errs.WithLabelValues(err.Kind.String()).Inc()
		return nil, 0, err
	}
	var stored int64 // written by the load, which runs in this goroutine if at all
	ch, hit, err := r.cache.get(ctx, chunkKey{s, c}, func(ctx context.Context) (*Chunk, int64, error) {
		ch, size, n, err := r.load(ctx, s, c)
		stored = n
		return ch, size, err
	})
	if hit {
		r.m.cacheReqs.WithLabelValues("memory", "hit").Inc()
	} else {
		r.m.cacheReqs.WithLabelValues("memory", "miss").Inc()
	}
	if err != nil {
		sh := &r.man.Shards[s]
		var e *Error
		if !errors.As(err, &e) { // the caller's context ended while waiting
			err = &Error{Shard: s, Path: sh.Path, Offset: sh.Chunks[c].Offset, Op: "chunk", Kind: Canceled, Err: err}
		}
		r.m.errs.WithLabelValues(KindOf(err).String()).Inc()
		return nil, stored, err
	}
	return ch, stored, nil
}

// load fetches and decodes one chunk; it returns the chunk, its decoded
// size for the cache and the bytes it read from the store.
func (r *Reader) load(ctx context.Context, s, c int) (_ *Chunk, size, stored int64, _ error) {
	sh := &r.man.Shards[s]
	mc := sh.Chunks[c]
	if err := r.checkShard(ctx, s); err != nil {
		return nil, 0, 0, err
	}
	held, err := r.buffers.acquire(ctx, mc.Size)
	if err != nil {
		return nil, 0, 0, &Error{Shard: s, Path: sh.Path, Offset: mc.Offset, Op: "read", Kind: Canceled, Err: err}
	}
	r.m.inflight.Add(float64(held))
	defer func() {
		r.buffers.release(held)
		r.m.inflight.Sub(float64(held))
	}()
	buf := r.buffer(int(mc.Size))
	fromStore, err := r.fetchChunk(ctx, s, c, buf)
	if err != nil {
		r.pool.put(buf)
		return nil, 0, 0, err
	}
	if fromStore {
		stored = mc.Size
	}
	samples, owner, err := r.decode(buf, sh.Compression, mc)
	if err == nil && int64(len(samples)) != mc.Samples {
		err = fmt.Errorf("decoded %d samples, manifest says %d", len(samples), mc.Samples)
	}
	if err != nil {
		r.pool.put(owner)
		return nil, 0, stored, &Error{Shard: s, Path: sh.Path, Offset: mc.Offset, Op: "decode", Kind: Corrupt, Err: err}
	}
	size = max(int64(cap(owner)), mc.RawSize)
	for _, smp := range samples { // bookkeeping the byte slices do not show
		size += int64(64 + len(smp.Key) + 40*len(smp.Fields))
	}
	return newChunk(mc.FirstSample, samples, owner, r.pool), size, stored, nil
}

// buffer takes a buffer of n bytes from the pool, counting where it came
// from.
func (r *Reader) buffer(n int) []byte {
	b, reused := r.pool.get(n)
	if reused {
		r.m.buffers.WithLabelValues("pool").Inc()
	} else {
		r.m.buffers.WithLabelValues("new").Inc()
	}
	return b
}

// decode turns a chunk's stored bytes (raw, a pool buffer) into samples and
// returns the pool buffer their bytes alias: raw itself for plain tar; for
// zstd, a second pool buffer of the manifest's RawSize (wds.Decode bounds
// the output by it), raw going back to the pool at once. On error the
// caller puts owner back.
func (r *Reader) decode(raw []byte, compression string, mc manifest.Chunk) (samples []Sample, owner []byte, err error) {
	if compression != manifest.CompressionZstd {
		samples, err = r.dec.Decode(nil, raw, compression, mc)
		return samples, raw, err
	}
	var dst []byte
	if mc.RawSize <= wds.DefaultMaxRawSize {
		dst = r.buffer(int(mc.RawSize)) // larger: Decode fails before using it
	}
	samples, err = r.dec.Decode(dst, raw, compression, mc)
	r.pool.put(raw)
	return samples, dst, err
}

// fetchChunk fills buf with the chunk's stored bytes, from the disk cache
// or the store; fromStore says it went to the store.
func (r *Reader) fetchChunk(ctx context.Context, s, c int, buf []byte) (fromStore bool, err error) {
	sh := &r.man.Shards[s]
	mc := sh.Chunks[c]
	var key string
	if r.disk != nil {
		key = diskKey(sh, mc)
		hit, corrupt := r.disk.get(key, buf)
		switch {
		case hit:
			r.m.cacheReqs.WithLabelValues("disk", "hit").Inc()
			return false, nil
		case corrupt:
			r.m.cacheReqs.WithLabelValues("disk", "corrupt").Inc()
			r.log.Warn("disk cache entry corrupt; fetching again", "shard", s, "path", sh.Path, "offset", mc.Offset)
		default:
			r.m.cacheReqs.WithLabelValues("disk", "miss").Inc()
		}
	}
	if err := r.fetchRange(ctx, s, sh.Path, mc.Offset, buf); err != nil {
		return true, err
	}
	if r.disk != nil {
		if err := r.disk.put(key, buf); err != nil {
			r.log.Warn("disk cache write", "err", err)
		}
	}
	return true, nil
}

// diskKey names a chunk's bytes by everything that identifies them, so a
// rewritten object (new ETag or size) never hits an old entry.
func diskKey(sh *manifest.Shard, mc manifest.Chunk) string {
	h := sha256.New()
	for _, s := range []string{sh.Path, sh.ETag, strconv.FormatInt(sh.Size, 10), strconv.FormatInt(mc.Offset, 10), strconv.FormatInt(mc.Size, 10)} {
		io.WriteString(h, s)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// checkShard compares the object's size and ETag with the manifest's, once
// per shard (per Reader): a mismatch means the object changed under the
// manifest, and its bytes must not be decoded as if it had not.
func (r *Reader) checkShard(ctx context.Context, s int) error {
	r.checkMu.Lock()
	ok := r.checked[s]
	r.checkMu.Unlock()
	if ok {
		return nil
	}
	sh := &r.man.Shards[s]
	var info store.Info
	err := r.retry(ctx, r.gets, s, sh.Path, 0, "stat", func(ctx context.Context) error {
		var err error
		info, err = r.store.Stat(ctx, sh.Path)
		return err
	})
	if err != nil {
		return err
	}
	switch {
	case info.Size != sh.Size:
		return &Error{Shard: s, Path: sh.Path, Op: "stat", Kind: Changed,
			Err: fmt.Errorf("%w: size %d, manifest says %d", ErrChanged, info.Size, sh.Size)}
	case sh.ETag != "" && info.ETag != "" && info.ETag != sh.ETag:
		return &Error{Shard: s, Path: sh.Path, Op: "stat", Kind: Changed,
			Err: fmt.Errorf("%w: ETag %s, manifest says %s", ErrChanged, info.ETag, sh.ETag)}
	}
	r.checkMu.Lock()
	r.checked[s] = true
	r.checkMu.Unlock()
	return nil
}

// Close drops the memory cache's chunks. Chunk calls in flight finish
// normally; the disk cache stays on disk. The Reader starts no goroutine
// that outlives a Chunk call, so there is nothing to stop.
func (r *Reader) Close() error {
	r.cache.clear()
	// r.dec stays usable: Chunk calls in flight may still decode, and a
	// zstd decoder used only through DecodeAll holds no goroutines.
	return nil
}
