package wds

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/shardstream/shardstream/manifest"
)

// Field is one named part of a sample ("jpg", "cls", "seg.png", …).
type Field struct {
	Name string
	Data []byte
}

// Sample is one training example: its key and its fields in tar order.
type Sample struct {
	Key    string
	Fields []Field
}

// FormatError reports bytes that are not a valid chunk.
type FormatError struct {
	// Offset in the chunk's decompressed bytes (for zstd chunks whose
	// frames do not decode: 0, the start of the compressed bytes).
	Offset int64
	Msg    string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("wds: at offset %d: %s", e.Offset, e.Msg)
}

// DefaultMaxRawSize bounds a chunk's decompressed size unless
// Decoder.MaxRawSize says otherwise: large enough for a whole 1 GiB shard
// indexed as one chunk, small enough that a zstd bomb fails fast.
const DefaultMaxRawSize = 4 << 30

// Decoder decodes chunks. The zero value is ready to use; it creates its
// zstd decoder on first use. Safe for concurrent use: zstd decoding runs
// up to GOMAXPROCS chunks at once. It needs no Close: a zstd decoder used
// only through DecodeAll holds no goroutines. Do not copy a Decoder after
// first use.
type Decoder struct {
	// MaxRawSize bounds a chunk's decompressed size in bytes; larger
	// chunks are an error. Zero means DefaultMaxRawSize.
	MaxRawSize int64

	once sync.Once
	zd   *zstd.Decoder // DecodeAll output limited to cap(dst)
	err  error
}

func (d *Decoder) zstd() (*zstd.Decoder, error) {
	d.once.Do(func() {
		d.zd, d.err = newZstdDecoder(nil, 0, d.maxRawSize())
	})
	return d.zd, d.err
}

func (d *Decoder) maxRawSize() int64 {
	if d.MaxRawSize <= 0 {
		return DefaultMaxRawSize
	}
	return d.MaxRawSize
}

// Decode decodes the chunk c of a shard from its stored bytes raw: exactly
// c.Samples samples from exactly c.RawSize decompressed bytes. It is the
// one way to decode a chunk the manifest describes.
//
// Field data alias raw (plain tar) or the decompressed buffer (zstd):
// dst's array when cap(dst) >= c.RawSize, so that a caller can pass a
// pooled buffer and knows what the samples hold on to; otherwise one new
// buffer of exactly c.RawSize bytes.
//
// A chunk that decodes to any size but c.RawSize is a *FormatError, and
// one that would decode to more stops there: a corrupt frame header or
// manifest cannot make it allocate more than c.RawSize (itself at most
// MaxRawSize).
func (d *Decoder) Decode(dst, raw []byte, compression string, c manifest.Chunk) ([]Sample, error) {
	buf, err := d.decompress(dst, raw, compression, c.RawSize)
	if err != nil {
		return nil, err
	}
	return ParseTar(buf, c.FirstSample, c.Samples)
}

// decompress returns the rawSize decompressed bytes of a chunk (see
// Decode): raw itself for plain tar.
func (d *Decoder) decompress(dst, raw []byte, compression string, rawSize int64) ([]byte, error) {
	if rawSize < 0 || rawSize > d.maxRawSize() {
		return nil, &FormatError{Offset: 0, Msg: fmt.Sprintf("chunk of %d raw bytes (limit %d)", rawSize, d.maxRawSize())}
	}
	switch compression {
	case manifest.CompressionNone, "":
		if int64(len(raw)) != rawSize {
			return nil, &FormatError{Offset: 0, Msg: fmt.Sprintf("plain chunk of %d bytes, the manifest says %d", len(raw), rawSize)}
		}
		return raw, nil
	case manifest.CompressionZstd:
		zd, err := d.zstd()
		if err != nil {
			return nil, err
		}
		if int64(cap(dst)) < rawSize {
			dst = make([]byte, 0, rawSize)
		}
		out, err := zd.DecodeAll(raw, dst[:0:rawSize]) // the cap limit: rawSize
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
			return nil, &FormatError{Offset: 0, Msg: fmt.Sprintf("zstd chunk decodes to more than the %d bytes the manifest says", rawSize)}
		}
		if err != nil {
			return nil, &FormatError{Offset: 0, Msg: "zstd: " + err.Error()}
		}
		if int64(len(out)) != rawSize {
			return nil, &FormatError{Offset: int64(len(out)), Msg: fmt.Sprintf("zstd chunk decodes to %d bytes, the manifest says %d", len(out), rawSize)}
		}
		return out, nil
	default:
		return nil, fmt.Errorf("wds: unknown compression %q", compression)
	}
}

