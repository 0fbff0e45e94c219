package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"sync"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// Server is the coordinator and the loader on one gRPC server, with health,
// metrics, and optionally TLS, authentication and reflection.
type Server struct {
	cfg    Config
	log    *slog.Logger
	grpc   *grpc.Server
	health *health.Server
	plans  *planCache // for tests
}

// New builds a Server from cfg; it serves nothing until Serve.
func New(cfg Config) (*Server, error) {
	return newServer(cfg, samplerPlanner)
}

func newServer(cfg Config, pl planner) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("service metrics: %w", err)
	}
	log := cfg.Logger
	if len(cfg.TokenKeys) > 0 {
		pl = signingPlanner(pl, cfg.TokenKeys)
	}
	c := &core{
		cfg:     &cfg,
		catalog: newCatalog(cfg.Datasets),
		planner: pl,
		plans:   newPlanCache(pl, cfg.PlanCacheSize, cfg.Limits.PlanCacheBytes, make(planSlots, cfg.Limits.MaxConcurrentPlans), m.planCacheMiss.Inc),
		metrics: m,
	}
	sm, err := newGRPCMetrics(&cfg)
	if err != nil {
		return nil, fmt.Errorf("service gRPC metrics: %w", err)
	}
	var authn *authenticator
	if cfg.AuthFile != "" {
		if authn, err = newAuthenticator(cfg.AuthFile, log); err != nil {
			return nil, err
		}
	}

	logger := logging.LoggerFunc(func(ctx context.Context, lvl logging.Level, msg string, fields ...any) {
		log.Log(ctx, slog.Level(lvl), msg, fields...)
	})
	// The request log's fields: the method, the peer's address, the code
	// and the error, and the client's auth-file name; never metadata, so
	// never a token.
	logOpts := []logging.Option{logging.WithLogOnEvents(logging.FinishCall), logging.WithFieldsFromContext(logClientFields)}
	recoverOpts := []recovery.Option{recovery.WithRecoveryHandlerContext(func(ctx context.Context, p any) error {
		log.ErrorContext(ctx, "panic in handler", "panic", p, "stack", string(debug.Stack()))
		return status.Errorf(codes.Internal, "internal error: %v", p)
	})}

	// No grpc.StatsHandler: the loader releases a batch's chunk buffers
	// as soon as Send returns, and a stats handler may read a sent
	// message later. Logging only logs the call's end, not payloads.
	// Recovery runs innermost so the logging interceptor sees the Internal
	// status a panic turns into; authentication runs inside logging, so
	// refused calls are logged, and hands the client's name back to it.
	// The metrics interceptors only count messages: they keep none.
	// ReportProgress is not logged: every rank sends one a second (the
	// client logs its failures, grpc_server_handled_total counts codes).
	logged := selector.MatchFunc(func(_ context.Context, c interceptors.CallMeta) bool {
		return c.FullMethod() != pb.CoordinatorService_ReportProgress_FullMethodName
	})
	unary := []grpc.UnaryServerInterceptor{sm.UnaryServerInterceptor(), withLogClientUnary, selector.UnaryServerInterceptor(logging.UnaryServerInterceptor(logger, logOpts...), logged)}
	streams := []grpc.StreamServerInterceptor{sm.StreamServerInterceptor(), withLogClientStream, logging.StreamServerInterceptor(logger, logOpts...)}
	if authn != nil {
		unary = append(unary, auth.UnaryServerInterceptor(authn.authFunc))
		streams = append(streams, auth.StreamServerInterceptor(authn.authFunc))
	}
	unary = append(unary, recovery.UnaryServerInterceptor(recoverOpts...))
	streams = append(streams, recovery.StreamServerInterceptor(recoverOpts...))
	opts := []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(streams...),
		// Limits.MaxConnStreams: HTTP/2 streams one connection may open.
		grpc.MaxConcurrentStreams(uint32(cfg.Limits.MaxConnStreams)),
		// One batch is one message: allow large ones. Clients must raise
		// their receive limit (default 4 MiB) to the same size.
		grpc.MaxSendMsgSize(cfg.MaxSendMsgSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			// Clients may ping at most every 10s; faster pingers get
			// GOAWAY(too_many_pings). Clients should ping every 30s or more.
			MinTime: 10 * time.Second,
			// Trainers keep channels open between epochs and may ping them
			// to notice a dead loader before they need it.
			PermitWithoutStream: true,
		}),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			// Ping a connection idle for 30s, and close it when the ping
			// is not answered in 10s: a trainer host that vanished must
			// not hold a MaxStreams slot and its read-ahead for long.
			Time:    30 * time.Second,
			Timeout: 10 * time.Second,
			// MaxConnectionIdle and MaxConnectionAge stay infinite: a
			// stream lasts a whole epoch, hours, and must not be cut.
		}),
	}
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	gs := grpc.NewServer(opts...)
	hs, err := registerRole(gs, c, &cfg, m, sm)
	if err != nil {
		return nil, fmt.Errorf("service pool metrics: %w", err)
	}
	if cfg.Reflection {
		reflection.Register(gs)
	}
	return &Server{cfg: cfg, log: log, grpc: gs, health: hs, plans: c.plans}, nil
}

// Serve serves gRPC on lis, and /metrics over HTTP on metricsLis when it is
// not nil, until ctx is cancelled or serving fails. It then reports
// NOT_SERVING on the health service, lets open streams finish for up to
// Config.ShutdownTimeout, and stops the rest by force. It closes both
// listeners and returns once every goroutine it started has ended; nil
// after a stop caused by ctx.
func (s *Server) Serve(ctx context.Context, lis, metricsLis net.Listener) error {
	var wg sync.WaitGroup
	errc := make(chan error, 2)

	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.grpc.Serve(lis); err != nil {
			errc <- fmt.Errorf("serve gRPC on %s: %w", lis.Addr(), err)
		}
	}()
	var hs *http.Server
	if metricsLis != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{}))
		hs = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := hs.Serve(metricsLis); !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serve metrics on %s: %w", metricsLis.Addr(), err)
			}
		}()
	}

	var err error
	select {
	case <-ctx.Done():
		s.log.Info("stopping: waiting for open streams", "timeout", s.cfg.ShutdownTimeout)
	case err = <-errc:
		s.log.Error("stopping", "err", err)
	}
	s.health.Shutdown() // NOT_SERVING: load balancers stop sending new streams
	stopped := make(chan struct{})
	go func() { // ends when GracefulStop returns, which Stop below forces
		s.grpc.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(s.cfg.ShutdownTimeout)
	select {
	case <-stopped:
		timer.Stop()
	case <-timer.C:
		s.log.Warn("shutdown timeout: stopping open streams by force", "timeout", s.cfg.ShutdownTimeout)
		s.grpc.Stop()
		<-stopped
	}
	if hs != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if e := hs.Shutdown(sctx); e != nil {
			hs.Close()
		}
		cancel()
	}
	wg.Wait()
	return err
}
