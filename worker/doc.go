// Package worker is the loader's read path: it turns (shard, chunk) into
// decoded samples, for the loader server to shuffle, batch and stream.
//
// It is not a PyTorch DataLoader worker. To every torch user "worker"
// means one of the processes a torch.utils.data.DataLoader forks, which
// the Python client runs in. In Go code and proto fields that meaning is
// always spelled out ("DataLoader worker" in comments, DataLoaderWorker
// or dataloader_worker in names); the bare word "worker" means this
// package only.
//
// A Reader opens one dataset (a local directory or s3://bucket/prefix),
// reads its manifest, and serves Chunk calls from many goroutines at once:
//
//	r, err := worker.Open(ctx, "s3://bucket/ds", worker.Config{}, log)
//	...
//	defer r.Close()
//	c, err := r.Chunk(ctx, shard, chunk) // c.Samples start at c.FirstSample
//	...
//	c.Release() // done with c.Samples: the buffer may be reused
//
// Chunk fetches the chunk's byte range with parallel ranged GETs of
// Config.PartSize, at most Config.Concurrency in flight over the whole
// Reader, retrying throttling, server errors, resets and short reads with
// exponential backoff and jitter; checks once per shard that the object
// still has the manifest's size and ETag; then decodes the bytes with the
// wds package (plain or zstd-compressed WebDataset tar). Decoded chunks
// are kept in a bounded LRU memory cache and concurrent callers of one
// chunk share one fetch; with Config.CacheDir, fetched bytes also go to a
// bounded, checksummed disk cache.
//
// A chunk's samples live in one buffer taken from a pool bounded by
// Config.BufferPoolBytes. Callers Release a chunk when done with it (the
// loader does once a batch is sent), and the buffer returns to the pool
// when its last holder, the memory cache included, lets go.
//
// # Errors
//
// Every error of Open and Chunk is a *Error naming the shard,
// its path and the byte offset, with a Kind the service maps to a gRPC
// code:
//
//	NotFound     the object, bucket or root is missing
//	Corrupt      the bytes do not decode, or the manifest does not parse
//	Changed      the object's size or ETag differs from the manifest's
//	Unavailable  throttling or failures outlasted the retries
//	Canceled     the caller's context ended
//	Other        anything else (permissions, bad arguments)
//
// Errors are returned, and logged only where they are retried.
//
// # Metrics
//
// With Config.Registerer set, a Reader registers (names prefixed
// shardstream_read_):
//
//	bytes_total                      counter: bytes fetched from the store
//	get_seconds                      histogram: one ranged GET attempt
//	retries_total                    counter: GET attempts retried
//	cache_requests_total{cache,result} counter: memory/disk cache hit/miss (disk also "corrupt")
//	errors_total{kind}               counter: Chunk errors by kind
//	inflight_bytes                   gauge: fetch buffers held
//	buffers_total{source}            counter: chunk buffers reused from the pool or newly allocated
//	buffer_bytes                     gauge: chunk buffers in use (fetching, or held by unreleased chunks)
//	buffer_pool_bytes                gauge: idle chunk buffers kept for reuse
package worker