// ParseTar groups the entries of a tar byte stream into exactly want
// samples; want < 0 accepts any number. Field data alias buf.
//
// Plain headers (see plainHeader) are read directly from buf; from the
// first header that is anything else (PAX, GNU long names, directories,
// base-256 numbers, the end-of-archive blocks, a truncated entry) on,
// archive/tar reads the rest. Both give the same samples and errors: the
// fast path only skips work archive/tar would do to the same effect
// (FuzzParseTarFast checks that).
func ParseTar(buf []byte, firstSample, want int64) ([]Sample, error) {
	g := newGrouper(firstSample, want)
	pos, err := g.plain(buf)
	if err == nil {
		err = g.archive(buf, pos)
	}
	if err != nil {
		return nil, err
	}
	return g.finish(int64(len(buf)))
}

// sampleRules are the rules that group tar entries into samples. ParseTar
// (through grouper) and the index's streaming scan (scanTar) both apply
// them, so that the index cuts chunks where the decoder finds samples:
//
//   - only regular entries count (countable); a sparse one is an error;
//   - SplitName gives an entry's sample key and field name;
//   - consecutive entries with the same key are one sample's fields, and
//     a field twice in one sample is an error;
//   - with want >= 0, more or fewer than want samples is an error.
type sampleRules struct {
	first, want int64 // shard index of the first sample (for errors); want < 0: any number
	n           int64 // samples started
	key         string
	fields      []string // of the sample being read
}

func newSampleRules(firstSample, want int64) sampleRules {
	return sampleRules{first: firstSample, want: want}
}

// countable reports whether an entry archive/tar read (its data at pos)
// is a sample's field; a sparse file is an error.
func (r *sampleRules) countable(h *tar.Header, pos int64) (bool, error) {
	if !regular(h) {
		return false, nil
	}
	if sparse(h) {
		return false, &FormatError{Offset: pos, Msg: fmt.Sprintf("tar entry %q is a sparse file (unsupported)", h.Name)}
	}
	return true, nil
}

// add files a regular entry (its data at pos) under its sample: it
// returns the entry's key and field, and whether the entry starts a new
// sample.
func (r *sampleRules) add(name string, pos int64) (key, field string, start bool, err error) {
	key, field = SplitName(name)
	if r.n > 0 && key == r.key {
		for _, f := range r.fields {
			if f == field {
				return "", "", false, &FormatError{Offset: pos, Msg: fmt.Sprintf("sample %d (%q) has field %q twice", r.first+r.n-1, key, field)}
			}
		}
		r.fields = append(r.fields, field)
		return key, field, false, nil
	}
	if r.want >= 0 && r.n >= r.want {
		return "", "", false, &FormatError{Offset: pos, Msg: fmt.Sprintf("more than the %d samples the manifest lists (sample %q)", r.want, key)}
	}
	r.n++
	r.key, r.fields = key, append(r.fields[:0], field)
	return key, field, true, nil
}

// finish checks the number of samples at the end of the entries.
func (r *sampleRules) finish(end int64) error {
	if r.want >= 0 && r.n != r.want {
		return &FormatError{Offset: end, Msg: fmt.Sprintf("%d samples, the manifest lists %d", r.n, r.want)}
	}
	return nil
}

