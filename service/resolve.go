package service

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/sampler"
)

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

// String is for logs.
func (k planKey) String() string {
	return fmt.Sprintf("dataset=%q seed=%d epoch=%d world=%d batch=%d window=%d policy=%d token=%q",
		k.dataset, k.seed, k.epoch, k.worldSize, k.batchSize, k.window, k.policy, k.token)
}

// job is a validated JobSpec: its dataset, its defaults filled in, and
// its resume token parsed.
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
	// The plan the client was given is the plan of the manifest it names:
	// a server that serves another manifest under the same name (a
	// re-indexed dataset, a loader behind on a rollout) would stream other
	// batches for the same steps. Empty: a client from before the field.
	if fp := spec.GetFingerprint(); fp != "" && fp != ds.fingerprint {
		return nil, status.Errorf(codes.FailedPrecondition, "job.fingerprint: %.16s, this server serves dataset %q as %.16s: the dataset changed since the job planned; plan again (PlanEpoch) to read the new one", fp, ds.name, ds.fingerprint)
	}
	ws, bs := spec.GetWorldSize(), spec.GetBatchSize()
	if ws < 1 || int64(ws) > int64(s.cfg.MaxWorldSize) {
		return nil, status.Errorf(codes.InvalidArgument, "job.world_size: %d, must be in [1, %d] (--max-world-size)", ws, s.cfg.MaxWorldSize)
	}
	if bs < 1 || int64(bs) > int64(s.cfg.MaxBatchSize) {
		return nil, status.Errorf(codes.InvalidArgument, "job.batch_size: %d, must be in [1, %d] (--max-batch-size)", bs, s.cfg.MaxBatchSize)
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
		if errors.Is(err, sampler.ErrOldToken) {
			return nil, status.Errorf(codes.FailedPrecondition, "job.resume_token: %v", err)
		}
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "job.resume_token: %v", err)
		}
		if err := checkToken(tok, j.sjob); err != nil {
			return nil, err
		}
		j.resume = &tok
	}
	if err := s.checkLimits(j); err != nil {
		return nil, err
	}
	return j, nil
}

// apiField names a sampler.Job field as the API spells it.
var apiField = map[string]string{
	"fingerprint": "dataset fingerprint",
	"seed":        "job.seed",
	"epoch":       "job.epoch",
	"window":      "job.window",
	"policy":      "job.last_batch",
}

// checkToken checks that a resume token belongs to the request's job,
// naming the first field that differs as the API spells it.
func checkToken(tok sampler.Token, want sampler.Job) error {
	err := tok.Check(want)
	var m *sampler.MismatchError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &m):
		return status.Errorf(codes.FailedPrecondition, "job.resume_token: %s is %v in the token, %v in the request", apiField[m.Field], m.Got, m.Want)
	}
	return status.Errorf(codes.FailedPrecondition, "job.resume_token: %v", err)
}
