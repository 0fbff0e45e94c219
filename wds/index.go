package wds

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store"
)

// maxSeekTable bounds the seek table IndexShard reads: 8 MiB is a
// million frames.
const maxSeekTable = 8 << 20

// CompressionOf returns the compression a shard's name implies: zstd for
// ".zst", none otherwise.
func CompressionOf(path string) string {
	if strings.HasSuffix(path, ".zst") {
		return manifest.CompressionZstd
	}
	return manifest.CompressionNone
}

// IndexShard builds the manifest entry of an existing shard without
// rewriting it, reading it once from start to end. compression "" means
// CompressionOf(path); chunkSize 0 means DefaultChunkSize.
//
// A plain tar shard gets chunks at sample boundaries every ~chunkSize
// bytes. A zstd shard with a seek table (the zstd seekable format) gets
// chunks made of whole frames, cut where a frame boundary is also a sample
// boundary once ~chunkSize raw bytes are in the chunk. A zstd shard
// without a seek table is one chunk: every read of any of its samples
// fetches and decompresses the whole shard, and the reader's cache holds
// it whole — repack such shards (shardstream pack) when that costs too
// much.
func IndexShard(ctx context.Context, st store.Store, path, compression string, chunkSize int64) (manifest.Shard, error) {
	if compression == "" {
		compression = CompressionOf(path)
	}
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	if chunkSize < 0 {
		return manifest.Shard{}, fmt.Errorf("wds: index %s: chunk size %d < 0", path, chunkSize)
	}
	info, err := st.Stat(ctx, path)
	if err != nil {
		return manifest.Shard{}, fmt.Errorf("wds: index %s: %w", path, err)
	}
	sh := manifest.Shard{Path: path, Size: info.Size, ETag: info.ETag, Compression: compression}
	switch compression {
	case manifest.CompressionNone:
		err = indexTar(ctx, st, &sh, chunkSize)
	case manifest.CompressionZstd:
		err = indexZstd(ctx, st, &sh, chunkSize)
	default:
		err = fmt.Errorf("unknown compression %q", compression)
	}
	if err != nil {
		return manifest.Shard{}, fmt.Errorf("wds: index %s: %w", path, err)
	}
	return sh, nil
}

func indexTar(ctx context.Context, st store.Store, sh *manifest.Shard, chunkSize int64) error {
	if sh.Size == 0 {
		return nil
	}
	rc, err := st.ReadRange(ctx, sh.Path, 0, -1)
	if err != nil {
		return err
	}
	defer rc.Close()
	starts, end, err := scanTar(ctx, rc)
	if err != nil {
		return err
	}
	if end > sh.Size {
		return fmt.Errorf("read %d bytes of a %d-byte object: it changed while indexed", end, sh.Size)
	}
	// Cut at every sample start once a chunk holds chunkSize bytes; the
	// last chunk runs to the object's end (tar end blocks, padding).
	var cuts []int64
	last := int64(0)
	for i, s := range starts {
		if i > 0 && s-last >= chunkSize { // never a chunk without samples
			cuts = append(cuts, s)
			last = s
		}
	}
	cuts = append(cuts, sh.Size)
	sh.Chunks, sh.Samples = chunksAt(cuts, cuts, starts)
	return nil
}

// chunksAt makes chunks ending at the given stored and raw offsets (the
// same for plain tar), counting the sample starts in each.
func chunksAt(storedEnds, rawEnds, starts []int64) ([]manifest.Chunk, int64) {
	var chunks []manifest.Chunk
	var off, raw, n int64
	i := 0
	for k := range storedEnds {
		first := n
		for i < len(starts) && starts[i] < rawEnds[k] {
			i++
			n++
		}
		chunks = append(chunks, manifest.Chunk{Offset: off, Size: storedEnds[k] - off, RawSize: rawEnds[k] - raw, FirstSample: first, Samples: n - first})
		off, raw = storedEnds[k], rawEnds[k]
	}
	return chunks, n
}

