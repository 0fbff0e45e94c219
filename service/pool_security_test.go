package service

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/shardstream/shardstream/internal/leaktest"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// bearerCreds sends "authorization: Bearer TOKEN" with every call, over TLS.
type bearerCreds string

func (b bearerCreds) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearerCreds) RequireTransportSecurity() bool { return true }

// Loader ↔ coordinator traffic takes the same TLS, mutual TLS and tokens as
// trainers': a loader with the client certificate and a token allowed every
// dataset joins the pool; a token limited to some datasets may not add
// loaders (PermissionDenied), and a plaintext loader is refused at the
// handshake.
func TestPoolOverTLSAndAuth(t *testing.T) {
	leaktest.Check(t)
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	tc, err := NewTLSConfig(tlsFiles(t, t.TempDir(), serverCA, clientCA), nil)
	if err != nil {
		t.Fatal(err)
	}
	const ops, trainer = "ops-secret-token", "trainer-secret-token"
	authFile := filepath.Join(t.TempDir(), "auth")
	writeFile(t, authFile, []byte(fmt.Sprintf("ops %s *\ntrainer %s default\n", tokenHash(ops), tokenHash(trainer))))

	r := &fakeReader{m: testManifest(4, 10, 5)}
	cfg := testConfig(r)
	cfg.Role = RoleCoordinator
	cfg.PoolTimeout, cfg.HeartbeatInterval = testPoolTimeout, testBeat
	cfg.TLS, cfg.AuthFile = tc, authFile
	coord := startServer(t, cfg, fakePlanner, grpc.WithTransportCredentials(clientTLS(t, serverCA, clientCA)), grpc.WithPerRPCCredentials(bearerCreds(ops)))
	ctx := testCtx(t)

	lcfg := testConfig(r)
	lcfg.Role = RoleLoader
	loader := startServer(t, lcfg, fakePlanner)
	reg, err := loader.srv.Register(RegisterConfig{Coordinator: coord.addr, Advertise: loader.addr, Interval: testBeat,
		DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(clientTLS(t, serverCA, clientCA)), grpc.WithPerRPCCredentials(bearerCreds(ops))}})
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- reg.Run(rctx) }()
	defer func() { stop(); <-done }()
	waitPool(t, ctx, coord, "the loader over mutual TLS with an ops token", hasAddrs(loader.addr))

	beat := &pb.HeartbeatRequest{Address: "127.0.0.1:1"}
	tconn, err := grpc.NewClient(coord.addr, grpc.WithTransportCredentials(clientTLS(t, serverCA, clientCA)), grpc.WithPerRPCCredentials(bearerCreds(trainer)))
	if err != nil {
		t.Fatal(err)
	}
	defer tconn.Close()
	if _, err := pb.NewPoolServiceClient(tconn).Heartbeat(ctx, beat); status.Code(err) != codes.PermissionDenied {
		t.Errorf("heartbeat with a trainer's token: %v, want PermissionDenied", err)
	}
	pconn, err := grpc.NewClient(coord.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer pconn.Close()
	if _, err := pb.NewPoolServiceClient(pconn).Heartbeat(ctx, beat); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext heartbeat: %v, want Unavailable (handshake refused)", err)
	}
	if got := poolAddrs(listLoaders(t, ctx, coord).GetLoaders()); len(got) != 1 || got[0] != loader.addr {
		t.Errorf("pool %v, want only %s", got, loader.addr)
	}
}
