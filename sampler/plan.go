package sampler

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync/atomic"

	"github.com/shardstream/shardstream/shuffle"
)

// DefaultWindow is the default number of shards per shuffle window: enough
// to mix samples of a few shards in every batch while a loader reads only
// about Window shards per rank at a time.
const DefaultWindow = 4

// Limits that keep a plan's memory bounded whatever a token says.
const (
	// MaxWorldSize is the largest world size a plan or token may name.
	MaxWorldSize = 1 << 20
	// MaxBatchSize is the largest batch size a plan or token may name.
	MaxBatchSize = 1 << 24
	// MaxWindowSamples bounds the samples in one shuffle window: the
	// block permutation costs 4 bytes per sample of the window.
	MaxWindowSamples = 1 << 31
	// maxHistoryRanks bounds the sum of the world sizes of a token's
	// resized segments (8 bytes each).
	maxHistoryRanks = 1 << 22
)

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

func (p Policy) String() string {
	switch p {
	case DropLast:
		return "drop-last"
	case Pad:
		return "pad"
	}
	return fmt.Sprintf("Policy(%d)", uint8(p))
}

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

// ErrInvalid is wrapped by errors for bad arguments; ErrTokenMismatch by
// errors for a token that does not belong to the dataset or job;
// ErrBadToken by errors for a token string that does not parse.
var (
	ErrInvalid       = errors.New("invalid plan arguments")
	ErrTokenMismatch = errors.New("resume token does not match")
	ErrBadToken      = errors.New("malformed resume token")
)

// Plan is one epoch's plan from a resume point on. It is immutable but for
// an internal cache, and safe for concurrent use: Batch may be called from
// many goroutines for the same or different ranks.
type Plan struct {
	job     Job
	base    *base
	layers  []*layer  // one per segment; the last is the current one
	history []Segment // the token's segments before the current one
	start   int64     // steps of the current segment consumed before this plan
	padded  int64
}

// base is the epoch's permuted shard order: position v of the base
// sequence V₀ is sample v−starts[j] of shard order[j], for the j with
// starts[j] <= v < starts[j+1].
type base struct {
	order  []uint32 // manifest index of the j-th shard in permuted order
	starts []int64  // len(order)+1 prefix sums of the permuted counts
	window int
	seed   uint64
	epoch  uint64
}

// layer is one segment: how it splits its input sequence (of length n)
// among world ranks.
type layer struct {
	n     int64
	world int
	batch int64
	steps int64 // steps every rank gets in the whole segment
	slots int64 // steps × batch: every rank's stream length
	pad   bool  // the Pad policy: ranges split evenly, no tail

	// Set for segments the resume history has closed.
	done  int64   // steps every rank consumed
	carry []int64 // carry[r]: unconsumed real samples of ranks < r; len world+1

	// Set for the first segment only: the window shuffle's per-rank cache.
	blocks []atomic.Pointer[block]
}

// block is one window block of a rank's range in the first segment and
// its permutation: position lo+i of V₀ is delivered at lo+perm[i].
type block struct {
	lo, hi int64
	perm   []uint32
}

