package service

import (
	"cmp"
	"container/heap"
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// pool is the coordinator's live loader pool: the loaders heard from
// within the timeout. It lives in memory only; a restarted coordinator's
// pool reforms from the loaders' next heartbeats. Silent loaders are
// dropped lazily, whenever the pool is read, so the pool needs no
// goroutine of its own.
type pool struct {
	timeout  time.Duration // missed-beat window: a loader silent this long is dropped
	interval time.Duration // the beat interval loaders are told
	now      func() time.Time
	log      *slog.Logger
	beats    prometheus.Counter
	moves    prometheus.Counter // watched ranks' assignments changed

	mu         sync.Mutex
	started    time.Time          // when the pool was made: see settled
	settled    bool               // the first timeout since started has passed
	members    map[string]*member // by address
	slots      map[slotKey]*slot  // watched ranks' assignments (assign.go)
	watchers   int
	maxWatches int
}

// member is one loader in the pool.
type member struct {
	addr     string
	load     *pb.LoaderLoad
	leaving  bool
	joined   time.Time
	lastBeat time.Time
}

func newPool(timeout, interval time.Duration, maxWatches int, now func() time.Time, log *slog.Logger) *pool {
	return &pool{
		timeout: timeout, interval: interval, now: now, log: log, started: now(),
		members: make(map[string]*member), slots: make(map[slotKey]*slot), maxWatches: maxWatches,
		beats: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardstream_pool_heartbeats_total", Help: "Loader heartbeats the coordinator accepted.",
		}),
		moves: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shardstream_pool_assignment_changes_total", Help: "Watched ranks' assignments changed (stripes moved, added or removed).",
		}),
	}
}

// beat records one heartbeat; it reports the pool's size after it.
func (p *pool) beat(addr string, load *pb.LoaderLoad, leaving bool) int {
	p.beats.Inc()
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked(now)
	m, ok := p.members[addr]
	if !ok {
		m = &member{addr: addr, joined: now}
		p.members[addr] = m
		p.log.Info("pool: loader joined", "loader", addr, "leaving", leaving, "loaders", len(p.members))
	} else if leaving && !m.leaving {
		p.log.Info("pool: loader draining", "loader", addr)
	}
	m.load = proto.Clone(load).(*pb.LoaderLoad)
	if m.load == nil {
		m.load = &pb.LoaderLoad{}
	}
	serves := !ok || m.leaving != leaving // the serving set changed
	m.leaving = leaving
	m.lastBeat = now
	if serves {
		p.rebalanceLocked()
	}
	return len(p.members)
}

// expireLocked drops the loaders silent for the timeout, moving their
// stripes away.
func (p *pool) expireLocked(now time.Time) {
	changed := false
	if !p.settled && now.Sub(p.started) >= p.timeout {
		p.settled, changed = true, true // the held assignments get checked now
	}
	for addr, m := range p.members {
		if now.Sub(m.lastBeat) >= p.timeout {
			delete(p.members, addr)
			changed = true
			p.log.Warn("pool: loader dropped: no heartbeat", "loader", addr, "silent", now.Sub(m.lastBeat).Round(time.Millisecond), "timeout", p.timeout, "loaders", len(p.members))
		}
	}
	if changed {
		p.rebalanceLocked()
	}
}

// snapshot lists the pool sorted by address, with the time it was taken.
func (p *pool) snapshot() ([]member, time.Time) {
	now := p.now()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expireLocked(now)
	out := make([]member, 0, len(p.members))
	for _, m := range p.members {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b member) int { return strings.Compare(a.addr, b.addr) })
	return out, now
}

// assign gives each of world ranks k distinct loaders of the serving
// (not draining) ones, or fewer when fewer serve; it returns nil when none
// does. Each pick takes the least loaded loader, counting the streams it
// reported and one per stripe already given in this call, ties going to
// the smaller address; rank r's K picks are rotated left by r mod K. The result depends only on the snapshot, so ranks
// that ask within one heartbeat interval get the same table.
func (p *pool) assign(world, k int) [][]string {
	ms, _ := p.snapshot()
	var h loadHeap
	for _, m := range ms {
		if !m.leaving {
			h = append(h, loadSlot{addr: m.addr, load: int64(m.load.GetStreamsOpen())})
		}
	}
	if len(h) == 0 {
		return nil
	}
	k = max(1, min(k, len(h)))
	heap.Init(&h)
	out := make([][]string, world)
	picked := make([]loadSlot, 0, k)
	for r := range out {
		picked = picked[:0]
		addrs := make([]string, k)
		for j := range k {
			s := heap.Pop(&h).(loadSlot)
			addrs[j] = s.addr
			s.load++
			picked = append(picked, s)
		}
		for _, s := range picked {
			heap.Push(&h, s)
		}
		// Rotate by rank so that the first address, a client's only one
		// when it streams without stripes, spreads too.
		slices.Reverse(addrs[:r%k])
		slices.Reverse(addrs[r%k:])
		slices.Reverse(addrs)
		out[r] = addrs
	}
	return out
}

// loadSlot is one loader's load while assign hands out stripes.
type loadSlot struct {
	addr string
	load int64
}

// loadHeap is a min-heap of loaders by (load, address).
type loadHeap []loadSlot

