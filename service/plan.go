package service

import (
	"container/list"
	"errors"
	"fmt"
	"strings"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardstream/shardstream/manifest"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/sampler"
)

// epochPlan is what the services use of a *sampler.Plan; tests plug in a
// simpler one to exercise the pipeline on its own.
type epochPlan interface {
	Steps() int64
	Samples() int64
	Dropped() int64
	Padded() int64
	Batch(rank int, step int64, dst []sampler.SampleID) []sampler.SampleID
	// Token is the encoded resume token after steps [0, step).
	Token(step int64) string
}

// planner makes plans and reads resume tokens.
type planner struct {
	newPlan    func(counts []int64, job sampler.Job, resume *sampler.Token, worldSize, batchSize int) (epochPlan, error)
	parseToken func(string) (sampler.Token, error)
}

// samplerPlanner is the real planner.
var samplerPlanner = planner{
	newPlan: func(counts []int64, job sampler.Job, resume *sampler.Token, worldSize, batchSize int) (epochPlan, error) {
		p, err := sampler.New(counts, job, resume, worldSize, batchSize)
		if err != nil {
			return nil, err
		}
		return samplerPlan{p}, nil
	},
	parseToken: sampler.ParseToken,
}

type samplerPlan struct{ *sampler.Plan }

func (p samplerPlan) Token(step int64) string { return p.Plan.Token(step).String() }

// dataset is a served dataset with what planning needs computed once.
type dataset struct {
	name        string
	manifest    *manifest.Manifest
	chunks      ChunkReader
	fingerprint string
	counts      []int64
}

// catalog is the set of served datasets.
type catalog struct {
	byName map[string]*dataset
	names  []string
}

func newCatalog(ds []Dataset) *catalog {
	c := &catalog{byName: make(map[string]*dataset, len(ds))}
	for _, d := range ds {
		c.byName[d.Name] = &dataset{
			name:        d.Name,
			manifest:    d.Manifest,
			chunks:      d.Chunks,
			fingerprint: d.Manifest.Fingerprint(),
			counts:      d.Manifest.SampleCounts(),
		}
		c.names = append(c.names, d.Name)
	}
	return c
}

// lookup finds a dataset by name; the empty name means the only one.
func (c *catalog) lookup(name string) (*dataset, error) {
	if d, ok := c.byName[name]; ok {
		return d, nil
	}
	if name == "" && len(c.names) == 1 {
		return c.byName[c.names[0]], nil
	}
	if name == "" {
		return nil, status.Errorf(codes.InvalidArgument, "dataset: a name is required, this server serves %s", strings.Join(c.names, ", "))
	}
	return nil, status.Errorf(codes.NotFound, "dataset %q is not served here (serving %s)", name, strings.Join(c.names, ", "))
}

// planKey identifies a plan: everything in a JobSpec after defaults.
type planKey struct {
	dataset   string
	seed      uint64
	epoch     uint64
	worldSize int
	batchSize int
	window    int
	policy    sampler.Policy
	token     string
}

// job is a validated JobSpec.
type job struct {
	ds     *dataset
	key    planKey
	sjob   sampler.Job
	resume *sampler.Token
}

// resolve validates spec against the served datasets and limits. Errors
// are gRPC statuses naming the offending field.
func (s *core) resolve(spec *pb.JobSpec) (*job, error) {
	if spec == nil {
		return nil, status.Error(codes.InvalidArgument, "job: missing")
	}
	ds, err := s.catalog.lookup(spec.GetDataset())
	if err != nil {
		return nil, err
	}
	ws, bs := spec.GetWorldSize(), spec.GetBatchSize()
	if ws < 1 || int64(ws) > int64(s.cfg.MaxWorldSize) {
		return nil, status.Errorf(codes.InvalidArgument, "job.world_size: %d, must be in [1, %d]", ws, s.cfg.MaxWorldSize)
	}
	if bs < 1 || int64(bs) > int64(s.cfg.MaxBatchSize) {
		return nil, status.Errorf(codes.InvalidArgument, "job.batch_size: %d, must be in [1, %d]", bs, s.cfg.MaxBatchSize)
	}
	window := int(spec.GetWindow())
	if window == 0 {
		window = s.cfg.DefaultWindow
	}
	var policy sampler.Policy
	switch spec.GetLastBatch() {
	case pb.LastBatchPolicy_LAST_BATCH_POLICY_UNSPECIFIED, pb.LastBatchPolicy_LAST_BATCH_POLICY_DROP:
		policy = sampler.DropLast
	case pb.LastBatchPolicy_LAST_BATCH_POLICY_PAD:
		policy = sampler.Pad
	default:
		return nil, status.Errorf(codes.InvalidArgument, "job.last_batch: unknown policy %d", spec.GetLastBatch())
	}
	j := &job{
		ds: ds,
		key: planKey{
			dataset:   ds.name,
			seed:      spec.GetSeed(),
			epoch:     spec.GetEpoch(),
			worldSize: int(ws),
			batchSize: int(bs),
			window:    window,
			policy:    policy,
			token:     spec.GetResumeToken(),
		},
		sjob: sampler.Job{
			Fingerprint: ds.fingerprint,
			Seed:        spec.GetSeed(),
			Epoch:       spec.GetEpoch(),
			Window:      window,
			Policy:      policy,
		},
	}
	if t := spec.GetResumeToken(); t != "" {
		tok, err := s.planner.parseToken(t)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "job.resume_token: %v", err)
		}
		if err := checkToken(tok.Job, j.sjob); err != nil {
			return nil, err
		}
		j.resume = &tok
	}
	return j, nil
}

