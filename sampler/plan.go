// Package sampler computes epoch plans: which samples every trainer rank
// gets at every step of an epoch. It is a pure function of the dataset's
// per-shard sample counts, the job (seed, window, last-batch policy), the
// epoch, the world and batch sizes and the resume history: no I/O, no
// clock, no global random source.
//
// PLACEHOLDER API: the signatures below are the contract the service codes
// against; the bodies are being written.
package sampler

import "errors"

// Policy says what happens to the samples that do not fill a whole step on
// every rank at the end of an epoch.
type Policy uint8

const (
	// DropLast leaves the tail of the permuted sequence (fewer than
	// world×batch samples) out of the epoch. The default.
	DropLast Policy = 1
	// Pad fills the last step by repeating samples.
	Pad Policy = 2
)

// SampleID is a sample's identity: its shard's index in the manifest and
// its index inside the shard.
type SampleID struct {
	Shard int64
	Index int64
}

// Job is what stays fixed for an epoch of a training job.
type Job struct {
	Fingerprint string // dataset fingerprint (hex)
	Seed        uint64
	Epoch       uint64
	Window      int // shards per shuffle window, >= 1
	Policy      Policy
}

// Segment is a stretch of an epoch run with one world size and batch size;
// Steps is how many steps every rank consumed in it.
type Segment struct {
	WorldSize int
	BatchSize int
	Steps     int64
}

// Token is where an epoch stands: the same on every rank.
type Token struct {
	Job
	Segments []Segment
}

// ErrInvalid is wrapped by errors for bad arguments; ErrTokenMismatch by
// errors for a token that does not belong to the dataset or job.
var (
	ErrInvalid       = errors.New("invalid plan arguments")
	ErrTokenMismatch = errors.New("resume token does not match")
	ErrBadToken      = errors.New("malformed resume token")
)

// String encodes the token compactly (URL-safe base64).
func (t Token) String() string { panic("TODO") }

// ParseToken decodes a token; malformed input wraps ErrBadToken.
func ParseToken(s string) (Token, error) { panic("TODO") }

// Plan is one epoch's plan from a resume point on.
type Plan struct{}

// New plans the epoch of job over shards with the given sample counts, for
// worldSize ranks of batchSize, continuing from resume (nil: the epoch's
// start). A resume token whose fingerprint, seed, epoch, window or policy
// differ from job wraps ErrTokenMismatch.
func New(counts []int64, job Job, resume *Token, worldSize, batchSize int) (*Plan, error) {
	panic("TODO")
}

// Steps is how many steps every rank gets from the resume point to the end
// of the epoch.
func (p *Plan) Steps() int64 { panic("TODO") }

// Samples is how many sample slots the remaining steps hold (ranks × steps
// × batch); Dropped and Padded say what the last-batch policy left out or
// repeated in this part of the epoch.
func (p *Plan) Samples() int64 { panic("TODO") }
func (p *Plan) Dropped() int64 { panic("TODO") }
func (p *Plan) Padded() int64  { panic("TODO") }

// Batch appends to dst the samples of rank's batch at step (counted from
// the resume point, 0 <= step < Steps()) and returns it.
func (p *Plan) Batch(rank int, step int64, dst []SampleID) []SampleID { panic("TODO") }

// Token is the resume token for the point where every rank has consumed
// steps [0, step) of this plan.
func (p *Plan) Token(step int64) Token { panic("TODO") }