func indexZstd(ctx context.Context, st store.Store, sh *manifest.Shard, chunkSize int64) error {
	frames, _, err := readSeekTable(ctx, st, sh.Path, sh.Size)
	if err != nil {
		return err
	}
	if frames != nil {
		ok, err := indexFrames(ctx, st, sh, frames, chunkSize)
		if ok || err != nil {
			return err
		}
		// The table does not describe the frames: index as one chunk.
	}
	rc, err := st.ReadRange(ctx, sh.Path, 0, -1)
	if err != nil {
		return err
	}
	defer rc.Close()
	zr, err := newZstdDecoder(rc, 1, DefaultMaxRawSize)
	if err != nil {
		return err
	}
	defer zr.Close()
	cr := &countReader{ctx: ctx, r: zr}
	starts, _, err := scanTar(ctx, cr)
	if err != nil {
		return err
	}
	// The rest (tar end blocks, padding) still counts as raw bytes.
	if _, err := io.Copy(io.Discard, cr); err != nil {
		return &FormatError{Offset: cr.n, Msg: "zstd: " + err.Error()}
	}
	sh.Chunks, sh.Samples = chunksAt([]int64{sh.Size}, []int64{cr.n}, starts)
	return nil
}

// indexFrames indexes a zstd shard by the frames its seek table lists,
// decoding each frame on its own and checking it against its entry. It
// reports false (and no error) when the table does not describe the
// frames: the caller indexes the shard as one chunk instead.
func indexFrames(ctx context.Context, st store.Store, sh *manifest.Shard, frames []SeekEntry, chunkSize int64) (bool, error) {
	rc, err := st.ReadRange(ctx, sh.Path, 0, -1)
	if err != nil {
		return false, err
	}
	defer rc.Close()
	zd, err := newZstdDecoder(nil, 1, DefaultMaxRawSize)
	if err != nil {
		return false, err
	}
	defer zd.Close()
	fr := &frameReader{ctx: ctx, r: rc, frames: frames, zd: zd}
	cr := &countReader{ctx: ctx, r: fr}
	starts, _, err := scanTar(ctx, cr)
	if err == nil {
		_, err = io.Copy(io.Discard, cr) // the rest still counts as raw bytes
	}
	switch {
	case fr.mismatch:
		return false, nil
	case err != nil:
		return false, err
	}
	isStart := make(map[int64]bool, len(starts))
	for _, s := range starts {
		isStart[s] = true
	}
	var storedEnds, rawEnds []int64
	var off, raw, lastRaw int64
	for k, f := range frames {
		off += int64(f.CompressedSize)
		raw += int64(f.DecompressedSize)
		if k == len(frames)-1 || (raw-lastRaw >= chunkSize && isStart[raw] && raw > starts[0]) {
			storedEnds, rawEnds = append(storedEnds, off), append(rawEnds, raw)
			lastRaw = raw
		}
	}
	sh.Chunks, sh.Samples = chunksAt(storedEnds, rawEnds, starts)
	return true, nil
}

// frameReader reads the decompressed bytes of the frames a seek table
// lists, one frame at a time, each decoded on its own into a buffer of the
// entry's decompressed size. A frame that does not decode to exactly its
// entry's size sets mismatch and ends the stream with an error.
type frameReader struct {
	ctx      context.Context
	r        io.Reader
	frames   []SeekEntry
	zd       *zstd.Decoder // DecodeAll limited to cap(dst)
	in, out  []byte        // reused
	buf      []byte        // the unread rest of out
	mismatch bool
}

