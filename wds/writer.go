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
	conc      int         // zstd frames compressed at once; 1: inline
	pending   []*frameJob // frames being compressed, in shard order
	pendRaw   int64       // raw bytes in pending

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
	return newShardWriter(w, compression, chunkSize, nil, 1)
}

// newShardWriter is NewShardWriter with a shared encoder (nil: its own)
// compressing up to conc frames at once; enc must allow conc concurrent
// EncodeAll calls.
func newShardWriter(w io.Writer, compression string, chunkSize int64, enc *zstd.Encoder, conc int) *ShardWriter {
	sw := &ShardWriter{w: w, comp: compression, chunkSize: chunkSize, enc: enc, conc: max(conc, 1)}
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
			sw.enc, sw.err = newEncoder(sw.conc)
			sw.ownEnc = true
		}
	default:
		sw.err = fmt.Errorf("wds: unknown compression %q", compression)
	}
	return sw
}

// newEncoder returns the encoder of zstd chunks, good for conc EncodeAll
// calls at once (more wait for one). Level: see BenchmarkEncode and
// docs/format.md.
func newEncoder(conc int) (*zstd.Encoder, error) {
	return zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedDefault), zstd.WithEncoderConcurrency(conc))
}

// frameJob is one chunk's raw bytes on their way to a zstd frame.
type frameJob struct {
	rawSize        int64
	first, samples int64
	done           chan []byte // the frame; buffered, so an abandoned job ends
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
// zstd) and adds it to the chunk table. With conc > 1 the frame is
// compressed in the background and written, in order, once the frames
// before it are and no more than conc are in flight.
func (sw *ShardWriter) flush() error {
	data := sw.raw.Bytes()
	if len(data) == 0 {
		return nil
	}
	first, n := sw.first, sw.shard.Samples-sw.first
	sw.first = sw.shard.Samples
	switch {
	case sw.comp != manifest.CompressionZstd:
		err := sw.writeChunk(data, int64(len(data)), first, n)
		sw.raw.Reset()
		return err
	case sw.conc == 1:
		sw.out = sw.enc.EncodeAll(data, sw.out[:0])
		err := sw.writeChunk(sw.out, int64(len(data)), first, n)
		sw.raw.Reset()
		return err
	}
	// The job owns data; the tar writer goes on in a fresh buffer.
	job := &frameJob{rawSize: int64(len(data)), first: first, samples: n, done: make(chan []byte, 1)}
	go func(enc *zstd.Encoder) { job.done <- enc.EncodeAll(data, nil) }(sw.enc)
	sw.pending = append(sw.pending, job)
	sw.pendRaw += job.rawSize
	sw.raw = *bytes.NewBuffer(make([]byte, 0, min(sw.chunkSize+sw.chunkSize/8, 64<<20)))
	return sw.drain(sw.conc)
}

// drain writes finished frames, in order, until at most keep are pending.
func (sw *ShardWriter) drain(keep int) error {
	var err error
	for len(sw.pending) > keep {
		job := sw.pending[0]
		sw.pending = sw.pending[1:]
		sw.pendRaw -= job.rawSize
		frame := <-job.done
		if err == nil {
			err = sw.writeChunk(frame, job.rawSize, job.first, job.samples)
		}
	}
	return err
}

// writeChunk writes one chunk's stored bytes and adds it to the chunk
// table (and, for zstd, the seek table).
func (sw *ShardWriter) writeChunk(stored []byte, rawSize, first, samples int64) error {
	if sw.comp == manifest.CompressionZstd {
		if !fitsSeekEntry(int64(len(stored)), rawSize) {
			return fmt.Errorf("wds: chunk of %d raw bytes does not fit the zstd seek table's 32-bit sizes", rawSize)
		}
		sw.seek = append(sw.seek, SeekEntry{CompressedSize: uint32(len(stored)), DecompressedSize: uint32(rawSize)})
	}
	if _, err := sw.w.Write(stored); err != nil {
		return fmt.Errorf("wds: write chunk at offset %d: %w", sw.off, err)
	}
	sw.shard.Chunks = append(sw.shard.Chunks, manifest.Chunk{
		Offset: sw.off, Size: int64(len(stored)), RawSize: rawSize,
		FirstSample: first, Samples: samples,
	})
	sw.off += int64(len(stored))
	sw.flushed += rawSize
	return nil
}

// Samples is the number of samples written so far.
func (sw *ShardWriter) Samples() int64 { return sw.shard.Samples }

// Size estimates the shard's stored size so far: bytes written plus the
// open chunk, scaled by the compression ratio seen so far.
func (sw *ShardWriter) Size() int64 {
	open := int64(sw.raw.Len()) + sw.pendRaw
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
		sw.drain(0) // wait for the frames in flight
		return manifest.Shard{}, sw.err
	}
	err := sw.tw.Close()
	if err == nil {
		err = sw.flush()
	}
	if derr := sw.drain(0); err == nil {
		err = derr
	}
	if err != nil {
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
