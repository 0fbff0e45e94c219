package service

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/shardstream/shardstream/internal/leaktest"
	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/sampler"
	"github.com/shardstream/shardstream/worker"
)

// sampleView is a sample as both wire forms carry it: the columnar form
// keeps no per-sample field order, so fields are a map.
type sampleView struct {
	Shard, Index uint64
	Key          string
	Fields       map[string]string
}

func viewOfSamples(b *pb.Batch) []sampleView {
	var out []sampleView
	for _, s := range b.GetSamples() {
		v := sampleView{Shard: s.GetShard(), Index: s.GetIndex(), Key: s.GetKey(), Fields: map[string]string{}}
		for _, f := range s.GetFields() {
			v.Fields[f.GetName()] = string(f.GetData())
		}
		out = append(out, v)
	}
	return out
}

// int64s reads a packed little-endian int64 array of n values.
func int64s(name string, b []byte, n int) ([]uint64, error) {
	if len(b) != 8*n {
		return nil, fmt.Errorf("%s: %d bytes, want %d (%d int64)", name, len(b), 8*n, n)
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(b[8*i:])
	}
	return out, nil
}

// ranges checks offsets (n+1 values from 0, not decreasing, ending at the
// data's length) and returns them.
func ranges(name string, b []byte, n, size int) ([]uint64, error) {
	off, err := int64s(name, b, n+1)
	if err != nil {
		return nil, err
	}
	if off[0] != 0 || off[n] != uint64(size) {
		return nil, fmt.Errorf("%s: from %d to %d, want from 0 to %d", name, off[0], off[n], size)
	}
	for i := range n {
		if off[i] > off[i+1] {
			return nil, fmt.Errorf("%s: offset %d is %d, above the next %d", name, i, off[i], off[i+1])
		}
	}
	return off, nil
}

// viewOfColumns is the reference reader of the columnar form, as
// docs/python-client.md and the proto describe it: it checks every rule
// the client relies on.
func viewOfColumns(b *pb.Batch) ([]sampleView, error) {
	c := b.GetColumns()
	if len(b.GetSamples()) != 0 {
		return nil, fmt.Errorf("columnar batch with %d samples", len(b.GetSamples()))
	}
	n := int(c.GetCount())
	shards, err := int64s("shards", c.GetShards(), n)
	if err != nil {
		return nil, err
	}
	indices, err := int64s("indices", c.GetIndices(), n)
	if err != nil {
		return nil, err
	}
	koff, err := ranges("key_offsets", c.GetKeyOffsets(), n, len(c.GetKeys()))
	if err != nil {
		return nil, err
	}
	out := make([]sampleView, n)
	for i := range out {
		out[i] = sampleView{Shard: shards[i], Index: indices[i], Key: string(c.GetKeys()[koff[i]:koff[i+1]]), Fields: map[string]string{}}
	}
	for _, col := range c.GetFields() {
		data := col.GetData()
		if _, dup := out[0].Fields[col.GetName()]; n > 0 && dup {
			return nil, fmt.Errorf("column %q twice", col.GetName())
		}
		if col.FixedSize != nil {
			size := col.GetFixedSize()
			if len(col.GetOffsets()) != 0 || len(col.GetPresent()) != 0 || uint64(len(data)) != size*uint64(n) {
				return nil, fmt.Errorf("column %q: fixed size %d with %d offset bytes, %d present bytes, %d data bytes for %d samples", col.GetName(), size, len(col.GetOffsets()), len(col.GetPresent()), len(data), n)
			}
			for i := range out {
				out[i].Fields[col.GetName()] = string(data[uint64(i)*size : uint64(i+1)*size])
			}
			continue
		}
		off, err := ranges("column "+col.GetName()+" offsets", col.GetOffsets(), n, len(data))
		if err != nil {
			return nil, err
		}
		present := col.GetPresent()
		if len(present) != 0 && len(present) != (n+7)/8 {
			return nil, fmt.Errorf("column %q: %d present bytes for %d samples", col.GetName(), len(present), n)
		}
		for i := range out {
			has := len(present) == 0 || present[i/8]&(1<<(i%8)) != 0
			if !has {
				if off[i] != off[i+1] {
					return nil, fmt.Errorf("column %q: sample %d lacks the field but has %d bytes", col.GetName(), i, off[i+1]-off[i])
				}
				continue
			}
			out[i].Fields[col.GetName()] = string(data[off[i]:off[i+1]])
		}
	}
	return out, nil
}

// randomSamples makes n samples whose fields, drawn from a few names, are
// sometimes missing, sometimes empty, of one size per name or of any size.
func randomSamples(rng *rand.Rand, n int) ([]sampler.SampleID, []*worker.Sample) {
	names := []string{"cls", "jpg", "tokens", "json", "x.npy"}
	type shape struct {
		missing float64 // probability a sample lacks it
		fixed   int     // its size when >= 0, else random
	}
	shapes := make([]shape, len(names))
	for i := range shapes {
		shapes[i] = shape{missing: []float64{0, 0, 0.3, 1}[rng.IntN(4)], fixed: []int{-1, 0, 1, 16, 100}[rng.IntN(5)]}
	}
	ids := make([]sampler.SampleID, n)
	samples := make([]*worker.Sample, n)
	for i := range samples {
		ids[i] = sampler.SampleID{Shard: rng.Int64N(1 << 40), Index: rng.Int64N(1 << 20)}
		s := &worker.Sample{Key: fmt.Sprintf("k%0*d", rng.IntN(8), i)}
		for _, ni := range rng.Perm(len(names)) { // any field order
			if rng.Float64() < shapes[ni].missing {
				continue
			}
			size := shapes[ni].fixed
			if size < 0 {
				size = rng.IntN(3) * rng.IntN(50) // often 0: empty values
			}
			data := make([]byte, size)
			for j := range data {
				data[j] = byte(rng.Uint32())
			}
			s.Fields = append(s.Fields, worker.Field{Name: names[ni], Data: data})
		}
		samples[i] = s
	}
	return ids, samples
}

