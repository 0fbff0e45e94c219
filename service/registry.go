package service

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// Registration is a loader's membership in a coordinator's pool: Run
// sends a heartbeat with the loader's load every interval, and Leave turns
// the beats into leaving ones for the drain.
type Registration struct {
	srv         *Server
	coordinator string
	advertise   string
	interval    time.Duration
	log         *slog.Logger
	opts        []grpc.DialOption

	leaving atomic.Bool
	wake    chan struct{} // Leave asks Run for a beat now
	left    chan struct{} // closed once a leaving beat was accepted
	once    sync.Once

	load loadMeter
}

// RegisterConfig says where a loader registers and as what.
type RegisterConfig struct {
	// Coordinator is the coordinator's gRPC address (host:port).
	Coordinator string
	// Advertise is the address trainers reach this loader at; it names
	// the loader in the pool.
	Advertise string
	// Interval between beats. Default 1s; the coordinator drops a loader
	// after its PoolTimeout (default 3s) without one.
	Interval time.Duration
	// DialOptions for the coordinator; default plaintext.
	DialOptions []grpc.DialOption
}

// Register prepares this loader's membership in a coordinator's pool; it
// sends nothing until Run.
func (s *Server) Register(cfg RegisterConfig) (*Registration, error) {
	if cfg.Coordinator == "" || cfg.Advertise == "" {
		return nil, fmt.Errorf("service.RegisterConfig: coordinator %q and advertise %q must both be set", cfg.Coordinator, cfg.Advertise)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultHeartbeatInterval
	}
	if cfg.DialOptions == nil {
		cfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return &Registration{
		srv: s, coordinator: cfg.Coordinator, advertise: cfg.Advertise, interval: cfg.Interval,
		log: s.log, opts: cfg.DialOptions,
		wake: make(chan struct{}, 1), left: make(chan struct{}),
		load: loadMeter{g: s.cfg.Registry, maxStreams: s.cfg.MaxStreams},
	}, nil
}

// Heartbeat backoff after a failed beat: from the interval, doubling, to
// at most maxBackoff, each wait drawn uniformly from [d/2, d] so that
// loaders that lost a coordinator together do not return in step. 4s
// keeps a restarted coordinator's pool whole within about 5s.
const maxBackoff = 4 * time.Second

// Run beats until ctx ends. Failures are logged and retried with backoff
// and jitter: the coordinator may be restarting, and its pool reforms from
// the next beats.
func (r *Registration) Run(ctx context.Context) error {
	conn, err := grpc.NewClient(r.coordinator, r.opts...)
	if err != nil {
		return fmt.Errorf("coordinator %s: %w", r.coordinator, err)
	}
	defer conn.Close()
	c := pb.NewPoolServiceClient(conn)
	wait := time.Duration(0) // the first beat goes at once
	failures := 0
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		case <-r.wake:
		}
		leaving := r.leaving.Load()
		bctx, cancel := context.WithTimeout(ctx, max(r.interval, time.Second))
		resp, err := c.Heartbeat(bctx, &pb.HeartbeatRequest{Address: r.advertise, Load: r.load.sample(time.Now()), Leaving: leaving})
		cancel()
		switch {
		case err != nil && ctx.Err() == nil:
			failures++
			if failures == 1 || failures%30 == 0 {
				r.log.Warn("heartbeat to coordinator failed; retrying", "coordinator", r.coordinator, "failures", failures, "err", err)
			}
			d := min(r.interval<<min(failures, 6), maxBackoff)
			wait = d/2 + rand.N(d/2+1)
		case err == nil:
			if failures > 0 {
				r.log.Info("heartbeat to coordinator resumed", "coordinator", r.coordinator, "after_failures", failures, "pool_loaders", resp.GetPoolLoaders())
			}
			failures = 0
			wait = r.interval
			if ms := resp.GetIntervalMs(); ms > 0 {
				wait = time.Duration(ms) * time.Millisecond
			}
			if leaving {
				r.once.Do(func() { close(r.left) })
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(wait)
	}
}

// Leave marks this loader as leaving: its beats say so from now on, and
// the coordinator assigns it no new ranks. It waits until the coordinator
// accepted a leaving beat, or ctx ends (a coordinator that is down learns
// it from the next beat that gets through, or drops the loader once it
// exits).
func (r *Registration) Leave(ctx context.Context) error {
	r.leaving.Store(true)
	select {
	case r.wake <- struct{}{}:
	default:
	}
	select {
	case <-r.left:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("tell coordinator %s this loader leaves: %w", r.coordinator, ctx.Err())
	}
}

// ServeInPool serves like Serve while reg keeps this loader in its
// coordinator's pool. When ctx ends (SIGTERM) it drains: the health
// service reports NOT_SERVING, a leaving heartbeat tells the coordinator
// to assign this loader no new ranks, it goes on serving for preStop (so
// that load balancers notice), and then Serve's graceful stop lets open
// streams run to their end for up to Config.ShutdownTimeout (clients that
// watch their assignment end theirs at their next step: the leaving beat
// moved their stripes). It returns
// once everything it started has ended; nil after a drain.
func (s *Server) ServeInPool(ctx context.Context, lis, metricsLis net.Listener, reg *Registration, preStop time.Duration) error {
	serveCtx, stopServe := context.WithCancel(context.Background())
	defer stopServe()
	regCtx, stopReg := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopReg()
	wg.Add(1)
	go func() { // ends with regCtx
		defer wg.Done()
		if err := reg.Run(regCtx); err != nil {
			s.log.Error("heartbeats stopped", "err", err)
		}
	}()
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(serveCtx, lis, metricsLis) }() // ends with serveCtx
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	start := time.Now()
	s.log.Info("draining: leaving the pool", "pre_stop", preStop, "drain_timeout", s.cfg.ShutdownTimeout)
	s.Drain()
	lctx, cancel := context.WithTimeout(context.Background(), max(preStop, 2*reg.interval))
	if err := reg.Leave(lctx); err != nil {
		s.log.Warn("draining without the coordinator's word", "err", err)
	}
	cancel()
	pause := time.NewTimer(preStop - time.Since(start))
	defer pause.Stop()
	select {
	case err := <-errc:
		return err
	case <-pause.C:
	}
	stopServe()
	return <-errc
}

