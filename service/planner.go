package service

import (
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	// LastUse appends, for each slot of Batch(rank, step), the last step
	// at which rank's stream uses that slot's unit (chunk) again.
	LastUse(rank int, step int64, dst []int64) []int64
	// Token is the encoded resume token after steps [0, step).
	Token(step int64) string
}

// planner makes plans and reads resume tokens: the one seam between the
// services and the sampler, so tests can plan with a simple reference.
type planner struct {
	newPlan    func(units []sampler.Unit, job sampler.Job, resume *sampler.Token, worldSize, batchSize int) (epochPlan, error)
	parseToken func(string) (sampler.Token, error)
}

// samplerPlanner is the real planner.
var samplerPlanner = planner{
	newPlan: func(units []sampler.Unit, job sampler.Job, resume *sampler.Token, worldSize, batchSize int) (epochPlan, error) {
		p, err := sampler.New(units, job, resume, worldSize, batchSize)
		if err != nil {
			return nil, err
		}
		return samplerPlan{p}, nil
	},
	parseToken: sampler.ParseToken,
}

// samplerPlan adapts a *sampler.Plan to epochPlan: its tokens travel as
// strings.
type samplerPlan struct{ *sampler.Plan }

func (p samplerPlan) Token(step int64) string { return p.Plan.Token(step).String() }

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