func (h loadHeap) Len() int { return len(h) }
func (h loadHeap) Less(i, j int) bool {
	return cmp.Or(cmp.Compare(h[i].load, h[j].load), strings.Compare(h[i].addr, h[j].addr)) < 0
}
func (h loadHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *loadHeap) Push(x any)   { *h = append(*h, x.(loadSlot)) }
func (h *loadHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// Per-loader metric descriptions: the collector below reads them from the
// pool at scrape time, so their label sets are the live pool and a dropped
// loader's series disappear with it.
var (
	poolLoadersDesc = prometheus.NewDesc("shardstream_pool_loaders",
		"Loaders in the coordinator's pool, by state (serving, draining).", []string{"state"}, nil)
	poolStreamsDesc = prometheus.NewDesc("shardstream_pool_loader_streams_open",
		"Streams a pool loader reported open.", []string{"address"}, nil)
	poolBytesDesc = prometheus.NewDesc("shardstream_pool_loader_bytes_per_second",
		"Batch bytes per second a pool loader reported sending.", []string{"address"}, nil)
	poolCPUDesc = prometheus.NewDesc("shardstream_pool_loader_cpu_seconds_per_second",
		"CPU seconds per second a pool loader's process reported using.", []string{"address"}, nil)
	poolCacheDesc = prometheus.NewDesc("shardstream_pool_loader_cache_hit_ratio",
		"Chunk cache hit ratio a pool loader reported.", []string{"address"}, nil)
	poolAgeDesc = prometheus.NewDesc("shardstream_pool_loader_heartbeat_age_seconds",
		"Seconds since a pool loader's last heartbeat.", []string{"address"}, nil)
)

// poolCollector exports the pool's gauges.
type poolCollector struct{ p *pool }

func (c poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolLoadersDesc, poolStreamsDesc, poolBytesDesc, poolCPUDesc, poolCacheDesc, poolAgeDesc} {
		ch <- d
	}
}

func (c poolCollector) Collect(ch chan<- prometheus.Metric) {
	ms, now := c.p.snapshot()
	var serving, draining float64
	for _, m := range ms {
		if m.leaving {
			draining++
		} else {
			serving++
		}
		l := m.load
		ch <- prometheus.MustNewConstMetric(poolStreamsDesc, prometheus.GaugeValue, float64(l.GetStreamsOpen()), m.addr)
		ch <- prometheus.MustNewConstMetric(poolBytesDesc, prometheus.GaugeValue, l.GetBytesPerSecond(), m.addr)
		ch <- prometheus.MustNewConstMetric(poolCPUDesc, prometheus.GaugeValue, l.GetCpuSecondsPerSecond(), m.addr)
		ch <- prometheus.MustNewConstMetric(poolCacheDesc, prometheus.GaugeValue, l.GetCacheHitRatio(), m.addr)
		ch <- prometheus.MustNewConstMetric(poolAgeDesc, prometheus.GaugeValue, now.Sub(m.lastBeat).Seconds(), m.addr)
	}
	ch <- prometheus.MustNewConstMetric(poolLoadersDesc, prometheus.GaugeValue, serving, "serving")
	ch <- prometheus.MustNewConstMetric(poolLoadersDesc, prometheus.GaugeValue, draining, "draining")
}

// maxAddrLen bounds HeartbeatRequest.address: a host:port is far shorter,
// and the address becomes a metric label.
const maxAddrLen = 256

// poolService implements PoolService on the coordinator.
type poolService struct {
	pb.UnimplementedPoolServiceServer
	p *pool
}

func (s *poolService) Heartbeat(ctx context.Context, req *pb.HeartbeatRequest) (*pb.HeartbeatResponse, error) {
	// With an auth file, only a client allowed every dataset may add a
	// loader: trainers would be sent to whatever address it names.
	if c := clientFrom(ctx); c != nil && !c.All {
		return nil, status.Errorf(codes.PermissionDenied, "pool: client %q may not join loaders to the pool: its auth-file line must allow every dataset (*)", c.Name)
	}
	addr := req.GetAddress()
	if addr == "" || len(addr) > maxAddrLen {
		return nil, status.Errorf(codes.InvalidArgument, "address: %q, want host:port of at most %d bytes", addr, maxAddrLen)
	}
	n := s.p.beat(addr, req.GetLoad(), req.GetLeaving())
	return &pb.HeartbeatResponse{PoolLoaders: uint32(n), IntervalMs: uint32(s.p.interval.Milliseconds())}, nil
}

func (s *poolService) ListLoaders(ctx context.Context, req *pb.ListLoadersRequest) (*pb.ListLoadersResponse, error) {
	ms, now := s.p.snapshot()
	resp := &pb.ListLoadersResponse{TimeoutMs: uint32(s.p.timeout.Milliseconds())}
	for _, m := range ms {
		resp.Loaders = append(resp.Loaders, &pb.PoolLoader{
			Address:       m.addr,
			Load:          m.load,
			Leaving:       m.leaving,
			LastBeatAgeMs: uint32(now.Sub(m.lastBeat).Milliseconds()),
			JoinedAgeMs:   uint64(now.Sub(m.joined).Milliseconds()),
		})
	}
	return resp, nil
}