// Drain reports NOT_SERVING on the health service, so that load balancers
// and clients checking health stop sending new streams; open streams go
// on until Serve's context ends and its graceful stop.
func (s *Server) Drain() { s.health.Shutdown() }

// loadMeter turns the loader's cumulative metrics, read from its registry
// (what /metrics shows), into the rates a heartbeat carries.
type loadMeter struct {
	g          prometheus.Gatherer
	maxStreams int

	prev     time.Time
	prevSent float64 // shardstream_loader_bytes_sent_total
	prevCPU  float64 // process_cpu_seconds_total, when registered
	prevHit  float64 // cache lookups answered by a cache
	prevLook float64 // memory cache lookups
}

func (m *loadMeter) sample(now time.Time) *pb.LoaderLoad {
	v := gatherValues(m.g)
	hits := v.cache["memory/hit"] + v.cache["disk/hit"]
	looks := v.cache["memory/hit"] + v.cache["memory/miss"]
	l := &pb.LoaderLoad{StreamsOpen: uint32(v.streams), MaxStreams: uint32(m.maxStreams), CpuCores: uint32(runtime.GOMAXPROCS(0))}
	if dt := now.Sub(m.prev).Seconds(); !m.prev.IsZero() && dt > 0 {
		l.BytesPerSecond = max(0, v.sent-m.prevSent) / dt
		l.CpuSecondsPerSecond = max(0, v.cpu-m.prevCPU) / dt
	}
	if looks > m.prevLook {
		l.CacheHitRatio = (hits - m.prevHit) / (looks - m.prevLook)
	} else if looks > 0 {
		l.CacheHitRatio = hits / looks
	}
	m.prev, m.prevSent, m.prevCPU, m.prevHit, m.prevLook = now, v.sent, v.cpu, hits, looks
	return l
}

// loadValues are the metrics a heartbeat's load comes from.
type loadValues struct {
	streams, sent, cpu float64
	cache              map[string]float64 // "cache/result" → lookups
}

func gatherValues(g prometheus.Gatherer) loadValues {
	v := loadValues{cache: make(map[string]float64)}
	mfs, _ := g.Gather() // a partial gather still has the families it could read
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch mf.GetName() {
			case "shardstream_loader_streams_open":
				v.streams = m.GetGauge().GetValue()
			case "shardstream_loader_bytes_sent_total":
				v.sent = m.GetCounter().GetValue()
			case "process_cpu_seconds_total":
				v.cpu = m.GetCounter().GetValue()
			case "shardstream_read_cache_requests_total":
				v.cache[label(m, "cache")+"/"+label(m, "result")] += m.GetCounter().GetValue()
			}
		}
	}
	return v
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
