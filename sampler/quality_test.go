package sampler

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/shardstream/shardstream/shuffle"
)

// qualityData is a dataset of shards × units of samples each: every shard
// is cut into units of equal size, like a manifest's chunks.
type qualityData struct {
	shards, units int
	samples       int64 // per unit
}

func (d qualityData) String() string {
	return fmt.Sprintf("%d shards × %d units × %d", d.shards, d.units, d.samples)
}

// measure plans job over d (in units, or one unit per shard when whole)
// and measures the delivery order: step by step, rank by rank within a
// step — the order the whole job sees samples.
func (d qualityData) measure(t testing.TB, whole bool, job Job, world, batch int) shuffle.Quality {
	perShard := int64(d.units) * d.samples
	units := chunked(d.shards, d.units, d.samples)
	if whole {
		counts := make([]int64, d.shards)
		for i := range counts {
			counts[i] = perShard
		}
		units = ShardUnits(counts)
	}
	p := mustNew(t, units, job, nil, world, batch)
	order := make([]int64, 0, p.Samples())
	ids := make([]SampleID, 0, batch)
	for s := range p.Steps() {
		for r := range world {
			ids = p.Batch(r, s, ids[:0])
			for _, id := range ids {
				order = append(order, id.Shard*perShard+id.Index)
			}
		}
	}
	return shuffle.Measure(order, func(pos int64) int64 { return pos / perShard }, batch)
}

// todayWindow is the window of the planner that shuffled whole shards
// (token version 1), in shards: the baseline DefaultWindow must match.
const todayWindow = 4

// qualityConfigs are the datasets, world and batch sizes the default
// window was chosen on (docs/planner.md).
var (
	qualityDatas   = []qualityData{{64, 8, 500}, {16, 64, 500}}
	qualityWorlds  = []int{1, 8}
	qualityBatches = []int{64, 256}
)

// TestWindowQuality measures, for every dataset, world and batch size
// above, the plan with windows of 1..32 units next to today's planner
// (whole shards, window 4), and prints the table of docs/planner.md:
//
//	go test ./sampler -run WindowQuality -v
//
// Without -v it measures only DefaultWindow (the table takes about 6 s).
// It asserts that DefaultWindow is at least as good as today's planner on
// shards per batch (within 3%) and displacement, and that every plan
// shuffles at all. Displacement is good when close to 1/3, its value for a
// uniform permutation (a permutation of 16 shards can land well above it:
// anti-correlated with storage order, not better shuffled), so the check
// is |d − 1/3| <= |today − 1/3| + 0.005.
func TestWindowQuality(t *testing.T) {
	windows := []int{1, 2, 4, 8, 16, 32}
	if !testing.Verbose() {
		windows = []int{DefaultWindow}
	}
	var tab strings.Builder
	fmt.Fprintf(&tab, "| dataset | world × batch | today (4 shards) |")
	for _, w := range windows {
		fmt.Fprintf(&tab, " W=%d |", w)
	}
	fmt.Fprintf(&tab, "\n| --- | --- | --- |%s\n", strings.Repeat(" --- |", len(windows)))
	for _, d := range qualityDatas {
		for _, world := range qualityWorlds {
			for _, batch := range qualityBatches {
				job := Job{Seed: 1, Epoch: 0, Window: todayWindow, Policy: DropLast}
				today := d.measure(t, true, job, world, batch)
				fmt.Fprintf(&tab, "| %v | %d × %d | %s |", d, world, batch, cell(today))
				for _, w := range windows {
					job.Window = w
					q := d.measure(t, false, job, world, batch)
					fmt.Fprintf(&tab, " %s |", cell(q))
					if q.Spearman > 0.5 || q.Displacement < 0.1 {
						t.Errorf("%v, %d × %d, window %d: %v: the plan is close to storage order", d, world, batch, w, q)
					}
					if w == DefaultWindow {
						if q.ShardsPerBatch < 0.97*today.ShardsPerBatch || offUniform(q) > offUniform(today)+0.005 {
							t.Errorf("%v, %d × %d: default window %d: %v; worse than today's %v", d, world, batch, w, q, today)
						}
					}
				}
				fmt.Fprintln(&tab)
			}
		}
	}
	t.Logf("shards per batch / displacement; default window %d units\n%s", DefaultWindow, tab.String())
}

// offUniform is how far q's displacement is from a uniform permutation's.
func offUniform(q shuffle.Quality) float64 { return math.Abs(q.Displacement - 1.0/3) }

func cell(q shuffle.Quality) string {
	return fmt.Sprintf("%.2f / %.3f", q.ShardsPerBatch, q.Displacement)
}
