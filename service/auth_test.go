package service

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

func bearer(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestAuthCodes: without a token, with an unknown one, and with one not
// allowed the dataset — existing or not, with the same message — a call is
// refused with its code; health checks need no token; the log names the
// client, never the token; a rewritten auth file takes effect.
func TestAuthCodes(t *testing.T) {
	r := &fakeReader{m: testManifest(4, 10, 5)}
	cfg := Config{Datasets: []Dataset{{Name: "a", Manifest: r.m, Chunks: r}, {Name: "b", Manifest: r.m, Chunks: r}}}
	const alice, bob, carol = "alice-secret-token", "bob-secret-token", "carol-secret-token"
	path := filepath.Join(t.TempDir(), "auth")
	writeFile(t, path, []byte(fmt.Sprintf("# clients\nalice %s a\nbob %s b,c\ncarol %s *\n", tokenHash(alice), tokenHash(bob), tokenHash(carol))))
	cfg.AuthFile = path
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	ts := startServer(t, cfg, fakePlanner)
	ctx := testCtx(t)
	job := func(ds string) *pb.PlanEpochRequest {
		return &pb.PlanEpochRequest{Job: &pb.JobSpec{Dataset: ds, WorldSize: 1, BatchSize: 2}}
	}

	for _, tt := range []struct {
		name    string
		ctx     context.Context
		dataset string
		want    codes.Code
	}{
		{"no token", ctx, "a", codes.Unauthenticated},
		{"unknown token", bearer(ctx, "guess"), "a", codes.Unauthenticated},
		{"allowed", bearer(ctx, alice), "a", codes.OK},
		{"another dataset", bearer(ctx, alice), "b", codes.PermissionDenied},
		{"a missing dataset", bearer(ctx, alice), "c", codes.PermissionDenied},
		{"a missing dataset it is allowed", bearer(ctx, bob), "c", codes.NotFound},
		{"star", bearer(ctx, carol), "b", codes.OK},
		{"star, missing", bearer(ctx, carol), "zzz", codes.NotFound},
	} {
		_, err := ts.coord.PlanEpoch(tt.ctx, job(tt.dataset))
		if status.Code(err) != tt.want {
			t.Errorf("%s: PlanEpoch(%q) = %v, want %v", tt.name, tt.dataset, err, tt.want)
		}
		_, err = ts.coord.GetDataset(tt.ctx, &pb.GetDatasetRequest{Dataset: tt.dataset})
		if status.Code(err) != tt.want {
			t.Errorf("%s: GetDataset(%q) = %v, want %v", tt.name, tt.dataset, err, tt.want)
		}
		_, err = streamAll(tt.ctx, ts.loader, &pb.StreamBatchesRequest{Job: job(tt.dataset).Job})
		if status.Code(err) != tt.want {
			t.Errorf("%s: StreamBatches(%q) = %v, want %v", tt.name, tt.dataset, err, tt.want)
		}
	}
	// Not revealed: the refusals of an existing and a missing dataset read alike.
	_, e1 := ts.coord.GetDataset(bearer(ctx, alice), &pb.GetDatasetRequest{Dataset: "b"})
	_, e2 := ts.coord.GetDataset(bearer(ctx, alice), &pb.GetDatasetRequest{Dataset: "c"})
	if m1, m2 := status.Convert(e1).Message(), status.Convert(e2).Message(); strings.ReplaceAll(m1, `"b"`, `"c"`) != m2 {
		t.Errorf("refusals differ beyond the name: %q and %q", m1, m2)
	}

	if _, err := healthpb.NewHealthClient(ts.conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health check without a token: %v, want SERVING", err)
	}

	// The file reloads: alice now may read b.
	writeFile(t, path, []byte(fmt.Sprintf("alice %s a,b\n", tokenHash(alice))))
	if _, err := ts.coord.GetDataset(bearer(ctx, alice), &pb.GetDatasetRequest{Dataset: "b"}); err != nil {
		t.Errorf("after reload, alice reads b: %v", err)
	}
	if _, err := ts.coord.GetDataset(bearer(ctx, carol), &pb.GetDatasetRequest{Dataset: "a"}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("after reload, carol's removed token: %v, want Unauthenticated", err)
	}
	// A broken rewrite keeps the last good file.
	writeFile(t, path, []byte("alice nothex a\n"))
	if _, err := ts.coord.GetDataset(bearer(ctx, alice), &pb.GetDatasetRequest{Dataset: "b"}); err != nil {
		t.Errorf("after a broken rewrite: %v, want the last good file in force", err)
	}

	if err := ts.stop(); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	for _, tok := range []string{alice, bob, carol, "guess"} {
		if strings.Contains(out, tok) {
			t.Errorf("the log holds the token %q:\n%s", tok, out)
		}
	}
	if !strings.Contains(out, "client=alice") {
		t.Errorf("the log does not name the client alice:\n%s", out)
	}
}

func TestParseAuthFile(t *testing.T) {
	h1, h2 := tokenHash("one"), tokenHash("two")
	good := fmt.Sprintf("# comment\n\n  alice %s a,b\nalice %s *\n", h1, h2)
	cs, err := ParseAuthFile([]byte(good))
	if err != nil {
		t.Fatalf("ParseAuthFile(good) = %v", err)
	}
	if len(cs) != 2 || cs[0].Name != "alice" || !cs[0].allows("a") || !cs[0].allows("b") || cs[0].allows("c") || !cs[1].All {
		t.Errorf("ParseAuthFile(good) = %+v", cs)
	}
	if c := findClient(cs, "two"); c == nil || !c.All {
		t.Errorf("findClient(two) = %+v, want the second line", c)
	}
	if c := findClient(cs, "three"); c != nil {
		t.Errorf("findClient(three) = %+v, want nil", c)
	}
	for _, bad := range []string{
		"alice " + h1,                                  // no datasets
		"alice " + h1 + " a extra",                     // four fields
		"alice " + h1[:62] + " a",                      // short hash
		"alice " + strings.ToUpper("zz"+h1[2:]) + " a", // not hex
		"alice " + h1 + " a,,b",                        // empty name
		"alice " + h1 + " a,*",                         // star among names
		"alice " + h1 + " a\nbob " + h1 + " b",         // the same token twice
		strings.Repeat("#", maxAuthFileLen+1),
	} {
		if _, err := ParseAuthFile([]byte(bad)); err == nil {
			t.Errorf("ParseAuthFile(%.80q) = nil error", bad)
		} else if strings.Contains(bad, "\n") && !strings.Contains(err.Error(), "line 2") && len(bad) < 1000 {
			t.Errorf("ParseAuthFile(%.80q) = %v, want it to name line 2", bad, err)
		}
	}
}

// FuzzParseAuthFile: any bytes parse or fail without a panic, and every
// client parsed has a name, a hash and datasets.
func FuzzParseAuthFile(f *testing.F) {
	f.Add([]byte("# c\nalice " + tokenHash("x") + " a,b\nbob " + tokenHash("y") + " *\n"))
	f.Add([]byte("alice zz a"))
	f.Add([]byte("\n\n\r\n# only comments"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cs, err := ParseAuthFile(b)
		if err != nil {
			return
		}
		for _, c := range cs {
			if c.Name == "" || (!c.All && len(c.Datasets) == 0) {
				t.Errorf("parsed client %+v from %q", c, b)
			}
		}
	})
}