// New plans the epoch of job over shards with the given sample counts, for
// worldSize ranks of batchSize, continuing from resume (nil: the epoch's
// start). A resume token whose fingerprint, seed, epoch, window or policy
// differ from job, or whose segments hold fewer steps than it says were
// consumed, wraps ErrTokenMismatch; bad arguments wrap ErrInvalid.
func New(counts []int64, job Job, resume *Token, worldSize, batchSize int) (*Plan, error) {
	if err := checkJob(job); err != nil {
		return nil, err
	}
	if err := checkSizes(worldSize, batchSize); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if uint64(len(counts)) > math.MaxUint32 {
		return nil, fmt.Errorf("%w: %d shards, at most %d", ErrInvalid, len(counts), uint64(math.MaxUint32))
	}
	var segs []Segment
	if resume != nil {
		if err := checkToken(*resume, job); err != nil {
			return nil, err
		}
		segs = resume.Segments
	}
	b, err := newBase(counts, job)
	if err != nil {
		return nil, err
	}
	p := &Plan{job: job, base: b}
	n := b.starts[len(b.starts)-1]
	historyRanks, continued := 0, false
	for i, s := range segs {
		l := newLayer(n, s.WorldSize, s.BatchSize, job.Policy)
		if s.Steps > l.steps {
			return nil, fmt.Errorf("%w: segment %d (world %d, batch %d) consumed %d steps, it holds %d",
				ErrTokenMismatch, i, s.WorldSize, s.BatchSize, s.Steps, l.steps)
		}
		if i == len(segs)-1 && s.WorldSize == worldSize && s.BatchSize == batchSize {
			p.layers = append(p.layers, l)
			p.history = slices.Clone(segs[:i])
			p.start = s.Steps
			continued = true
			break
		}
		historyRanks += s.WorldSize
		if historyRanks > maxHistoryRanks {
			return nil, fmt.Errorf("%w: resized segments name %d ranks in all, at most %d",
				ErrTokenMismatch, historyRanks, maxHistoryRanks)
		}
		l.close(s.Steps)
		p.layers = append(p.layers, l)
		n = l.carry[l.world] + l.dropped()
	}
	if !continued {
		p.layers = append(p.layers, newLayer(n, worldSize, batchSize, job.Policy))
		p.history = slices.Clone(segs)
	}
	first := p.layers[0]
	first.blocks = make([]atomic.Pointer[block], first.world)
	cur := p.cur()
	for r := range cur.world {
		_, c := cur.rangeOf(r)
		p.padded += max(0, cur.slots-max(c, p.start*cur.batch))
	}
	return p, nil
}

func checkJob(job Job) error {
	if job.Window < 1 {
		return fmt.Errorf("%w: window %d, want >= 1", ErrInvalid, job.Window)
	}
	if job.Policy != DropLast && job.Policy != Pad {
		return fmt.Errorf("%w: policy %v, want drop-last (%d) or pad (%d)", ErrInvalid, job.Policy, DropLast, Pad)
	}
	return nil
}

func checkSizes(worldSize, batchSize int) error {
	if worldSize < 1 || worldSize > MaxWorldSize {
		return fmt.Errorf("world size %d, want 1..%d", worldSize, MaxWorldSize)
	}
	if batchSize < 1 || batchSize > MaxBatchSize {
		return fmt.Errorf("batch size %d, want 1..%d", batchSize, MaxBatchSize)
	}
	return nil
}

func checkToken(t Token, job Job) error {
	switch {
	case t.Fingerprint != job.Fingerprint:
		return errTokenField("dataset fingerprint", fmt.Sprintf("%q", t.Fingerprint), fmt.Sprintf("%q", job.Fingerprint))
	case t.Seed != job.Seed:
		return errTokenField("seed", t.Seed, job.Seed)
	case t.Epoch != job.Epoch:
		return errTokenField("epoch", t.Epoch, job.Epoch)
	case t.Window != job.Window:
		return errTokenField("window", t.Window, job.Window)
	case t.Policy != job.Policy:
		return errTokenField("policy", t.Policy, job.Policy)
	}
	if len(t.Segments) > maxTokenSegments {
		return fmt.Errorf("%w: %d segments, at most %d", ErrTokenMismatch, len(t.Segments), maxTokenSegments)
	}
	for i, s := range t.Segments {
		if err := checkSizes(s.WorldSize, s.BatchSize); err != nil {
			return fmt.Errorf("%w: segment %d: %v", ErrTokenMismatch, i, err)
		}
		if s.Steps < 0 {
			return fmt.Errorf("%w: segment %d: %d steps", ErrTokenMismatch, i, s.Steps)
		}
	}
	return nil
}

