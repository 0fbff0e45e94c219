package manifest

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/shardstream/shardstream/sampler"
)

func TestUnits(t *testing.T) {
	m := &Manifest{Version: Version, Shards: []Shard{
		{Path: "a", Size: 30, Samples: 5, Compression: CompressionNone, Chunks: []Chunk{
			{Offset: 0, Size: 10, RawSize: 10, FirstSample: 0, Samples: 2},
			{Offset: 10, Size: 20, RawSize: 20, FirstSample: 2, Samples: 3},
		}},
		{Path: "b", Size: 0, Samples: 0, Compression: CompressionNone},
		{Path: "c", Size: 8, Samples: 4, Compression: CompressionZstd, Chunks: []Chunk{
			{Offset: 0, Size: 8, RawSize: 40, FirstSample: 0, Samples: 4},
		}},
	}}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	want := []sampler.Unit{{Shard: 0, First: 0, Samples: 2}, {Shard: 0, First: 2, Samples: 3}, {Shard: 2, First: 0, Samples: 4}}
	if diff := cmp.Diff(want, m.Units()); diff != "" {
		t.Errorf("Units() (-want +got):\n%s", diff)
	}
	if got := m.MaxChunkRawSize(); got != 40 {
		t.Errorf("MaxChunkRawSize() = %d, want 40", got)
	}
}

func TestTombstone(t *testing.T) {
	b, err := Tombstone("pack --overwrite")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(b); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "being rewritten (pack --overwrite)") {
		t.Errorf("Parse(tombstone) = %v, want ErrInvalid saying the dataset is being rewritten", err)
	}
}
