package service

import (
	"bytes"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/sampler"
)

// TestSignedTokens: with token keys, the server emits signed tokens, a
// valid one resumes, and a forged, altered, unsigned or foreign-key token
// is refused with InvalidArgument before any planning.
func TestSignedTokens(t *testing.T) {
	r := &fakeReader{m: testManifest(8, 20, 5)}
	cfg := testConfig(r)
	key := bytes.Repeat([]byte("k"), 32)
	cfg.TokenKeys = [][]byte{key}
	var misses atomic.Int64
	pl := samplerPlanner
	inner := pl.newPlan
	pl.newPlan = func(u []sampler.Unit, j sampler.Job, tok *sampler.Token, w, b int) (epochPlan, error) {
		misses.Add(1)
		return inner(u, j, tok, w, b)
	}
	ts := startServer(t, cfg, pl)
	ctx := testCtx(t)
	job := &pb.JobSpec{WorldSize: 1, BatchSize: 4, Window: 2}
	batches, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: job, MaxSteps: 3})
	if err != nil || len(batches) != 3 {
		t.Fatalf("first stream: %d batches, %v", len(batches), err)
	}
	tok := batches[2].GetResumeToken()
	unsigned, _, ok := strings.Cut(tok, ".")
	if !ok || !strings.Contains(tok, ".s1.") {
		t.Fatalf("token %q is not signed", tok)
	}
	resumed := &pb.JobSpec{WorldSize: 1, BatchSize: 4, Window: 2, ResumeToken: tok}
	rest, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: resumed})
	if err != nil || len(rest) != 37 {
		t.Fatalf("resumed with a signed token: %d batches, %v; want 37", len(rest), err)
	}

	// Another epoch's token, signed with another key: what a client could
	// make with the sampler's encoder alone.
	other := tokenSigner{keys: [][]byte{bytes.Repeat([]byte("x"), 32)}}
	flip := []byte(tok)
	flip[3] ^= 1
	planned := misses.Load()
	for name, bad := range map[string]string{
		"unsigned":       unsigned,
		"altered":        string(flip),
		"another key":    other.sign(unsigned),
		"another scheme": strings.Replace(tok, ".s1.", ".s2.", 1),
		"cut signature":  tok[:len(tok)-2],
	} {
		j := &pb.JobSpec{WorldSize: 1, BatchSize: 4, Window: 2, ResumeToken: bad}
		_, err := ts.coord.PlanEpoch(ctx, &pb.PlanEpochRequest{Job: j})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s token: PlanEpoch = %v, want InvalidArgument", name, err)
		}
		if _, err := streamAll(ctx, ts.loader, &pb.StreamBatchesRequest{Job: j}); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s token: StreamBatches = %v, want InvalidArgument", name, err)
		}
	}
	if n := misses.Load(); n != planned {
		t.Errorf("refused tokens were planned: %d plans computed", n-planned)
	}
}

func TestReadTokenKeys(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	writeFile(t, good, []byte("# new\n"+strings.Repeat("a", 64)+"\n\n"+strings.Repeat("b", 32)+"\n"))
	keys, err := ReadTokenKeys(good)
	if err != nil || len(keys) != 2 || string(keys[0]) != strings.Repeat("a", 64) {
		t.Errorf("ReadTokenKeys(good) = %q, %v", keys, err)
	}
	for name, b := range map[string]string{"short": "abc\n", "empty": "# none\n"} {
		p := filepath.Join(dir, name)
		writeFile(t, p, []byte(b))
		if _, err := ReadTokenKeys(p); err == nil {
			t.Errorf("ReadTokenKeys(%s) = nil error", name)
		}
	}
}
