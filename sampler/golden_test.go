package sampler

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/*.golden from the current planner")

// TestGolden pins small plans — including their resume tokens, an elastic
// resume and every slot's LastUse (printed as shard/index@last) — so that
// any change to the order a job sees is deliberate: tokens in checkpoints
// must keep meaning the same thing. The shards are cut into several units
// (empty ones included) so that the unit permutation and windows of units
// are what is pinned. Run `go test ./sampler -run Golden -rewrite` only
// for an intended change.
func TestGolden(t *testing.T) {
	counts := []int64{5, 0, 7, 3, 6, 1, 4}
	units := []Unit{
		{0, 0, 2}, {0, 2, 3},
		{1, 0, 0},
		{2, 0, 3}, {2, 3, 0}, {2, 3, 4},
		{3, 0, 3},
		{4, 0, 2}, {4, 2, 2}, {4, 4, 2},
		{5, 0, 1},
		{6, 0, 1}, {6, 1, 3},
	}
	var buf bytes.Buffer
	for _, c := range []struct {
		job          Job
		world, batch int
		resize       [2]int // world, batch after step 1; zero: no resize
	}{
		{Job{Fingerprint: "0123456789abcdef", Seed: 1, Epoch: 0, Window: 3, Policy: DropLast}, 2, 3, [2]int{}},
		{Job{Fingerprint: "0123456789abcdef", Seed: 1, Epoch: 1, Window: 3, Policy: DropLast}, 2, 3, [2]int{}},
		{Job{Fingerprint: "0123456789abcdef", Seed: 2, Epoch: 0, Window: 4, Policy: Pad}, 3, 4, [2]int{}},
		{Job{Fingerprint: "0123456789abcdef", Seed: 1, Epoch: 0, Window: 3, Policy: DropLast}, 2, 3, [2]int{3, 2}},
		{Job{Fingerprint: "0123456789abcdef", Seed: 2, Epoch: 0, Window: 4, Policy: Pad}, 3, 4, [2]int{2, 5}},
	} {
		p := mustNew(t, units, c.job, nil, c.world, c.batch)
		fmt.Fprintf(&buf, "counts=%v units=%v job=%+v world=%d batch=%d\n", counts, units, c.job, c.world, c.batch)
		if c.resize != [2]int{} {
			tok := p.Token(1)
			fmt.Fprintf(&buf, "after step 1, token %s, resize to world=%d batch=%d\n", tok, c.resize[0], c.resize[1])
			p = mustNew(t, units, c.job, &tok, c.resize[0], c.resize[1])
		}
		fmt.Fprintf(&buf, "steps=%d samples=%d dropped=%d padded=%d\n", p.Steps(), p.Samples(), p.Dropped(), p.Padded())
		for s := range p.Steps() {
			for r := range p.WorldSize() {
				fmt.Fprintf(&buf, "  step %d rank %d:", s, r)
				last := p.LastUse(r, s, nil)
				for i, id := range p.Batch(r, s, nil) {
					fmt.Fprintf(&buf, " %d/%d@%d", id.Shard, id.Index, last[i])
				}
				fmt.Fprintln(&buf)
			}
		}
		fmt.Fprintf(&buf, "end token %s\n\n", p.Token(p.Steps()))
	}
	path := filepath.Join("testdata", "plan.golden")
	if *rewrite {
		if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -rewrite to create it)", err)
	}
	if diff := cmp.Diff(string(want), buf.String()); diff != "" {
		t.Fatalf("plans differ from %s (-want +got):\n%s", path, diff)
	}
}
