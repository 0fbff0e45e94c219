package service

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// fuzzAllocBound is what one hostile request may allocate, resolve,
// planning and a few batches together, under fuzzCore's limits: the plan
// estimate is at most PlanCacheBytes (1 MiB) and a window permutation at
// most MaxWindowSamples*4 bytes (16 KiB) per rank; the rest is slack for
// the runtime and the token parser. A request that makes the server
// allocate in proportion to a number it chose (world size, segments, a
// window) passes it by orders of magnitude.
const fuzzAllocBound = 8 << 20

// fuzzTimeBound is what one request may take here: the dataset has 80
// samples, so anything near a second is a loop on a number the request
// chose.
const fuzzTimeBound = 2 * time.Second

// fuzzCore is the coordinator and loader's shared core over a small
// dataset with the real planner, tight limits and signed tokens, as a
// server built by newServer has it, without a listener.
func fuzzCore(t testing.TB) *core {
	r := &fakeReader{m: testManifest(8, 10, 5)}
	cfg := testConfig(r)
	cfg.MaxWorldSize = 64
	cfg.MaxBatchSize = 256
	cfg.TokenKeys = [][]byte{[]byte("fuzz-key-0123456789abcdef-0123456789")}
	cfg.Limits = Limits{MaxWindow: 16, MaxWindowSamples: 4096, PlanCacheBytes: 1 << 20, MaxConcurrentPlans: 2}
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	m, err := newMetrics(cfg.Registry)
	if err != nil {
		t.Fatal(err)
	}
	pl := signingPlanner(samplerPlanner, cfg.TokenKeys)
	return &core{
		cfg:     &cfg,
		catalog: newCatalog(cfg.Datasets),
		planner: pl,
		plans:   newPlanCache(pl, cfg.PlanCacheSize, cfg.Limits.PlanCacheBytes, make(planSlots, cfg.Limits.MaxConcurrentPlans), func() {}),
		metrics: m,
	}
}

// allowedCodes are the refusals a request may get from resolve and
// planning: anything else (Internal, Unknown) is a bug.
var allowedCodes = map[codes.Code]bool{
	codes.InvalidArgument: true, codes.FailedPrecondition: true, codes.NotFound: true,
	codes.ResourceExhausted: true, codes.OutOfRange: true,
}

// FuzzResolvePlan drives hostile JobSpecs and resume tokens through
// request resolution, planning and the first batches: no panic, only the
// refusal codes of the API, and at most fuzzAllocBound bytes allocated per
// request. A plan it makes hands out a token that resolves again.
func FuzzResolvePlan(f *testing.F) {
	c := fuzzCore(f)
	// Seeds beside testdata/fuzz/FuzzResolvePlan: a good job, and one
	// resumed from a real signed token of it.
	good, err := c.resolve(&pb.JobSpec{WorldSize: 2, BatchSize: 4, Seed: 1})
	if err != nil {
		f.Fatal(err)
	}
	p, err := c.plans.get(good)
	if err != nil {
		f.Fatal(err)
	}
	f.Add("", uint64(1), uint64(0), uint32(2), uint32(4), uint32(0), int32(0), "", "", uint32(0), int64(0))
	f.Add("default", uint64(1), uint64(0), uint32(3), uint32(2), uint32(2), int32(2), p.Token(3), "", uint32(2), int64(1))
	f.Add("", uint64(1<<63), uint64(1<<63), uint32(1<<31), uint32(1<<31), uint32(1<<31), int32(-1), "x", "0123", uint32(9), int64(-1))

	f.Fuzz(func(t *testing.T, dataset string, seed, epoch uint64, world, batch, window uint32, policy int32, token, fp string, rank uint32, step int64) {
		spec := &pb.JobSpec{
			Dataset: dataset, Seed: seed, Epoch: epoch, WorldSize: world, BatchSize: batch,
			Window: window, LastBatch: pb.LastBatchPolicy(policy), ResumeToken: token, Fingerprint: fp,
		}
		// A request that keeps the server busy is as bad as one that
		// allocates: end the process (the fuzzer keeps the input).
		watchdog := time.AfterFunc(fuzzTimeBound, func() {
			panic(fmt.Sprintf("%v: still resolving and planning after %v", spec, fuzzTimeBound))
		})
		defer watchdog.Stop()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		next := resolvePlan(t, c, spec, rank, step)
		runtime.ReadMemStats(&after)
		if n := after.TotalAlloc - before.TotalAlloc; n > fuzzAllocBound {
			t.Fatalf("%v: allocated %d bytes, bound %d", spec, n, fuzzAllocBound)
		}
		if next == "" {
			return
		}
		// The server's own token for the same job resolves and plans.
		spec.ResumeToken = next
		if j, err := c.resolve(spec); err != nil {
			t.Fatalf("resolve with the server's own token %q: %v", next, err)
		} else if _, err := c.plans.get(j); err != nil && status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("plan with the server's own token %q: %v", next, err)
		}
	})
}

// resolvePlan resolves and plans spec and reads one batch of rank at
// step (both wrapped into range); it returns the plan's token after that
// step, or "" when the request was refused.
func resolvePlan(t *testing.T, c *core, spec *pb.JobSpec, rank uint32, step int64) string {
	j, err := c.resolve(spec)
	if err == nil {
		var p epochPlan
		if p, err = c.plans.get(j); err == nil {
			if p.Steps() == 0 {
				return ""
			}
			r := int(rank % uint32(j.key.worldSize))
			s := step % p.Steps()
			if s < 0 {
				s += p.Steps()
			}
			ids := p.Batch(r, s, nil)
			if len(ids) != j.key.batchSize {
				t.Fatalf("%v: Batch(%d, %d) has %d samples, want %d", spec, r, s, len(ids), j.key.batchSize)
			}
			p.LastUse(r, s, nil)
			return p.Token(s + 1)
		}
	}
	if st, ok := status.FromError(err); !ok || !allowedCodes[st.Code()] {
		t.Fatalf("%v: %v, want one of the API's refusals", spec, err)
	}
	return ""
}
