package service

import (
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// chunkMemory is the server's Config.ChunkMemoryBytes: the decoded chunk
// bytes streams may hold for their coming steps. A stream reserves its
// need when it opens and gives it back when it ends, so the streams that
// run always fit; held is what they hold now, for the metrics.
type chunkMemory struct {
	limit int64

	mu       sync.Mutex
	reserved int64
	streams  int

	reservedGauge, heldGauge prometheus.Gauge
}

func newChunkMemory(limit int64, m *metrics) *chunkMemory {
	m.chunkMemLimit.Set(float64(limit))
	return &chunkMemory{limit: limit, reservedGauge: m.chunkMemReserved, heldGauge: m.chunkMemHeld}
}

// reserve takes n bytes for one stream, or says with ResourceExhausted why
// it cannot: what the stream needs and which flag bounds it.
func (c *chunkMemory) reserve(n int64, why string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n > c.limit {
		return status.Errorf(codes.ResourceExhausted,
			"loader: this stream needs %d bytes of chunks (%s), more than the loader's whole chunk memory of %d bytes (--chunk-memory); raise --chunk-memory or lower job.window",
			n, why, c.limit)
	}
	if c.reserved+n > c.limit {
		return status.Errorf(codes.ResourceExhausted,
			"loader: this stream needs %d bytes of chunks (%s), and %d open streams hold %d of the loader's %d (--chunk-memory); retry, use another loader, or raise --chunk-memory",
			n, why, c.streams, c.reserved, c.limit)
	}
	c.reserved += n
	c.streams++
	c.reservedGauge.Set(float64(c.reserved))
	return nil
}

// unreserve gives back a stream's reservation.
func (c *chunkMemory) unreserve(n int64) {
	c.mu.Lock()
	c.reserved -= n
	c.streams--
	c.reservedGauge.Set(float64(c.reserved))
	c.mu.Unlock()
}

func (c *chunkMemory) hold(n int64)   { c.heldGauge.Add(float64(n)) }
func (c *chunkMemory) unhold(n int64) { c.heldGauge.Sub(float64(n)) }

// streamNeed is the chunk memory one stream of job j reserves: the chunks
// of the windows one step and the read-ahead touch. A window holds W
// units, and at least W·m samples where m is the smallest non-empty
// unit's sample count, so one step of B samples touches at most
// k = ⌈(B−1)/(W·m)⌉ + 1 windows; the stream holds at most k·W chunks plus
// the one being fetched past them, each at most the largest chunk.
func streamNeed(ds *dataset, window, batch int) (int64, string) {
	w := int64(window)
	k := int64(2)
	if m := ds.minUnitSamples; m > 0 {
		k = (int64(batch)-1+w*m-1)/(w*m) + 1
	}
	chunks := min(k*w, int64(len(ds.units))) + 1
	return chunks * ds.maxChunk, fmt.Sprintf("%d chunks of up to %d bytes for window %d and batch %d", chunks, ds.maxChunk, window, batch)
}