func newBase(counts []int64, job Job) (*base, error) {
	m := len(counts)
	b := &base{
		order:  make([]uint32, m),
		starts: make([]int64, m+1),
		window: job.Window,
		seed:   job.Seed,
		epoch:  job.Epoch,
	}
	shuffle.Perm(b.order, shuffle.NewSource(job.Seed, shuffle.Stream(shuffle.DomainShards, job.Epoch)))
	var n int64
	for j, s := range b.order {
		c := counts[s]
		if c < 0 {
			return nil, fmt.Errorf("%w: shard %d has %d samples", ErrInvalid, s, c)
		}
		if c > math.MaxInt64-n {
			return nil, fmt.Errorf("%w: more than %d samples in all", ErrInvalid, int64(math.MaxInt64))
		}
		n += c
		b.starts[j+1] = n
	}
	for ws := 0; ws < m; {
		we := b.windowEnd(ws)
		if c := b.starts[we] - b.starts[ws]; c > MaxWindowSamples {
			return nil, fmt.Errorf("%w: shuffle window of shards %d..%d (permuted order) holds %d samples, at most %d",
				ErrInvalid, ws, we-1, c, int64(MaxWindowSamples))
		}
		ws = we
	}
	return b, nil
}

// windowEnd is the end (exclusive) of the window that starts at permuted
// shard position ws.
func (b *base) windowEnd(ws int) int {
	if m := len(b.order); b.window >= m-ws {
		return m
	}
	return ws + b.window
}

// shardAt is the permuted position j of the shard holding V₀ position v:
// the last j with starts[j] <= v (empty shards share a start; the last of
// them is the non-empty one).
func (b *base) shardAt(v int64) int {
	lo, hi := 0, len(b.order) // starts[lo] <= v < starts[hi]
	for hi-lo > 1 {
		mid := int(uint(lo+hi) >> 1)
		if b.starts[mid] <= v {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

func (b *base) sample(v int64) SampleID {
	j := b.shardAt(v)
	return SampleID{Shard: int64(b.order[j]), Index: v - b.starts[j]}
}

func newLayer(n int64, worldSize, batchSize int, policy Policy) *layer {
	rb := int64(worldSize) * int64(batchSize)
	steps := n / rb
	if policy == Pad && n%rb != 0 {
		steps++
	}
	return &layer{n: n, world: worldSize, batch: int64(batchSize), steps: steps, slots: steps * int64(batchSize), pad: policy == Pad}
}

// rangeOf is rank r's range of the segment's input: it starts at lo and
// holds c real samples; the rank's stream positions past c (Pad only)
// repeat them. Under DropLast every rank gets slots samples from r·slots
// on and the tail past world·slots is dropped. Under Pad the n samples are
// split as evenly as ranks allow (sizes differ by at most one), so no
// rank pads more than one batch: rather than the last ranks repeating a
// few samples many times.
func (l *layer) rangeOf(r int) (lo, c int64) {
	if !l.pad {
		return int64(r) * l.slots, l.slots
	}
	w := int64(l.world)
	q, rem := l.n/w, l.n%w
	lo = int64(r)*q + min(int64(r), rem)
	c = q
	if int64(r) < rem {
		c++
	}
	return lo, c
}

// dropped is the length of the tail of the input no rank gets.
func (l *layer) dropped() int64 {
	if l.pad {
		return 0
	}
	return l.n - int64(l.world)*l.slots
}

// close records that every rank consumed done steps and prepares the
// mapping of the next segment's input onto this one.
func (l *layer) close(done int64) {
	l.done = done
	l.carry = make([]int64, l.world+1)
	for r := range l.world {
		_, c := l.rangeOf(r)
		l.carry[r+1] = l.carry[r] + c - min(done*l.batch, c)
	}
}

func (p *Plan) cur() *layer { return p.layers[len(p.layers)-1] }

// index maps stream position pos of rank r in segment k to a position of
// the segment's input sequence.
func (p *Plan) index(k, r int, pos int64) int64 {
	l := p.layers[k]
	lo, c := l.rangeOf(r)
	if pos >= c {
		if c == 0 {
			return (int64(r)*l.slots + pos) % l.n
		}
		pos = (pos - c) % c
	}
	v := lo + pos
	if k == 0 {
		v = p.shuffle(l, r, v, lo, c)
	}
	return v
}

// shuffle maps V₀ position v inside rank r's range [rlo, rlo+c) of the
// first segment to the position delivered in its place: the range is cut
// at window boundaries and each block permuted.
func (p *Plan) shuffle(l *layer, r int, v, rlo, c int64) int64 {
	if b := l.blocks[r].Load(); b != nil && b.lo <= v && v < b.hi {
		return b.lo + int64(b.perm[v-b.lo])
	}
	bs := p.base
	w := bs.shardAt(v) / bs.window
	ws := w * bs.window
	we := bs.windowEnd(ws)
	lo := max(rlo, bs.starts[ws])
	hi := min(rlo+c, bs.starts[we])
	perm := make([]uint32, hi-lo)
	shuffle.Perm(perm, shuffle.NewSource(bs.seed, shuffle.Stream(shuffle.DomainBlock, bs.epoch, uint64(r), uint64(w))))
	l.blocks[r].Store(&block{lo: lo, hi: hi, perm: perm})
	return lo + int64(perm[v-lo])
}

// sample resolves position v of segment k's input sequence to a sample,
// walking back through the resized segments to V₀.
func (p *Plan) sample(k int, v int64) SampleID {
	for ; k > 0; k-- {
		prev := p.layers[k-1]
		if u := prev.carry[prev.world]; v >= u {
			v = int64(prev.world)*prev.slots + (v - u) // the dropped tail (DropLast only)
			continue
		}
		lo, hi := 0, prev.world // carry[lo] <= v < carry[hi]
		for hi-lo > 1 {
			mid := int(uint(lo+hi) >> 1)
			if prev.carry[mid] <= v {
				lo = mid
			} else {
				hi = mid
			}
		}
		_, c := prev.rangeOf(lo)
		consumed := min(prev.done*prev.batch, c)
		v = p.index(k-1, lo, consumed+v-prev.carry[lo])
	}
	return p.base.sample(v)
}

// Steps is how many steps every rank gets from the resume point to the end
// of the epoch.
func (p *Plan) Steps() int64 { return p.cur().steps - p.start }

// WorldSize and BatchSize are the plan's current world and batch size.
func (p *Plan) WorldSize() int { return p.cur().world }
func (p *Plan) BatchSize() int { return int(p.cur().batch) }

// Samples is how many sample slots the remaining steps hold (ranks × steps
// × batch); Dropped and Padded say what the last-batch policy left out or
// repeated in this part of the epoch.
func (p *Plan) Samples() int64 {
	l := p.cur()
	return int64(l.world) * p.Steps() * l.batch
}

// Dropped is how many samples of this segment's input no rank gets (the
// tail under DropLast; 0 under Pad).
func (p *Plan) Dropped() int64 {
	return p.cur().dropped()
}

// Padded is how many of the remaining slots repeat a sample (Pad only).
func (p *Plan) Padded() int64 { return p.padded }

// Batch appends to dst the samples of rank's batch at step (counted from
// the resume point, 0 <= step < Steps()) and returns it. It panics if rank
// or step is out of range, like an index out of range.
func (p *Plan) Batch(rank int, step int64, dst []SampleID) []SampleID {
	l := p.cur()
	if rank < 0 || rank >= l.world || step < 0 || step >= p.Steps() {
		panic(fmt.Sprintf("sampler: Batch(rank %d, step %d) out of range: world %d, %d steps", rank, step, l.world, p.Steps()))
	}
	k := len(p.layers) - 1
	pos := (p.start + step) * l.batch
	for i := range l.batch {
		dst = append(dst, p.sample(k, p.index(k, rank, pos+i)))
	}
	return dst
}

// Token is the resume token for the point where every rank has consumed
// steps [0, step) of this plan; 0 <= step <= Steps(), else it panics.
func (p *Plan) Token(step int64) Token {
	if step < 0 || step > p.Steps() {
		panic(fmt.Sprintf("sampler: Token(%d) out of range: %d steps", step, p.Steps()))
	}
	l := p.cur()
	segs := make([]Segment, len(p.history), len(p.history)+1)
	copy(segs, p.history)
	segs = append(segs, Segment{WorldSize: l.world, BatchSize: int(l.batch), Steps: p.start + step})
	return Token{Job: p.job, Segments: segs}
}
