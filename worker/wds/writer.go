package wds

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/shardstream/shardstream/manifest"
)

// DefaultChunkSize is the raw (uncompressed) size at which a writer closes
// a chunk when asked for size 0: a few ranged GETs' worth, small enough to
// start reading mid-shard cheaply, large enough that zstd compresses well
// and the chunk table stays small.
const DefaultChunkSize = 8 << 20

// entryTime is every entry's modification time: shards are reproducible
// from their samples.
var entryTime = time.Unix(0, 0)

// ShardWriter writes one shard: samples as tar entries, cut into chunks at
// sample boundaries, each zstd chunk one independent frame. Not safe for
// concurrent use.
type ShardWriter struct {
	w         io.Writer
	comp      string
	chunkSize int64
	enc       *zstd.Encoder
	ownEnc    bool

	raw     bytes.Buffer // tar bytes of the open chunk
	tw      *tar.Writer
	out     []byte // compressed frame, reused
	off     int64  // bytes written to w
	flushed int64  // raw bytes in closed chunks
	shard   manifest.Shard
	first   int64 // first sample of the open chunk
	lastKey string
	seek    []SeekEntry
	err     error
	closed  bool
}

// NewShardWriter returns a writer of one shard to w. compression is
// manifest.CompressionNone or CompressionZstd; chunkSize is the raw size
// in bytes after which a chunk ends at the next sample boundary (0:
// DefaultChunkSize). Errors in the arguments surface at the first
// WriteSample or Close.
func NewShardWriter(w io.Writer, compression string, chunkSize int64) *ShardWriter {
	return newShardWriter(w, compression, chunkSize, nil)
}

func newShardWriter(w io.Writer, compression string, chunkSize int64, enc *zstd.Encoder) *ShardWriter {
	sw := &ShardWriter{w: w, comp: compression, chunkSize: chunkSize, enc: enc}
	sw.tw = tar.NewWriter(&sw.raw)
	sw.shard.Compression = compression
	if chunkSize == 0 {
		sw.chunkSize = DefaultChunkSize
	}
	switch {
	case chunkSize < 0:
		sw.err = fmt.Errorf("wds: chunk size %d < 0", chunkSize)
	case compression == manifest.CompressionNone:
	case compression == manifest.CompressionZstd:
		if sw.enc == nil {
			sw.enc, sw.err = newEncoder()
			sw.ownEnc = true
		}
	default:
		sw.err = fmt.Errorf("wds: unknown compression %q", compression)
	}
	return sw
}

// newEncoder returns the encoder of zstd chunks. EncodeAll is safe for
// concurrent use. Level: see BenchmarkEncode and docs/format.md.
func newEncoder() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(1))
}

// WriteSample appends one sample. Its key must differ from the previous
// sample's (consecutive entries with one key are one sample), and every
// key and field name must survive the WebDataset naming rule: the key's
// base name has no dot, field names have no slash, no field twice.
func (sw *ShardWriter) WriteSample(s Sample) error {
	if sw.err != nil {
		return sw.err
	}
	if sw.closed {
		return errors.New("wds: WriteSample after Close")
	}
	if err := checkSample(s); err != nil {
		return err
	}
	if sw.shard.Samples > 0 && s.Key == sw.lastKey {
		return fmt.Errorf("wds: sample %q follows a sample with the same key; they would read back as one", s.Key)
	}
	// A chunk closes before the next sample, not after the last one, so
	// the tar end blocks written by Close always join a chunk that holds
	// samples.
	if int64(sw.raw.Len()) >= sw.chunkSize {
		if sw.err = sw.flush(); sw.err != nil {
			return sw.err
		}
	}
	for _, f := range s.Fields {
		h := &tar.Header{Typeflag: tar.TypeReg, Name: EntryName(s.Key, f.Name), Size: int64(len(f.Data)), Mode: 0o644, ModTime: entryTime}
		if err := sw.tw.WriteHeader(h); err != nil {
			sw.err = fmt.Errorf("wds: sample %q field %q: %w", s.Key, f.Name, err)
			return sw.err
		}
		if _, err := sw.tw.Write(f.Data); err != nil {
			sw.err = fmt.Errorf("wds: sample %q field %q: %w", s.Key, f.Name, err)
			return sw.err
		}
	}
	if err := sw.tw.Flush(); err != nil { // the padding of the last entry
		sw.err = err
		return err
	}
	sw.shard.Samples++
	sw.lastKey = s.Key
	return nil
}

