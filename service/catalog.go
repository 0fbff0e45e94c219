package service

import (
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/sampler"
)

// dataset is a served dataset with what planning needs computed once.
type dataset struct {
	name        string
	manifest    *manifest.Manifest
	chunks      ChunkReader
	fingerprint string
	units       []sampler.Unit // one per chunk: what the planner permutes
	maxChunk    int64          // the largest chunk's decoded size
	bytes       int64          // stored bytes of all shards
	// minUnitSamples is the fewest samples of a non-empty unit (0: none).
	minUnitSamples int64
	// maxUnitSamples is the most samples of a unit; samples of all units.
	maxUnitSamples, samples int64
	// sampleBytes estimates a sample's decoded bytes: the chunks' raw
	// bytes over the samples, rounded up (at least 1).
	sampleBytes int64
}

// catalog is the set of served datasets, looked up by the name a
// JobSpec or GetDatasetRequest gives.
type catalog struct {
	byName map[string]*dataset
	names  []string
}

func newCatalog(ds []Dataset) *catalog {
	c := &catalog{byName: make(map[string]*dataset, len(ds))}
	for _, d := range ds {
		units := d.Manifest.Units()
		var minSamples, maxSamples, samples, raw int64
		for _, u := range units {
			if u.Samples > 0 && (minSamples == 0 || u.Samples < minSamples) {
				minSamples = u.Samples
			}
			maxSamples = max(maxSamples, u.Samples)
			samples += u.Samples
		}
		for _, sh := range d.Manifest.Shards {
			for _, c := range sh.Chunks {
				raw += c.RawSize
			}
		}
		c.byName[d.Name] = &dataset{
			name:           d.Name,
			manifest:       d.Manifest,
			chunks:         d.Chunks,
			fingerprint:    d.Manifest.Fingerprint(),
			units:          units,
			maxChunk:       d.Manifest.MaxChunkRawSize(),
			bytes:          d.Manifest.TotalBytes(),
			minUnitSamples: minSamples,
			maxUnitSamples: maxSamples,
			samples:        samples,
			sampleBytes:    max(1, (raw+max(samples, 1)-1)/max(samples, 1)),
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
