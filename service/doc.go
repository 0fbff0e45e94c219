// Package service is shardstream's gRPC servers: the coordinator, which
// describes the served datasets and plans epochs, and the loader, which
// streams one rank's batches from any step of an epoch. Both are stateless
// about jobs: a request carries the whole JobSpec, so a restarted
// coordinator or any loader answers exactly as the one before it did.
//
// A Server assembles both services on one gRPC server with health checking
// (grpc.health.v1), reflection, keepalive enforcement, slog request logging,
// panic recovery and Prometheus metrics:
//
//	srv, err := service.New(service.Config{
//		Datasets: []service.Dataset{{Name: "default", Manifest: r.Manifest(), Chunks: r}},
//		Logger:   log,
//	})
//	...
//	err = srv.Serve(ctx, lis, metricsLis) // until ctx is cancelled, then a graceful stop
//
// # Roles and the loader pool
//
// Config.Role picks the services: RoleAll (serve: both, its plans name
// Config.LoaderAddrs or itself), RoleCoordinator (plans and the live pool,
// PoolService; StreamBatches refused with FailedPrecondition) or
// RoleLoader (batches; Server.Register and Registration.Run heartbeat its
// load to a coordinator, and Server.ServeInPool drains on ctx's end:
// NOT_SERVING, a leaving beat, a pre-stop pause, then the graceful stop).
// The pool is memory only; a loader silent for Config.PoolTimeout is
// dropped. PlanEpoch gives each rank min(max_loaders_per_rank, serving
// loaders) of them, least loaded first (see pool.assign).
//
// WatchAssignment streams one rank's stripe loaders from the coordinator's
// assignment table (assign.go): sticky, rebalanced when a loader joins,
// drains or is dropped, moving only what balance needs; PlanEpoch names
// the table's loaders for a watched rank. ReportProgress keeps each job's
// recent progress reports (progress.go, bounded by Config.MaxJobs and
// MaxJobReporters), exported as the shardstream_job_* gauges, ListJobs and
// the autoscaling signal shardstream_loaders_desired.
//
// # Loader pipeline
//
// StreamBatches reads ahead: up to Config.ReadaheadSteps steps past the one
// being sent have their chunks fetched, at most Config.FetchConcurrency
// chunk reads at a time per stream. A chunk is fetched once, at its first
// use in the rank's stream, and released after its last (the plan's
// LastUse), so an epoch reads each chunk once per rank that uses it.
// Batches are assembled and sent in step order, and a step's error (a chunk
// that cannot be read, a sample the plan names that the manifest lacks)
// ends the stream when that step's turn comes, after every step before it
// was sent. A client that reads slowly blocks Send, which stops the
// read-ahead once its bounded queue is full.
//
// Memory: when a stream opens it reserves, from Config.ChunkMemoryBytes,
// the chunk bytes its job needs — (k·W + 1) × the largest chunk, W the
// window and k the windows one step touches — or is refused with
// ResourceExhausted; its read-ahead stops at the reservation. A stream's
// memory is bounded by that plus (ReadaheadSteps+2) batches, whatever the
// dataset or shard size.
//
// # Errors
//
// Errors become gRPC status codes only here, at the boundary:
//
//	InvalidArgument     bad JobSpec (world_size, batch_size, rank, steps, stride), malformed resume token;
//	                    a bad WatchAssignment or ReportProgress field (the message names it)
//	Unavailable         PlanEpoch on a coordinator whose pool has no serving loader
//	Unimplemented       WatchAssignment on a server without a pool (serve, a loader)
//	FailedPrecondition  StreamBatches on a coordinator;
//	                    resume token of another dataset or job (the message names the field),
//	                    or of version 1 (shard windows); a shard that changed under the manifest
//	NotFound            unknown dataset; a shard object that is missing
//	OutOfRange          from_step past the end of the epoch
//	DataLoss            a corrupt shard or chunk (the message names shard path and offset)
//	Unavailable         storage unavailable after the read path's retries
//	ResourceExhausted   more than Config.MaxStreams streams open; a stream whose chunk memory
//	                    does not fit Config.ChunkMemoryBytes (the message names --chunk-memory);
//	                    watches past Config.MaxWatches; reports of jobs past Config.MaxJobs
//	Canceled, DeadlineExceeded  the client's context
//
// # Metrics
//
//	shardstream_loader_streams_open              gauge    streams being served
//	shardstream_loader_streams_total{code}       counter  streams ended, by gRPC status code
//	shardstream_loader_batches_sent_total        counter  batches sent
//	shardstream_loader_samples_sent_total        counter  samples sent
//	shardstream_loader_bytes_sent_total          counter  encoded batch bytes sent
//	shardstream_loader_step_wait_seconds         histogram time a stream waited for a step's chunks (read-ahead underrun)
//	shardstream_loader_step_send_seconds         histogram time Send blocked (client backpressure)
//	shardstream_loader_chunk_fetch_seconds       histogram time to get one decoded chunk from the read path
//	shardstream_coordinator_plans_total{code}    counter  PlanEpoch calls, by gRPC status code
//	shardstream_plan_cache_misses_total          counter  plans computed (not found in the plan cache)
//	shardstream_loader_chunk_memory_limit_bytes  gauge    Config.ChunkMemoryBytes
//	shardstream_loader_chunk_memory_reserved_bytes gauge  chunk memory reserved by open streams
//	shardstream_loader_chunk_memory_held_bytes   gauge    decoded chunk bytes open streams hold
//	shardstream_loader_stream_chunk_peak_bytes   histogram the most chunk bytes one stream held
//	shardstream_loader_store_bytes_total{dataset} counter bytes streams read from the store
//	shardstream_epoch_store_bytes{dataset,seed,epoch}       counter one job epoch's store bytes (last 32)
//	shardstream_epoch_store_bytes_ratio{dataset,seed,epoch} gauge   the same over the dataset's bytes
//	shardstream_pool_loaders{state}              gauge    coordinator: pool loaders, serving or draining
//	shardstream_pool_heartbeats_total            counter  coordinator: heartbeats accepted
//	shardstream_pool_loader_*{address}           gauge    coordinator: each pool loader's reported load
//	                                                      (streams_open, bytes_per_second, cpu_seconds_per_second,
//	                                                      cache_hit_ratio) and heartbeat_age_seconds
//	shardstream_pool_watches_open                gauge    coordinator: WatchAssignment streams open
//	shardstream_pool_assignment_changes_total    counter  coordinator: watched ranks' assignments changed
//	shardstream_job_samples_per_second{job}      gauge    samples/s a job's ranks consumed (progress reports)
//	shardstream_job_bytes_per_second{job}        gauge    field bytes/s a job's ranks consumed
//	shardstream_job_data_wait_ratio{job}         gauge    share of the ranks' time spent waiting for data
//	shardstream_loaders_desired                  gauge    coordinator: the autoscaling signal (docs/operations.md)
//	grpc_server_*                                         go-grpc-middleware's per-method, per-code metrics
package service

