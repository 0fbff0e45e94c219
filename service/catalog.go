package service

import (
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/shardstream/shardstream/manifest"
)

// dataset is a served dataset with what planning needs computed once.
type dataset struct {
	name        string
	manifest    *manifest.Manifest
	chunks      ChunkReader
	fingerprint string
	counts      []int64
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