// grouper collects the entries of a chunk in memory into samples, by
// sampleRules, their field data aliasing the chunk.
type grouper struct {
	rules sampleRules
	out   []Sample
}

func newGrouper(firstSample, want int64) *grouper {
	g := &grouper{rules: newSampleRules(firstSample, want)}
	if want > 0 && want < 1<<16 {
		g.out = make([]Sample, 0, want)
	}
	return g
}

// add files a regular entry's data (at offset pos of the chunk) under its
// sample.
func (g *grouper) add(name string, data []byte, pos int64) error {
	key, field, start, err := g.rules.add(name, pos)
	if err != nil {
		return err
	}
	if start {
		g.out = append(g.out, Sample{Key: key, Fields: []Field{{Name: field, Data: data}}})
		return nil
	}
	s := &g.out[len(g.out)-1]
	s.Fields = append(s.Fields, Field{Name: field, Data: data})
	return nil
}

func (g *grouper) finish(end int64) ([]Sample, error) {
	if err := g.rules.finish(end); err != nil {
		return nil, err
	}
	return g.out, nil
}

// archive reads the entries of buf from offset start (a header) to the
// end with archive/tar.
func (g *grouper) archive(buf []byte, start int64) error {
	if start == int64(len(buf)) {
		return nil // the fast path read everything; archive/tar would see EOF
	}
	br := bytes.NewReader(buf)
	br.Seek(start, io.SeekStart)
	tr := tar.NewReader(br)
	next := start // offset of the next header: where an error points
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return &FormatError{Offset: next, Msg: fmt.Sprintf("tar header after sample %d: %v", g.rules.first+g.rules.n, err)}
		}
		// After Next the reader sits at the entry's data; the following
		// Next seeks past it, so data is sliced without a copy.
		pos := int64(len(buf)) - int64(br.Len())
		size := dataSize(h)
		if size < 0 || size > int64(len(buf))-pos {
			return &FormatError{Offset: pos, Msg: fmt.Sprintf("tar entry %q of %d bytes runs past the chunk end %d", h.Name, size, len(buf))}
		}
		next = pos + padded(size)
		if ok, err := g.rules.countable(h, pos); !ok {
			if err != nil {
				return err
			}
			continue
		}
		if err := g.add(h.Name, buf[pos:pos+h.Size:pos+h.Size], pos); err != nil {
			return err
		}
	}
}

// SplitName splits a tar entry name into its sample key and field name:
// the key is the directory plus the base name up to its first dot, the
// field the rest after that dot ("" when the base name has no dot).
func SplitName(name string) (key, field string) {
	dir, base := "", name
	if i := strings.LastIndexByte(name, '/'); i >= 0 {
		dir, base = name[:i+1], name[i+1:]
	}
	stem, field, _ := strings.Cut(base, ".")
	return dir + stem, field
}

// EntryName is the tar entry name of a sample's field: SplitName's inverse.
func EntryName(key, field string) string {
	if field == "" {
		return key
	}
	return key + "." + field
}

// dataSize is the number of data bytes that follow an entry's header:
// none for header-only types, whatever their size field says (as
// archive/tar reads them).
func dataSize(h *tar.Header) int64 {
	switch h.Typeflag {
	case tar.TypeLink, tar.TypeSymlink, tar.TypeChar, tar.TypeBlock, tar.TypeDir, tar.TypeFifo:
		return 0
	}
	return h.Size
}

func regular(h *tar.Header) bool {
	return h.Typeflag == tar.TypeReg || h.Typeflag == tar.TypeGNUSparse
}

// sparse reports a sparse entry, whose stored bytes are not its contents.
func sparse(h *tar.Header) bool {
	if h.Typeflag == tar.TypeGNUSparse {
		return true
	}
	for k := range h.PAXRecords {
		if strings.HasPrefix(k, "GNU.sparse.") {
			return true
		}
	}
	return false
}

// padded rounds a tar offset or size up to whole 512-byte blocks.
func padded(n int64) int64 { return (n + 511) &^ 511 }