// Layout, for maintainers:
//
//	server.go       Server: the gRPC server, interceptors, health, Serve and graceful stop
//	config.go       Config and Dataset, validate (defaults; every error names its field)
//	coordinator.go  core (what both services share) and coordinator: GetDataset, PlanEpoch
//	loader.go       loader: StreamBatches admission (MaxStreams, chunk memory), request validation, readChunk
//	stream.go       rankStream: one stream's producer (plans steps and chunk lifetimes, starts
//	                bounded fetches, queues pendingSteps) and consumer (waits, assembles, sends, releases)
//	chunkmem.go     chunkMemory: Config.ChunkMemoryBytes reserved per stream; streamNeed
//	fetched.go      epochFetches: store bytes per dataset and job epoch
//	catalog.go      catalog and dataset: the served datasets by name
//	resolve.go      resolve: JobSpec to job (defaults, limits, resume token), planKey
//	plancache.go    planCache: an LRU of plans, each computed once
//	planner.go      planner and epochPlan: the seam to the sampler; planStatus
//	errors.go       readCode: read-path error kinds to gRPC codes
//	metrics.go      metrics: the Prometheus metrics listed above
//	role.go         registerRole: the services of each Role; the gRPC metrics interceptors
//	pool.go         pool (the coordinator's live loaders, assign), poolService, the pool's collector
//	assign.go       the watched ranks' assignment table: placement, rebalancing, watch/unwatch
//	watch.go        WatchAssignment
//	progress.go     jobs (progress reports), ReportProgress, ListJobs, loadersDesired, their gauges
//	registry.go     Registration (a loader's heartbeats, backoff), ServeInPool (drain), loadMeter
//
// Tests: servicetest_test.go holds the fakes (fakeReader, seqPlan),
// startServer and the stream helpers (collect, streamAll, recvEach);
// release_test.go runs the real read path to check chunk buffers return;
// lifetime_test.go checks chunks are read once and memory reservations.