func (f *frameReader) Read(p []byte) (int, error) {
	for len(f.buf) == 0 {
		if len(f.frames) == 0 {
			return 0, io.EOF
		}
		if err := f.ctx.Err(); err != nil {
			return 0, err
		}
		e := f.frames[0]
		f.frames = f.frames[1:]
		if cap(f.in) < int(e.CompressedSize) {
			f.in = make([]byte, e.CompressedSize)
		}
		f.in = f.in[:e.CompressedSize]
		if _, err := io.ReadFull(f.r, f.in); err != nil {
			return 0, err
		}
		// A header that states another size fails before any allocation;
		// one that states none allocates the entry's size (< 4 GiB).
		var h zstd.Header
		if err := h.Decode(f.in); err != nil || (h.HasFCS && h.FrameContentSize != uint64(e.DecompressedSize)) {
			f.mismatch = true
			return 0, fmt.Errorf("zstd frame header %+v does not match its seek table entry {%d, %d}: %v", h, e.CompressedSize, e.DecompressedSize, err)
		}
		if cap(f.out) < int(e.DecompressedSize) {
			f.out = make([]byte, 0, e.DecompressedSize)
		}
		out, err := f.zd.DecodeAll(f.in, f.out[:0:e.DecompressedSize]) // cap: the entry's size
		if err != nil || len(out) != int(e.DecompressedSize) {
			f.mismatch = true
			return 0, fmt.Errorf("zstd frame does not match its seek table entry {%d, %d}: %d bytes, %v", e.CompressedSize, e.DecompressedSize, len(out), err)
		}
		f.buf = out
	}
	n := copy(p, f.buf)
	f.buf = f.buf[n:]
	return n, nil
}

// readSeekTable returns the frames listed by the seek table at the end of
// the object and the table's size, or nil frames when there is no valid
// table that accounts for the whole object.
func readSeekTable(ctx context.Context, st store.Store, path string, size int64) ([]SeekEntry, int64, error) {
	if size < seekFooterSize+skippableHeader {
		return nil, 0, nil
	}
	footer, err := readAt(ctx, st, path, size-seekFooterSize, seekFooterSize)
	if err != nil {
		return nil, 0, err
	}
	tsize, ok := SeekTableSize(footer)
	if !ok || tsize > size || tsize > maxSeekTable {
		return nil, 0, nil
	}
	table, err := readAt(ctx, st, path, size-tsize, tsize)
	if err != nil {
		return nil, 0, err
	}
	frames, err := ParseSeekTable(table)
	if err != nil || len(frames) == 0 {
		return nil, 0, nil
	}
	var sum int64
	for _, f := range frames {
		if f.CompressedSize == 0 {
			return nil, 0, nil
		}
		sum += int64(f.CompressedSize)
	}
	if sum+tsize != size {
		return nil, 0, nil
	}
	return frames, tsize, nil
}

func readAt(ctx context.Context, st store.Store, path string, off, n int64) ([]byte, error) {
	rc, err := st.ReadRange(ctx, path, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b := make([]byte, n)
	if _, err := io.ReadFull(rc, b); err != nil {
		return nil, fmt.Errorf("read [%d,+%d): %w", off, n, err)
	}
	return b, nil
}

// countReader counts the bytes read and stops when ctx ends.
type countReader struct {
	ctx context.Context
	r   io.Reader
	n   int64
}

func (c *countReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// scanTar reads a tar stream and returns the offset of every sample's
// first header (sample starts, by ParseTar's sampleRules) and the offset
// where the archive's entries end. It holds one header at a time, never
// the stream.
func scanTar(ctx context.Context, r io.Reader) (starts []int64, end int64, err error) {
	cr, ok := r.(*countReader)
	if !ok {
		cr = &countReader{ctx: ctx, r: r}
	}
	base := cr.n
	tr := tar.NewReader(cr)
	rules := newSampleRules(0, -1)
	var next int64
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return starts, next, nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, 0, ctx.Err()
			}
			return nil, 0, &FormatError{Offset: next, Msg: fmt.Sprintf("tar header after sample %d: %v", len(starts), err)}
		}
		// Headers start on block boundaries; rounding up also covers a
		// PAX global header, after which archive/tar leaves the reader
		// before its data's padding.
		hdr, pos := padded(next), cr.n-base
		size := dataSize(h)
		if size < 0 {
			return nil, 0, &FormatError{Offset: pos, Msg: fmt.Sprintf("tar entry %q has size %d", h.Name, size)}
		}
		next = pos + padded(size)
		if ok, err := rules.countable(h, pos); !ok {
			if err != nil {
				return nil, 0, err
			}
			continue
		}
		_, _, start, err := rules.add(h.Name, pos)
		if err != nil {
			return nil, 0, err
		}
		if start {
			starts = append(starts, hdr)
		}
	}
}
