package service

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the service's Prometheus metrics, listed in the package doc.
type metrics struct {
	streamsOpen   prometheus.Gauge
	streamsTotal  *prometheus.CounterVec
	batchesSent   prometheus.Counter
	samplesSent   prometheus.Counter
	bytesSent     prometheus.Counter
	stepWait      prometheus.Histogram
	stepSend      prometheus.Histogram
	chunkFetch    prometheus.Histogram
	plansTotal    *prometheus.CounterVec
	planCacheMiss prometheus.Counter

	chunkMemLimit, chunkMemReserved, chunkMemHeld prometheus.Gauge
	streamChunkPeak                               prometheus.Histogram
	fetched                                       *epochFetches
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	// Latency buckets from 100µs to ~26s: a step is ready in microseconds
	// when read-ahead keeps up and takes seconds when storage stalls.
	buckets := prometheus.ExponentialBuckets(1e-4, 4, 10)
	m := &metrics{
		fetched: newEpochFetches(),
		chunkMemLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardstream_loader_chunk_memory_limit_bytes", Help: "Config.ChunkMemoryBytes (--chunk-memory): decoded chunk bytes open streams may hold.",
		}),
		chunkMemReserved: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardstream_loader_chunk_memory_reserved_bytes", Help: "Chunk memory reserved by open streams (each its need at open).",
		}),
		streamChunkPeak: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "shardstream_loader_stream_chunk_peak_bytes", Help: "The most decoded chunk bytes one stream held at once, observed when it ends.",
			Buckets: prometheus.ExponentialBuckets(1<<20, 2, 14), // 1 MiB to 8 GiB
		}),
		chunkMemHeld: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardstream_loader_chunk_memory_held_bytes", Help: "Decoded bytes of chunks open streams hold for their coming steps.",
		}),
		streamsOpen: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardstream_loader_streams_open", Help: "StreamBatches calls being served.",
		}),
		streamsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardstream_loader_streams_total", Help: "StreamBatches calls ended, by gRPC status code.",
		}, []string{"code"}),
		batchesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardstream_loader_batches_sent_total", Help: "Batches sent.",
		}),
		samplesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardstream_loader_samples_sent_total", Help: "Samples sent.",
		}),
		bytesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardstream_loader_bytes_sent_total", Help: "Encoded batch bytes sent.",
		}),
		stepWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "shardstream_loader_step_wait_seconds", Help: "Time a stream waited for a step's chunks (read-ahead underrun).", Buckets: buckets,
		}),
		stepSend: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "shardstream_loader_step_send_seconds", Help: "Time Send blocked on one batch (client backpressure).", Buckets: buckets,
		}),
		chunkFetch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "shardstream_loader_chunk_fetch_seconds", Help: "Time to get one decoded chunk from the read path.", Buckets: buckets,
		}),
		plansTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardstream_coordinator_plans_total", Help: "PlanEpoch calls, by gRPC status code.",
		}, []string{"code"}),
		planCacheMiss: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardstream_plan_cache_misses_total", Help: "Epoch plans computed (not found in the plan cache).",
		}),
	}
	for _, c := range []prometheus.Collector{
		m.streamsOpen, m.streamsTotal, m.batchesSent, m.samplesSent, m.bytesSent,
		m.stepWait, m.stepSend, m.chunkFetch, m.plansTotal, m.planCacheMiss,
		m.chunkMemLimit, m.chunkMemReserved, m.chunkMemHeld, m.streamChunkPeak, m.fetched,
	} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