func checkSample(s Sample) error {
	if len(s.Fields) == 0 {
		return fmt.Errorf("wds: sample %q has no fields", s.Key)
	}
	for i, f := range s.Fields {
		name := EntryName(s.Key, f.Name)
		if k, fl := SplitName(name); name == "" || k != s.Key || fl != f.Name {
			return fmt.Errorf("wds: sample %q field %q: entry %q would read back as sample %q field %q", s.Key, f.Name, name, k, fl)
		}
		for _, g := range s.Fields[:i] {
			if g.Name == f.Name {
				return fmt.Errorf("wds: sample %q has field %q twice", s.Key, f.Name)
			}
		}
	}
	return nil
}

// flush closes the open chunk: writes it (compressed as one frame for
// zstd) and adds it to the chunk table.
func (sw *ShardWriter) flush() error {
	data := sw.raw.Bytes()
	if len(data) == 0 {
		return nil
	}
	stored := data
	if sw.comp == manifest.CompressionZstd {
		sw.out = sw.enc.EncodeAll(data, sw.out[:0])
		stored = sw.out
		if !fitsSeekEntry(int64(len(stored)), int64(len(data))) {
			return fmt.Errorf("wds: chunk of %d raw bytes does not fit the zstd seek table's 32-bit sizes", len(data))
		}
		sw.seek = append(sw.seek, SeekEntry{CompressedSize: uint32(len(stored)), DecompressedSize: uint32(len(data))})
	}
	if _, err := sw.w.Write(stored); err != nil {
		return fmt.Errorf("wds: write chunk at offset %d: %w", sw.off, err)
	}
	sw.shard.Chunks = append(sw.shard.Chunks, manifest.Chunk{
		Offset: sw.off, Size: int64(len(stored)), RawSize: int64(len(data)),
		FirstSample: sw.first, Samples: sw.shard.Samples - sw.first,
	})
	sw.off += int64(len(stored))
	sw.flushed += int64(len(data))
	sw.first = sw.shard.Samples
	sw.raw.Reset()
	return nil
}

// Samples is the number of samples written so far.
func (sw *ShardWriter) Samples() int64 { return sw.shard.Samples }

// Size estimates the shard's stored size so far: bytes written plus the
// open chunk, scaled by the compression ratio seen so far.
func (sw *ShardWriter) Size() int64 {
	open := int64(sw.raw.Len())
	if sw.comp == manifest.CompressionZstd && sw.flushed > 0 {
		open = int64(float64(open) * float64(sw.off) / float64(sw.flushed))
	}
	return sw.off + open
}

// Close ends the tar archive, writes the last chunk and, for zstd, the
// seek table, and returns the shard's manifest entry (Path empty for the
// caller to fill). It does not close the underlying writer.
func (sw *ShardWriter) Close() (manifest.Shard, error) {
	if sw.closed {
		return manifest.Shard{}, errors.New("wds: Close twice")
	}
	sw.closed = true
	if sw.ownEnc && sw.enc != nil {
		defer sw.enc.Close()
	}
	if sw.err != nil {
		return manifest.Shard{}, sw.err
	}
	if err := sw.tw.Close(); err != nil {
		return manifest.Shard{}, err
	}
	if err := sw.flush(); err != nil {
		return manifest.Shard{}, err
	}
	if sw.comp == manifest.CompressionZstd {
		t := AppendSeekTable(nil, sw.seek)
		if _, err := sw.w.Write(t); err != nil {
			return manifest.Shard{}, fmt.Errorf("wds: write seek table at offset %d: %w", sw.off, err)
		}
		sw.off += int64(len(t))
	}
	sw.shard.Size = sw.off
	return sw.shard, nil
}
