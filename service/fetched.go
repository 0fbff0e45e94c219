package service

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// maxTrackedEpochs bounds the job epochs epochFetches keeps series for: a
// loader serves a few jobs at a time, and an old epoch's figure is final.
const maxTrackedEpochs = 32

// epochKey is one epoch of one job, as far as store traffic goes: ranks and
// world sizes of the same (dataset, seed, epoch) read the same plan.
type epochKey struct {
	dataset     string
	seed, epoch uint64
}

// epochFetches counts the bytes streams read from the store, per dataset
// and per job epoch, and exports each epoch's total with its ratio to the
// dataset's stored size: about 1 when every chunk is read once per epoch
// (on one loader; a job spread over loaders adds up their figures).
type epochFetches struct {
	total *prometheus.CounterVec // by dataset, for rates

	mu     sync.Mutex
	counts map[epochKey]*epochCount
	order  []epochKey // oldest first

	bytesDesc, ratioDesc *prometheus.Desc
}

type epochCount struct{ fetched, datasetBytes int64 }

func newEpochFetches() *epochFetches {
	labels := []string{"dataset", "seed", "epoch"}
	return &epochFetches{
		total: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shardstream_loader_store_bytes_total", Help: "Bytes the loader's streams read from the store (cache hits excluded), by dataset.",
		}, []string{"dataset"}),
		counts: make(map[epochKey]*epochCount),
		bytesDesc: prometheus.NewDesc("shardstream_epoch_store_bytes",
			"Bytes this loader's streams read from the store for one job epoch (the last 32 epochs).", labels, nil),
		ratioDesc: prometheus.NewDesc("shardstream_epoch_store_bytes_ratio",
			"shardstream_epoch_store_bytes over the dataset's stored bytes: about 1 when each chunk is read once per epoch.", labels, nil),
	}
}

// add counts n bytes read from the store for j.
func (e *epochFetches) add(j *job, n int64) {
	if n == 0 {
		return
	}
	e.total.WithLabelValues(j.ds.name).Add(float64(n))
	k := epochKey{j.ds.name, j.key.seed, j.key.epoch}
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.counts[k]
	if c == nil {
		c = &epochCount{datasetBytes: j.ds.bytes}
		e.counts[k] = c
		e.order = append(e.order, k)
		if len(e.order) > maxTrackedEpochs {
			delete(e.counts, e.order[0])
			e.order = e.order[1:]
		}
	}
	c.fetched += n
}

// Describe implements prometheus.Collector.
func (e *epochFetches) Describe(ch chan<- *prometheus.Desc) {
	e.total.Describe(ch)
	ch <- e.bytesDesc
	ch <- e.ratioDesc
}

// Collect implements prometheus.Collector.
func (e *epochFetches) Collect(ch chan<- prometheus.Metric) {
	e.total.Collect(ch)
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, k := range e.order {
		c := e.counts[k]
		lv := []string{k.dataset, strconv.FormatUint(k.seed, 10), strconv.FormatUint(k.epoch, 10)}
		ch <- prometheus.MustNewConstMetric(e.bytesDesc, prometheus.CounterValue, float64(c.fetched), lv...)
		if c.datasetBytes > 0 {
			ch <- prometheus.MustNewConstMetric(e.ratioDesc, prometheus.GaugeValue, float64(c.fetched)/float64(c.datasetBytes), lv...)
		}
	}
}
