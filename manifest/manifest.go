// Package manifest is a dataset's index: the shards it lists, their sizes and
// sample counts, and the chunk table a reader needs to fetch and decode parts
// of a shard without reading the whole object.
//
// A manifest is a JSON document named manifest.json at the dataset's root.
// A chunk is a byte range of a shard that holds whole samples: for a zstd
// shard it is one independent zstd frame (the seekable layout), for a plain
// tar shard a run of whole tar entries. Chunks let ranged GETs and
// decompression run in parallel and let a reader start mid-shard.
//
// The fingerprint of a manifest identifies the dataset: resume tokens are
// bound to it, so a changed dataset is never read with an old plan.
package manifest

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/shardstream/shardstream/sampler"
)

// FileName is the manifest's object name under a dataset root.
const FileName = "manifest.json"

// Version is the manifest format this package writes and reads.
const Version = 1

// Compression of a shard's bytes.
const (
	CompressionNone = "none"
	CompressionZstd = "zstd"
)

// Manifest lists a dataset's shards in storage order.
type Manifest struct {
	Version int     `json:"version"`
	Shards  []Shard `json:"shards"`
	// Replacing, when set, marks a tombstone: a writer is rewriting the
	// dataset's shards in place (pack --overwrite), so no reader may trust
	// them until it writes the new manifest. Such a manifest never
	// validates.
	Replacing string `json:"replacing,omitempty"`
}

// Tombstone is the manifest a writer puts in place before it rewrites a
// dataset's shards in place: readers opening the dataset meanwhile (or
// after the writer died) get a clear error instead of old indexes over
// new bytes.
func Tombstone(why string) ([]byte, error) {
	return json.Marshal(Manifest{Version: Version, Replacing: why})
}

// Shard is one object of the dataset.
type Shard struct {
	// Path of the object relative to the dataset root.
	Path string `json:"path"`
	// Size of the object in bytes, as stored (compressed).
	Size int64 `json:"size"`
	// ETag of the object when known (S3); a mismatch means the object
	// changed under the manifest.
	ETag string `json:"etag,omitempty"`
	// Samples is the number of samples in the shard.
	Samples int64 `json:"samples"`
	// Compression is CompressionNone or CompressionZstd.
	Compression string `json:"compression"`
	// Chunks cover the object in order, each holding whole samples.
	Chunks []Chunk `json:"chunks"`
}

// Chunk is a byte range of a shard that decodes on its own into whole tar
// entries holding whole samples.
type Chunk struct {
	// Offset and Size locate the chunk's stored bytes in the object.
	Offset int64 `json:"offset"`
	Size   int64 `json:"size"`
	// RawSize is the size after decompression (equal to Size for plain tar).
	RawSize int64 `json:"raw_size"`
	// FirstSample is the index in the shard of the chunk's first sample.
	FirstSample int64 `json:"first_sample"`
	// Samples is the number of samples that start in this chunk.
	Samples int64 `json:"samples"`
}

// ErrInvalid is wrapped by every validation error.
var ErrInvalid = errors.New("invalid manifest")

// Parse decodes and validates a manifest.
func Parse(data []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Read reads and parses a manifest of at most maxBytes bytes.
func Read(r io.Reader, maxBytes int64) (*Manifest, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxBytes+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > maxBytes {
		return nil, fmt.Errorf("%w: larger than %d bytes", ErrInvalid, maxBytes)
	}
	return Parse(data)
}

// Marshal encodes the manifest as indented JSON.
func (m *Manifest) Marshal() ([]byte, error) {
	return json.MarshalIndent(m, "", " ")
}

// Validate checks that the chunk tables cover each shard exactly and that
// sample counts add up.
func (m *Manifest) Validate() error {
	if m.Replacing != "" {
		return fmt.Errorf("%w: the dataset is being rewritten (%s): wait for that to finish, or rerun it if it died", ErrInvalid, m.Replacing)
	}
	if m.Version != Version {
		return fmt.Errorf("%w: version %d, want %d", ErrInvalid, m.Version, Version)
	}
	for i := range m.Shards {
		if err := m.Shards[i].validate(); err != nil {
			return fmt.Errorf("%w: shard %d (%q): %v", ErrInvalid, i, m.Shards[i].Path, err)
		}
	}
	return nil
}

func (s *Shard) validate() error {
	if s.Path == "" {
		return errors.New("empty path")
	}
	if s.Size < 0 || s.Samples < 0 {
		return fmt.Errorf("negative size %d or samples %d", s.Size, s.Samples)
	}
	switch s.Compression {
	case CompressionNone, CompressionZstd:
	default:
		return fmt.Errorf("unknown compression %q", s.Compression)
	}
	var off, samples int64
	for j, c := range s.Chunks {
		if c.Offset != off || c.Size <= 0 || c.RawSize < 0 || c.Samples < 0 || c.FirstSample != samples {
			return fmt.Errorf("chunk %d {offset %d size %d raw %d first %d samples %d} does not follow offset %d sample %d",
				j, c.Offset, c.Size, c.RawSize, c.FirstSample, c.Samples, off, samples)
		}
		if s.Compression == CompressionNone && c.RawSize != c.Size {
			return fmt.Errorf("chunk %d of an uncompressed shard has raw size %d != size %d", j, c.RawSize, c.Size)
		}
		off += c.Size
		samples += c.Samples
	}
	if off > s.Size {
		return fmt.Errorf("chunks end at %d, past the object size %d", off, s.Size)
	}
	if samples != s.Samples {
		return fmt.Errorf("chunks hold %d samples, shard says %d", samples, s.Samples)
	}
	return nil
}

// Fingerprint identifies the dataset: a hex SHA-256 prefix of the canonical
// encoding of the shard list.
func (m *Manifest) Fingerprint() string {
	h := sha256.New()
	enc := json.NewEncoder(h)
	_ = enc.Encode(m.Shards) // encoding a slice of plain structs cannot fail
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Units returns the planner's view of the dataset: one unit per chunk, in
// storage order. The chunk is the unit of the epoch's permutation and of
// the shuffle window, so a loader holds chunks, not whole shards.
func (m *Manifest) Units() []sampler.Unit {
	n := 0
	for _, s := range m.Shards {
		n += len(s.Chunks)
	}
	u := make([]sampler.Unit, 0, n)
	for i, s := range m.Shards {
		for _, c := range s.Chunks {
			u = append(u, sampler.Unit{Shard: int64(i), First: c.FirstSample, Samples: c.Samples})
		}
	}
	return u
}

// MaxChunkRawSize is the largest decoded size of any chunk: what one chunk
// held in memory costs at most.
func (m *Manifest) MaxChunkRawSize() int64 {
	var n int64
	for _, s := range m.Shards {
		for _, c := range s.Chunks {
			n = max(n, c.RawSize)
		}
	}
	return n
}

// TotalSamples is the number of samples in the dataset.
func (m *Manifest) TotalSamples() int64 {
	var n int64
	for _, s := range m.Shards {
		n += s.Samples
	}
	return n
}

// TotalBytes is the stored size of all shards.
func (m *Manifest) TotalBytes() int64 {
	var n int64
	for _, s := range m.Shards {
		n += s.Size
	}
	return n
}

// ChunkOf returns the index of the chunk holding sample i of the shard.
func (s *Shard) ChunkOf(i int64) int {
	lo, hi := 0, len(s.Chunks)
	for lo < hi { // first chunk whose end is past i
		mid := (lo + hi) / 2
		c := s.Chunks[mid]
		if c.FirstSample+c.Samples > i {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo
}