// checkToken names the first field where a resume token's job differs
// from the request's. The sampler checks too; this gives the API's field
// names.
func checkToken(tok, want sampler.Job) error {
	var field string
	var got, exp any
	switch {
	case tok.Fingerprint != want.Fingerprint:
		field, got, exp = "dataset fingerprint", tok.Fingerprint, want.Fingerprint
	case tok.Seed != want.Seed:
		field, got, exp = "job.seed", tok.Seed, want.Seed
	case tok.Epoch != want.Epoch:
		field, got, exp = "job.epoch", tok.Epoch, want.Epoch
	case tok.Window != want.Window:
		field, got, exp = "job.window", tok.Window, want.Window
	case tok.Policy != want.Policy:
		field, got, exp = "job.last_batch", tok.Policy, want.Policy
	default:
		return nil
	}
	return status.Errorf(codes.FailedPrecondition, "job.resume_token: %s is %v in the token, %v in the request", field, got, exp)
}

// planStatus turns a planning error into a status.
func planStatus(err error) error {
	switch {
	case errors.Is(err, sampler.ErrTokenMismatch):
		return status.Errorf(codes.FailedPrecondition, "job.resume_token: %v", err)
	case errors.Is(err, sampler.ErrBadToken):
		return status.Errorf(codes.InvalidArgument, "job.resume_token: %v", err)
	case errors.Is(err, sampler.ErrInvalid):
		return status.Errorf(codes.InvalidArgument, "job: %v", err)
	}
	return status.Errorf(codes.Internal, "plan: %v", err)
}

// planCache is a small LRU of plans keyed by job. Concurrent requests for
// the same plan wait for one computation.
type planCache struct {
	planner planner
	max     int
	misses  func() // metric hook

	mu      sync.Mutex
	entries map[planKey]*list.Element // of *planEntry
	lru     list.List                 // front: most recently used
}

type planEntry struct {
	key  planKey
	once sync.Once
	plan epochPlan
	err  error
}

func newPlanCache(p planner, max int, misses func()) *planCache {
	return &planCache{planner: p, max: max, misses: misses, entries: make(map[planKey]*list.Element)}
}

// get returns j's plan, computing it at most once while it stays cached.
// Errors are gRPC statuses.
func (c *planCache) get(j *job) (epochPlan, error) {
	c.mu.Lock()
	el, ok := c.entries[j.key]
	if ok {
		c.lru.MoveToFront(el)
	} else {
		el = c.lru.PushFront(&planEntry{key: j.key})
		c.entries[j.key] = el
		for c.lru.Len() > c.max {
			old := c.lru.Back()
			c.lru.Remove(old)
			delete(c.entries, old.Value.(*planEntry).key)
		}
	}
	e := el.Value.(*planEntry)
	c.mu.Unlock()

	e.once.Do(func() {
		c.misses()
		e.plan, e.err = c.planner.newPlan(j.ds.counts, j.sjob, j.resume, j.key.worldSize, j.key.batchSize)
		if e.err != nil {
			e.err = planStatus(e.err)
		}
	})
	if e.err != nil {
		return nil, e.err
	}
	if e.plan == nil { // newPlan panicked inside once.Do on an earlier call
		return nil, status.Errorf(codes.Internal, "plan %v: planner failed", j.key)
	}
	return e.plan, nil
}

// String is for logs.
func (k planKey) String() string {
	return fmt.Sprintf("dataset=%q seed=%d epoch=%d world=%d batch=%d window=%d policy=%d token=%q",
		k.dataset, k.seed, k.epoch, k.worldSize, k.batchSize, k.window, k.policy, k.token)
}
