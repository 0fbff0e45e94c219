package service

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/logging"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// Client is one line of an auth file: a named client, the SHA-256 of its
// token, and the datasets it may read.
type Client struct {
	Name     string
	Hash     [sha256.Size]byte
	All      bool            // "*": every dataset
	Datasets map[string]bool // by name, when not All
}

// allows says whether the client may read the dataset named name.
func (c *Client) allows(name string) bool { return c.All || c.Datasets[name] }

// maxAuthFileLen bounds an auth file: it is read on every change, and
// 1 MiB is about 10,000 clients.
const maxAuthFileLen = 1 << 20

// ParseAuthFile reads an auth file: one client per line,
//
//	NAME SHA256_HEX_OF_TOKEN DATASET[,DATASET…]
//
// with "*" for every dataset; blank lines and lines starting with "#" are
// skipped. A name may appear on several lines (several tokens, for
// rotation); a token hash may not. The file holds hashes only, so it
// gives no token away: make one with
//
//	TOKEN=$(openssl rand -hex 32); printf %s "$TOKEN" | sha256sum
//
// Errors name the line.
func ParseAuthFile(b []byte) ([]Client, error) {
	if len(b) > maxAuthFileLen {
		return nil, fmt.Errorf("auth file: %d bytes, at most %d", len(b), maxAuthFileLen)
	}
	var out []Client
	seen := make(map[[sha256.Size]byte]int)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, maxAuthFileLen)
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Fields(text)
		if len(f) != 3 {
			return nil, fmt.Errorf("auth file line %d: %d fields, want NAME SHA256_HEX DATASET[,DATASET...]", line, len(f))
		}
		c := Client{Name: f[0]}
		h, err := hex.DecodeString(f[1])
		if err != nil || len(h) != sha256.Size {
			return nil, fmt.Errorf("auth file line %d: client %q: the token hash is not 64 hex digits (a SHA-256)", line, c.Name)
		}
		copy(c.Hash[:], h)
		if prev, ok := seen[c.Hash]; ok {
			return nil, fmt.Errorf("auth file line %d: client %q: the same token hash as line %d", line, c.Name, prev)
		}
		seen[c.Hash] = line
		if f[2] == "*" {
			c.All = true
		} else {
			c.Datasets = make(map[string]bool)
			for _, d := range strings.Split(f[2], ",") {
				if d == "" || d == "*" {
					return nil, fmt.Errorf("auth file line %d: client %q: datasets %q: want names separated by commas, or * alone", line, c.Name, f[2])
				}
				c.Datasets[d] = true
			}
		}
		out = append(out, c)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	return out, nil
}

// authenticator checks bearer tokens against an auth file it reloads when
// the file changes.
type authenticator struct {
	clients *reloading[[]Client]
}

func newAuthenticator(path string, log *slog.Logger) (*authenticator, error) {
	a := &authenticator{clients: &reloading[[]Client]{
		what:  "auth file",
		files: []string{path},
		log:   log,
		load: func() ([]Client, error) {
			b, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("read auth file: %w", err)
			}
			cs, err := ParseAuthFile(b)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", path, err)
			}
			return cs, nil
		},
	}}
	if _, err := a.clients.get(); err != nil {
		return nil, err
	}
	return a, nil
}

// find returns the client whose token hash matches token's, comparing
// every entry in constant time so the time taken tells nothing about how
// close a guess came.
func findClient(clients []Client, token string) *Client {
	sum := sha256.Sum256([]byte(token))
	var found *Client
	for i := range clients {
		if subtle.ConstantTimeCompare(sum[:], clients[i].Hash[:]) == 1 {
			found = &clients[i]
		}
	}
	return found
}

// healthPrefix is the health service's method prefix: health checks stay
// open, so that load balancers and kubelets need no token.
var healthPrefix = "/" + healthpb.Health_ServiceDesc.ServiceName + "/"

// authFunc is go-grpc-middleware's auth.AuthFunc: it finds the caller's
// client from its bearer token, or fails with Unauthenticated. The token
// never reaches a log or an error message; the client's name goes to the
// request log.
func (a *authenticator) authFunc(ctx context.Context) (context.Context, error) {
	if m, _ := grpc.Method(ctx); strings.HasPrefix(m, healthPrefix) {
		return ctx, nil
	}
	token, err := auth.AuthFromMD(ctx, "bearer")
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, "authentication: want metadata \"authorization: Bearer TOKEN\" (this server has --auth-file)")
	}
	clients, err := a.clients.get()
	if err != nil {
		return nil, status.Error(codes.Unavailable, "authentication: the auth file cannot be read")
	}
	c := findClient(clients, token)
	if c == nil {
		return nil, status.Error(codes.Unauthenticated, "authentication: unknown token")
	}
	if l, ok := ctx.Value(logClientKey{}).(*logClient); ok {
		l.name = c.Name
	}
	return context.WithValue(ctx, clientKey{}, c), nil
}

type clientKey struct{}

// clientFrom is the authenticated client of a call; nil without an auth
// file (or for a health check).
func clientFrom(ctx context.Context) *Client {
	c, _ := ctx.Value(clientKey{}).(*Client)
	return c
}

// allow refuses with PermissionDenied a caller who may not read the
// dataset named name ("" names the only one). The message is the same
// whether or not such a dataset is served: a client learns nothing about
// datasets it may not read.
func (s *core) allow(ctx context.Context, name string) error {
	c := clientFrom(ctx)
	if c == nil {
		return nil
	}
	if name == "" && len(s.catalog.names) == 1 {
		name = s.catalog.names[0]
	}
	if !c.allows(name) {
		return status.Errorf(codes.PermissionDenied, "client %q may not read dataset %q (--auth-file)", c.Name, name)
	}
	return nil
}

// logClient carries the authenticated client's name from the auth
// interceptor, which runs inside the logging one, back to the request log.
type (
	logClient    struct{ name string }
	logClientKey struct{}
)

// logClientFields is the logging interceptor's fields from its context:
// the client's name once authenticated.
func logClientFields(ctx context.Context) logging.Fields {
	if l, ok := ctx.Value(logClientKey{}).(*logClient); ok && l.name != "" {
		return logging.Fields{"client", l.name}
	}
	return nil
}

// withLogClient puts a logClient in the context of every call, outside
// the logging interceptor.
func withLogClientUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	return h(context.WithValue(ctx, logClientKey{}, &logClient{}), req)
}

func withLogClientStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	return h(srv, &ctxStream{ss, context.WithValue(ss.Context(), logClientKey{}, &logClient{})})
}

// ctxStream is a ServerStream with another context.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }
