package sampler

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync/atomic"

	"github.com/shardstream/shardstream/shuffle"
)

// DefaultWindow is the default number of units (manifest chunks) per
// shuffle window. A loader keeps about Window units of decoded data alive
// per rank stream. The value is measured against the planner that shuffled
// whole shards in windows of 4 shards: see docs/planner.md and
// TestWindowQuality.
const DefaultWindow = 8

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

// Unit is what the planner permutes and windows: a run of consecutive
// samples of one shard, in practice one manifest chunk (about 8 MiB), so a
// loader fetches and decodes a unit as a whole.
type Unit struct {
	Shard   int64 // the shard's index in the manifest
	First   int64 // index in the shard of the unit's first sample
	Samples int64 // how many samples the unit holds (0 is fine)
}

// ShardUnits returns one unit per shard holding all its samples, for
// datasets (and tests) where every shard is one chunk.
func ShardUnits(counts []int64) []Unit {
	units := make([]Unit, len(counts))
	for i, c := range counts {
		units[i] = Unit{Shard: int64(i), Samples: c}
	}
	return units
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
	Window      int // units per shuffle window, >= 1 (see DefaultWindow)
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

// ErrOldToken is returned, as is, by ParseToken for a well-formed token of
// version 1: made by a planner that shuffled whole shards, whose windows
// counted shards. Its steps mean nothing to this planner: restart the
// epoch from its start or finish it with the old version. It does not wrap
// ErrBadToken (the token is not corrupt; the service reports it as a
// failed precondition).
var ErrOldToken = errors.New("resume token of version 1, made by a planner that shuffled whole shards: restart the epoch from its start or finish it with the old version")

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

// base is the epoch's permuted unit order: position v of the base
// sequence V₀ is sample v−starts[j] of unit order[j], for the j with
// starts[j] <= v < starts[j+1].
type base struct {
	units  []Unit   // the caller's units, not copied
	order  []uint32 // index in units of the j-th unit in permuted order
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

// New plans the epoch of job over units (in manifest order; units must not
// overlap, and New keeps a reference to the slice: do not modify it while
// the plan is in use), for worldSize ranks of batchSize, continuing from
// resume (nil: the epoch's start). A resume token that fails
// resume.Check(job), or whose segments hold fewer steps than it says were
// consumed, wraps ErrTokenMismatch; bad arguments wrap ErrInvalid.
func New(units []Unit, job Job, resume *Token, worldSize, batchSize int) (*Plan, error) {
	if err := checkJob(job); err != nil {
		return nil, err
	}
	if err := checkSizes(worldSize, batchSize); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if uint64(len(units)) > math.MaxUint32 {
		return nil, fmt.Errorf("%w: %d units, at most %d", ErrInvalid, len(units), uint64(math.MaxUint32))
	}
	var segs []Segment
	if resume != nil {
		if err := resume.Check(job); err != nil {
			return nil, err
		}
		segs = resume.Segments
	}
	b, err := newBase(units, job)
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

func newBase(units []Unit, job Job) (*base, error) {
	for i, u := range units {
		if u.Shard < 0 || u.First < 0 || u.Samples < 0 || u.Samples > math.MaxInt64-u.First {
			return nil, fmt.Errorf("%w: unit %d {shard %d first %d samples %d}: negative or past the largest sample index",
				ErrInvalid, i, u.Shard, u.First, u.Samples)
		}
	}
	m := len(units)
	b := &base{
		units:  units,
		order:  make([]uint32, m),
		starts: make([]int64, m+1),
		window: job.Window,
		seed:   job.Seed,
		epoch:  job.Epoch,
	}
	shuffle.Perm(b.order, shuffle.NewSource(job.Seed, shuffle.Stream(shuffle.DomainShards, job.Epoch)))
	var n int64
	for j, s := range b.order {
		c := units[s].Samples
		if c > math.MaxInt64-n {
			return nil, fmt.Errorf("%w: more than %d samples in all", ErrInvalid, int64(math.MaxInt64))
		}
		n += c
		b.starts[j+1] = n
	}
	for ws := 0; ws < m; {
		we := b.windowEnd(ws)
		if c := b.starts[we] - b.starts[ws]; c > MaxWindowSamples {
			return nil, fmt.Errorf("%w: shuffle window of units %d..%d (permuted order) holds %d samples, at most %d",
				ErrInvalid, ws, we-1, c, int64(MaxWindowSamples))
		}
		ws = we
	}
	return b, nil
}

// windowEnd is the end (exclusive) of the window that starts at permuted
// unit position ws.
func (b *base) windowEnd(ws int) int {
	if m := len(b.order); b.window >= m-ws {
		return m
	}
	return ws + b.window
}

// unitAt is the permuted position j of the unit holding V₀ position v:
// the last j with starts[j] <= v (empty units share a start; the last of
// them is the non-empty one).
func (b *base) unitAt(v int64) int {
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
	j := b.unitAt(v)
	u := &b.units[b.order[j]]
	return SampleID{Shard: u.Shard, Index: u.First + v - b.starts[j]}
}

// windowCut is the end of the window holding V₀ position v: no unit spans
// it, and no window block of the first segment either.
func (b *base) windowCut(v int64) int64 {
	ws := b.unitAt(v) / b.window * b.window
	return b.starts[b.windowEnd(ws)]
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
	w := bs.unitAt(v) / bs.window
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

// Unit lifetimes. A cut of a segment's input is a position e such that no
// unit has samples on both sides of it and, in the first segment, no window
// block spans it. Window ends are cuts of V₀ (a window holds whole units,
// and a block is a rank's range ∩ a window). A rank's stream is a range of
// its segment's input, shuffled only inside blocks, so every unit it holds
// lies between two cuts, and the stream position just before the next cut
// (or the range's end) bounds the unit's last use. Segment k's input is
// built from segment k−1's positions by a strictly increasing map ψ (each
// old rank's unconsumed real positions, then the dropped tail), so the
// first cut of segment k after v is the first position whose ψ image
// reaches the first cut of segment k−1 after ψ(v). Equivalently: the cut
// after v is where the window (of the permuted unit order) of the samples
// changes, a fact the tests check against brute force.

// nextCut is the first cut of segment k's input after position v
// (v < layers[k].n); layers[k].n when none is left.
func (p *Plan) nextCut(k int, v int64) int64 {
	for j := k; j > 0; j-- {
		v = p.layers[j-1].psi(v)
	}
	e := p.base.windowCut(v)
	for j := 1; j <= k; j++ {
		e = p.layers[j-1].psiCeil(p.layers[j].n, e)
	}
	return e
}

// psi maps position v of the next segment's input to the position of this
// (closed) segment's input it was carried from, before the first segment's
// window shuffle.
func (l *layer) psi(v int64) int64 {
	if u := l.carry[l.world]; v >= u {
		return int64(l.world)*l.slots + (v - u)
	}
	lo, hi := 0, l.world // carry[lo] <= v < carry[hi]
	for hi-lo > 1 {
		mid := int(uint(lo+hi) >> 1)
		if l.carry[mid] <= v {
			lo = mid
		} else {
			hi = mid
		}
	}
	rlo, c := l.rangeOf(lo)
	return rlo + min(l.done*l.batch, c) + v - l.carry[lo]
}

// psiCeil is the least position w of the next segment's input (of length
// next) with psi(w) >= x, or next when there is none.
func (l *layer) psiCeil(next, x int64) int64 {
	if x >= l.n {
		return next
	}
	if !l.pad && x >= int64(l.world)*l.slots {
		return l.carry[l.world] + x - int64(l.world)*l.slots
	}
	r := l.rankAt(x)
	lo, c := l.rangeOf(r)
	if d := lo + min(l.done*l.batch, c); x > d {
		return l.carry[r] + x - d
	}
	return l.carry[r]
}

// rankAt is the rank whose range holds input position x < world·slots
// (DropLast) or < n (Pad).
func (l *layer) rankAt(x int64) int {
	if !l.pad {
		return int(x / l.slots)
	}
	w := int64(l.world)
	q, rem := l.n/w, l.n%w
	if x < rem*(q+1) {
		return int(x / (q + 1))
	}
	return int(rem + (x-rem*(q+1))/q)
}

// LastUse appends to dst, for each slot i of Batch(rank, step), the last
// step of this plan (step <= last < Steps()) at which rank's stream holds
// a sample of the same unit as slot i, and returns it. A loader fetches a
// unit at its first use in an epoch and may release it after that step.
//
// The bound is exact at window granularity: it is the last step at which
// rank's stream holds a sample of any unit of the same shuffle window
// (all of which lie in one contiguous stretch of the stream), so a unit
// may be kept a little past its own last sample, never released early.
// Under Pad, slots past a rank's real samples wrap to the start of its
// stream; those repeats all fall in the last step and count as new uses
// whose lifetime is that step: a unit's lifetime ends before the wrap and
// the loader fetches it again for the pad step (at most one batch per
// rank). It panics if rank or step is out of range, like Batch.
//
// It costs a few binary searches per window block the batch touches and
// allocates nothing but dst: call it next to Batch, not instead of it.
func (p *Plan) LastUse(rank int, step int64, dst []int64) []int64 {
	l := p.cur()
	if rank < 0 || rank >= l.world || step < 0 || step >= p.Steps() {
		panic(fmt.Sprintf("sampler: LastUse(rank %d, step %d) out of range: world %d, %d steps", rank, step, l.world, p.Steps()))
	}
	k := len(p.layers) - 1
	lo, c := l.rangeOf(rank)
	pos := (p.start + step) * l.batch
	var end, last int64 // stream positions [.., end) end at step last
	for i := range l.batch {
		q := pos + i
		if q >= c {
			dst = append(dst, step)
			continue
		}
		if q >= end {
			end = min(p.nextCut(k, lo+q), lo+c) - lo
			last = (end-1)/l.batch - p.start
		}
		dst = append(dst, last)
	}
	return dst
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