func viewOfWorker(ids []sampler.SampleID, samples []*worker.Sample) []sampleView {
	out := make([]sampleView, len(samples))
	for i, s := range samples {
		out[i] = sampleView{Shard: uint64(ids[i].Shard), Index: uint64(ids[i].Index), Key: s.Key, Fields: map[string]string{}}
		for _, f := range s.Fields {
			out[i].Fields[f.Name] = string(f.Data)
		}
	}
	return out
}

// The columnar form carries exactly the samples, for random batches with
// missing, empty, fixed-size and variable-size fields; fixed_size is set
// exactly when every sample has the field at one size, present exactly
// when some sample lacks it.
func TestColumnsOfRandom(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 12))
		n := rng.IntN(40)
		if seed%50 == 0 {
			n = 0
		}
		ids, samples := randomSamples(rng, n)
		cols, err := columnsOf(ids, samples)
		if err != nil {
			t.Fatalf("seed %d: columnsOf: %v", seed, err)
		}
		got, err := viewOfColumns(&pb.Batch{Columns: cols})
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		want := viewOfWorker(ids, samples)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("seed %d: columns differ from the samples (-want +got):\n%s", seed, diff)
		}
		for _, col := range cols.GetFields() {
			have, size, same := 0, -1, true
			for _, s := range samples {
				for _, f := range s.Fields {
					if f.Name == col.GetName() {
						have++
						if size >= 0 && size != len(f.Data) {
							same = false
						}
						size = len(f.Data)
					}
				}
			}
			if fixed := have == n && same; fixed != (col.FixedSize != nil) {
				t.Errorf("seed %d: column %q: fixed_size set = %v, want %v", seed, col.GetName(), col.FixedSize != nil, fixed)
			}
			if (have < n) != (len(col.GetPresent()) > 0) {
				t.Errorf("seed %d: column %q: %d present bytes with %d of %d samples having it", seed, col.GetName(), len(col.GetPresent()), have, n)
			}
		}
	}
}

func TestColumnsOfDuplicateField(t *testing.T) {
	s := &worker.Sample{Key: "a", Fields: []worker.Field{{Name: "x"}, {Name: "x"}}}
	if _, err := columnsOf([]sampler.SampleID{{}}, []*worker.Sample{s}); err == nil {
		t.Fatal("columnsOf(a sample with field x twice) = nil error")
	}
}

// shapeReader serves the fake reader's chunks with random fields instead
// of its fixed ones, drawn from a seed per chunk.
type shapeReader struct{ *fakeReader }

func (r shapeReader) Fetch(ctx context.Context, s, c int) (*worker.Chunk, int64, error) {
	ch, size, err := r.fakeReader.Fetch(ctx, s, c)
	if err != nil {
		return nil, 0, err
	}
	rng := rand.New(rand.NewPCG(uint64(s), uint64(c)))
	_, samples := randomSamples(rng, len(ch.Samples))
	for i := range ch.Samples {
		ch.Samples[i].Fields = samples[i].Fields
	}
	return ch, size, nil
}

// A columnar stream sends the same batches as the per-sample one: same
// steps, tokens, samples and values, strided or not; old clients, which
// do not ask, keep the per-sample form.
func TestColumnarStream(t *testing.T) {
	leaktest.Check(t)
	r := &fakeReader{m: testManifest(5, 37, 6)}
	cfg := Config{Datasets: []Dataset{{Name: "default", Manifest: r.m, Chunks: shapeReader{r}}}}
	ts := startServer(t, cfg, samplerPlanner)
	ctx := testCtx(t)
	job := &pb.JobSpec{WorldSize: 2, BatchSize: 9, Seed: 3, Window: 2}
	for rank := range uint32(2) {
		for _, stride := range []uint32{1, 3} {
			req := &pb.StreamBatchesRequest{Job: job, Rank: rank, FromStep: 1, Stride: stride}
			want, err := streamAll(ctx, ts.loader, req)
			if err != nil {
				t.Fatal(err)
			}
			req.Columnar = true
			got, err := streamAll(ctx, ts.loader, req)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) || len(want) == 0 {
				t.Fatalf("rank %d stride %d: %d columnar batches, %d per-sample", rank, stride, len(got), len(want))
			}
			for i, w := range want {
				g := got[i]
				if w.GetColumns() != nil {
					t.Fatalf("rank %d stride %d: a request without columnar got columns", rank, stride)
				}
				if g.GetStep() != w.GetStep() || g.GetResumeToken() != w.GetResumeToken() || g.GetRank() != w.GetRank() || g.GetEpoch() != w.GetEpoch() {
					t.Fatalf("rank %d batch %d: columnar step %d token %q, per-sample step %d token %q", rank, i, g.GetStep(), g.GetResumeToken(), w.GetStep(), w.GetResumeToken())
				}
				gv, err := viewOfColumns(g)
				if err != nil {
					t.Fatalf("rank %d step %d: %v", rank, g.GetStep(), err)
				}
				if diff := cmp.Diff(viewOfSamples(w), gv); diff != "" {
					t.Fatalf("rank %d step %d: columnar batch differs (-per-sample +columnar):\n%s", rank, g.GetStep(), diff)
				}
			}
		}
	}
}
