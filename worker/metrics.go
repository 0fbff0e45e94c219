package worker

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	bytes     prometheus.Counter
	getTime   prometheus.Histogram
	retries   prometheus.Counter
	cacheReqs *prometheus.CounterVec
	errs      *prometheus.CounterVec
	inflight  prometheus.Gauge
	buffers   *prometheus.CounterVec
	bufInUse  prometheus.Gauge
	bufIdle   prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardstream_read_bytes_total", Help: "Bytes fetched from the store."}),
		getTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "shardstream_read_get_seconds", Help: "Duration of one ranged GET attempt, request to last byte.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 16)}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardstream_read_retries_total", Help: "Ranged GET attempts retried after a transient error."}),
		cacheReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardstream_read_cache_requests_total", Help: "Chunk cache lookups by cache (memory, disk) and result (hit, miss, corrupt)."},
			[]string{"cache", "result"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardstream_read_errors_total", Help: "Chunk and open errors by kind."}, []string{"kind"}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardstream_read_inflight_bytes", Help: "Bytes held in fetch buffers."}),
		buffers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardstream_read_buffers_total", Help: "Chunk buffers taken, by source: pool (reused) or new (allocated)."},
			[]string{"source"}),
		bufInUse: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardstream_read_buffer_bytes", Help: "Bytes of chunk buffers in use: being fetched, or holding samples of chunks not yet released by callers or the memory cache."}),
		bufIdle: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shardstream_read_buffer_pool_bytes", Help: "Bytes of idle chunk buffers kept for reuse (bounded by BufferPoolBytes)."}),
	}
	if reg != nil {
		m.bytes = register(reg, m.bytes)
		m.getTime = register(reg, m.getTime)
		m.retries = register(reg, m.retries)
		m.cacheReqs = register(reg, m.cacheReqs)
		m.errs = register(reg, m.errs)
		m.inflight = register(reg, m.inflight)
		m.buffers = register(reg, m.buffers)
		m.bufInUse = register(reg, m.bufInUse)
		m.bufIdle = register(reg, m.bufIdle)
	}
	return m
}

// register registers c, or returns the collector already registered under
// its name, so several Readers can share one Registerer.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		// A name clash with a different type is a programming error of
		// the caller's registry; count into the unregistered collector.
	}
	return c
}
