package wds

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"

	"github.com/shardstream/shardstream/manifest"
)

// testSamples returns n samples with keys in directories and with dots in
// field names, 1–3 fields each, of pseudo-random sizes (some empty, some
// larger than a tar block).
func testSamples(n int, seed uint64) []Sample {
	r := rand.New(rand.NewPCG(seed, 1))
	fields := []string{"jpg", "cls", "seg.png", "json", "tokens.npy"}
	out := make([]Sample, n)
	for i := range out {
		s := Sample{Key: fmt.Sprintf("dir%d/sub/sample_%06d", i%3, i)}
		for j, f := range fields[:1+r.IntN(3)] {
			data := make([]byte, r.IntN(3000))
			for k := range data {
				data[k] = byte(r.IntN(16) + i + j) // compressible
			}
			s.Fields = append(s.Fields, Field{Name: f, Data: data})
		}
		out[i] = s
	}
	return out
}

func writeShard(t testing.TB, samples []Sample, comp string, chunkSize int64) ([]byte, manifest.Shard) {
	t.Helper()
	var buf bytes.Buffer
	w := NewShardWriter(&buf, comp, chunkSize)
	for _, s := range samples {
		if err := w.WriteSample(s); err != nil {
			t.Fatal(err)
		}
	}
	sh, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	sh.Path = "shard.tar"
	if sh.Size != int64(buf.Len()) {
		t.Fatalf("shard size %d, wrote %d bytes", sh.Size, buf.Len())
	}
	m := manifest.Manifest{Version: manifest.Version, Shards: []manifest.Shard{sh}}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), sh
}

// decodeShard decodes every chunk of a shard and concatenates the samples.
func decodeShard(t testing.TB, d *Decoder, data []byte, sh manifest.Shard) []Sample {
	t.Helper()
	var all []Sample
	for i, c := range sh.Chunks {
		s, err := d.Decode(nil, data[c.Offset:c.Offset+c.Size], sh.Compression, c) // RawSize exact too
		if err != nil {
			t.Fatalf("chunk %d: %v", i, err)
		}
		all = append(all, s...)
	}
	return all
}

// diffSamples describes the first difference between two sample lists
// ("" if none); cmp.Diff is too slow on megabytes of field data.
func diffSamples(want, got []Sample) string {
	if len(want) != len(got) {
		return fmt.Sprintf("%d samples, want %d", len(got), len(want))
	}
	for i := range want {
		w, g := want[i], got[i]
		if w.Key != g.Key || len(w.Fields) != len(g.Fields) {
			return fmt.Sprintf("sample %d: key %q with %d fields, want %q with %d", i, g.Key, len(g.Fields), w.Key, len(w.Fields))
		}
		for j := range w.Fields {
			if w.Fields[j].Name != g.Fields[j].Name || !bytes.Equal(w.Fields[j].Data, g.Fields[j].Data) {
				return fmt.Sprintf("sample %d (%q) field %d: %q (%d bytes), want %q (%d bytes)", i, w.Key, j,
					g.Fields[j].Name, len(g.Fields[j].Data), w.Fields[j].Name, len(w.Fields[j].Data))
			}
		}
	}
	return ""
}

func TestRoundTrip(t *testing.T) {
	samples := testSamples(300, 1)
	for _, comp := range []string{manifest.CompressionNone, manifest.CompressionZstd} {
		for _, chunk := range []int64{1, 10_000, 64 << 10, 1 << 30} {
			t.Run(fmt.Sprintf("%s/%d", comp, chunk), func(t *testing.T) {
				data, sh := writeShard(t, samples, comp, chunk)
				if sh.Samples != int64(len(samples)) {
					t.Fatalf("shard has %d samples, wrote %d", sh.Samples, len(samples))
				}
				if chunk == 1 && len(sh.Chunks) != len(samples) {
					t.Errorf("chunk size 1: %d chunks, want one per sample (%d)", len(sh.Chunks), len(samples))
				}
				if chunk == 1<<30 && len(sh.Chunks) != 1 {
					t.Errorf("chunk size 1 GiB: %d chunks, want 1", len(sh.Chunks))
				}
				var d Decoder
				got := decodeShard(t, &d, data, sh)
				if diff := diffSamples(samples, got); diff != "" {
					t.Fatalf("decoded samples differ %s", diff)
				}
			})
		}
	}
}

// TestZstdStreamCompat: an ordinary streaming zstd decoder reads the whole
// multi-frame shard, skipping the seek table, as one valid tar archive.
func TestZstdStreamCompat(t *testing.T) {
	samples := testSamples(200, 2)
	data, sh := writeShard(t, samples, manifest.CompressionZstd, 20_000)
	if len(sh.Chunks) < 5 {
		t.Fatalf("only %d frames; the test wants several", len(sh.Chunks))
	}
	zr, err := zstd.NewReader(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("stream decode of the shard: %v", err)
	}
	var rawSum int64
	for _, c := range sh.Chunks {
		rawSum += c.RawSize
	}
	if int64(len(raw)) != rawSum {
		t.Fatalf("stream decoded %d bytes, chunks hold %d raw bytes", len(raw), rawSum)
	}
	got, err := ParseTar(raw, 0, int64(len(samples)))
	if err != nil {
		t.Fatal(err)
	}
	if diff := diffSamples(samples, got); diff != "" {
		t.Fatalf("stream-decoded samples differ: %s", diff)
	}
	// The seek table lists the frames.
	size, ok := SeekTableSize(data)
	if !ok {
		t.Fatal("no seek table footer at the end of the shard")
	}
	entries, err := ParseSeekTable(data[int64(len(data))-size:])
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(sh.Chunks) {
		t.Fatalf("seek table has %d entries, %d chunks", len(entries), len(sh.Chunks))
	}
	for i, e := range entries {
		c := sh.Chunks[i]
		if int64(e.CompressedSize) != c.Size || int64(e.DecompressedSize) != c.RawSize {
			t.Errorf("seek entry %d = %+v, chunk %+v", i, e, c)
		}
	}
	if end := sh.Chunks[len(sh.Chunks)-1]; end.Offset+end.Size+size != sh.Size {
		t.Errorf("chunks end at %d + seek table %d != shard size %d", end.Offset+end.Size, size, sh.Size)
	}
}

// tarOf writes entries with archive/tar in the given format.
func tarOf(t testing.TB, format tar.Format, entries ...tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range entries {
		h.Format = format
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		var body []byte
		if h.Typeflag == tar.TypeReg {
			body = []byte("data of " + h.Name)
			h.Size = int64(len(body))
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestParseNames(t *testing.T) {
	long := "very/" + string(bytes.Repeat([]byte("long-directory-name/"), 12)) + "x"
	entries := []tar.Header{
		{Name: "top/", Typeflag: tar.TypeDir},
		{Name: "a/b/x.seg.png"},
		{Name: "a/b/x.jpg"},
		{Name: "a/b/x.d/ignored", Typeflag: tar.TypeSymlink, Linkname: "x.jpg"},
		{Name: "a/b/y.jpg"},
		{Name: long + ".cls"},
		{Name: long + ".tokens.npy"},
		{Name: "noext"},
		{Name: "x.jpg"}, // same base name as a/b/x, other directory: another sample
	}
	want := []Sample{
		{Key: "a/b/x", Fields: []Field{{"seg.png", []byte("data of a/b/x.seg.png")}, {"jpg", []byte("data of a/b/x.jpg")}}},
		{Key: "a/b/y", Fields: []Field{{"jpg", []byte("data of a/b/y.jpg")}}},
		{Key: long, Fields: []Field{{"cls", []byte("data of " + long + ".cls")}, {"tokens.npy", []byte("data of " + long + ".tokens.npy")}}},
		{Key: "noext", Fields: []Field{{"", []byte("data of noext")}}},
		{Key: "x", Fields: []Field{{"jpg", []byte("data of x.jpg")}}},
	}
	for _, format := range []tar.Format{tar.FormatGNU, tar.FormatPAX} {
		t.Run(format.String(), func(t *testing.T) {
			data := tarOf(t, format, entries...)
			got, err := ParseTar(data, 0, int64(len(want)))
			if err != nil {
				t.Fatal(err)
			}
			if diff := diffSamples(want, got); diff != "" {
				t.Fatalf("samples differ: %s", diff)
			}
			z, _ := zstd.NewWriter(nil)
			defer z.Close()
			var d Decoder
			c := manifest.Chunk{RawSize: int64(len(data)), Samples: int64(len(want))}
			got, err = d.Decode(nil, z.EncodeAll(data, nil), manifest.CompressionZstd, c)
			if err != nil {
				t.Fatal(err)
			}
			if diff := diffSamples(want, got); diff != "" {
				t.Fatalf("zstd: samples differ: %s", diff)
			}
		})
	}
}

func TestSplitName(t *testing.T) {
	for _, tc := range []struct{ name, key, field string }{
		{"a/b/x.seg.png", "a/b/x", "seg.png"},
		{"x.jpg", "x", "jpg"},
		{"x", "x", ""},
		{"d.v1/x.jpg", "d.v1/x", "jpg"},
		{"d/.hidden", "d/", "hidden"},
	} {
		k, f := SplitName(tc.name)
		if k != tc.key || f != tc.field {
			t.Errorf("SplitName(%q) = %q, %q, want %q, %q", tc.name, k, f, tc.key, tc.field)
		}
	}
}

func TestWrongCount(t *testing.T) {
	data, sh := writeShard(t, testSamples(10, 3), manifest.CompressionNone, 0)
	var d Decoder
	for _, want := range []int64{9, 11, 0} {
		_, err := d.Decode(nil, data, sh.Compression, manifest.Chunk{RawSize: int64(len(data)), Samples: want})
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Errorf("want %d of 10 samples: err = %v, want a *FormatError", want, err)
		}
	}
}

func TestWriterRejects(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    []Sample
	}{
		{"dot in key", []Sample{{Key: "a.b", Fields: []Field{{"jpg", nil}}}}},
		{"slash in field", []Sample{{Key: "a", Fields: []Field{{"x/jpg", nil}}}}},
		{"no fields", []Sample{{Key: "a"}}},
		{"field twice", []Sample{{Key: "a", Fields: []Field{{"jpg", nil}, {"jpg", nil}}}}},
		{"same key twice", []Sample{{Key: "a", Fields: []Field{{"jpg", nil}}}, {Key: "a", Fields: []Field{{"cls", nil}}}}},
		{"empty name", []Sample{{Key: "", Fields: []Field{{"", nil}}}}},
	} {
		w := NewShardWriter(io.Discard, manifest.CompressionNone, 0)
		var err error
		for _, s := range tc.s {
			if err = w.WriteSample(s); err != nil {
				break
			}
		}
		if err == nil {
			t.Errorf("%s: WriteSample accepted %+v", tc.name, tc.s)
		}
	}
	if _, err := NewShardWriter(io.Discard, "gzip", 0).Close(); err == nil {
		t.Error("compression gzip accepted")
	}
}

// TestTruncated: prefixes of a chunk give an error, never a panic or a
// hang. The cuts that lose no data — inside the last entry's block
// padding or the end-of-archive blocks of a plain chunk, which
// archive/tar reads as the end — must decode to every sample.
func TestTruncated(t *testing.T) {
	var d Decoder
	// A small chunk cut at every byte; a larger one at every byte near
	// the end and every 7th before.
	for _, tc := range []struct{ samples, every int }{{6, 1}, {20, 7}} {
		samples := testSamples(tc.samples, 4)
		for _, comp := range []string{manifest.CompressionNone, manifest.CompressionZstd} {
			data, sh := writeShard(t, samples, comp, 1<<30)
			c := sh.Chunks[0]
			chunk := data[c.Offset : c.Offset+c.Size]
			lossless := len(chunk) - 1024 - 511 // plain: at most the last padding and the end blocks cut
			for n := 0; n < len(chunk); n++ {
				if n < len(chunk)-2048 && n%tc.every != 0 {
					continue
				}
				cut := c
				if comp == manifest.CompressionNone {
					cut.RawSize = int64(n) // a manifest that agrees: ParseTar sees the cut
				}
				got, err := d.Decode(nil, chunk[:n], comp, cut)
				if err == nil {
					if comp == manifest.CompressionNone && n >= lossless {
						if diff := diffSamples(samples, got); diff != "" {
							t.Fatalf("cut at %d of %d decoded without error: %s", n, len(chunk), diff)
						}
						continue
					}
					t.Fatalf("%s: chunk cut to %d of %d bytes decoded to %d samples without error", comp, n, len(chunk), len(got))
				}
				var fe *FormatError
				if !errors.As(err, &fe) {
					t.Fatalf("%s: cut to %d: %v is not a *FormatError", comp, n, err)
				}
			}
		}
	}
}

func TestCorruptZstd(t *testing.T) {
	samples := testSamples(20, 5)
	data, sh := writeShard(t, samples, manifest.CompressionZstd, 1<<30)
	c := sh.Chunks[0]
	var d Decoder
	for i := 0; i < int(c.Size); i += 7 {
		bad := bytes.Clone(data[c.Offset : c.Offset+c.Size])
		bad[i] ^= 0x5a
		got, err := d.Decode(nil, bad, manifest.CompressionZstd, c)
		if err == nil {
			// The content checksum catches a changed payload; a flip
			// that still decodes must decode to the same samples.
			if diff := diffSamples(samples, got); diff != "" {
				t.Fatalf("byte %d flipped: decoded without error to other samples: %s", i, diff)
			}
			continue
		}
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Fatalf("byte %d flipped: %v is not a *FormatError", i, err)
		}
	}
}

func TestSeekTable(t *testing.T) {
	entries := []SeekEntry{{100, 4000}, {7, 9}, {1 << 31, 1<<32 - 1}}
	b := AppendSeekTable([]byte("prefix"), entries)
	size, ok := SeekTableSize(b)
	if !ok || size != int64(len(b)-len("prefix")) {
		t.Fatalf("SeekTableSize = %d, %v, want %d, true", size, ok, len(b)-len("prefix"))
	}
	got, err := ParseSeekTable(b[len("prefix"):])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(entries, got); diff != "" {
		t.Fatal(diff)
	}
	if _, ok := SeekTableSize([]byte("not a seek table")); ok {
		t.Error("SeekTableSize found a footer in plain text")
	}
}

// TestParallelFrames: frames compressed in parallel give the same bytes
// and chunk table as frames compressed one by one.
func TestParallelFrames(t *testing.T) {
	samples := testSamples(400, 12)
	want, wantSh := writeShard(t, samples, manifest.CompressionZstd, 10_000)
	enc, err := newEncoder(4)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	var buf bytes.Buffer
	w := newShardWriter(&buf, manifest.CompressionZstd, 10_000, enc, 4)
	for _, s := range samples {
		if err := w.WriteSample(s); err != nil {
			t.Fatal(err)
		}
	}
	sh, err := w.Close()
	if err != nil {
		t.Fatal(err)
	}
	sh.Path = wantSh.Path
	if diff := cmp.Diff(wantSh, sh); diff != "" {
		t.Errorf("chunk table with 4 frames at once differs:\n%s", diff)
	}
	if !bytes.Equal(want, buf.Bytes()) {
		t.Error("shard bytes with 4 frames at once differ from one at a time")
	}
}

// TestDecodeBounded: Decoder.Decode decodes every chunk a writer made from
// exactly the manifest's RawSize, and a chunk whose frame claims (or
// decodes to) more than RawSize fails without allocating what it claims.
func TestDecodeBounded(t *testing.T) {
	samples := testSamples(200, 7)
	for _, comp := range []string{manifest.CompressionNone, manifest.CompressionZstd} {
		data, sh := writeShard(t, samples, comp, 20_000)
		var d Decoder
		var got []Sample
		for i, c := range sh.Chunks {
			s, err := d.Decode(nil, data[c.Offset:c.Offset+c.Size], comp, c)
			if err != nil {
				t.Fatalf("%s chunk %d: %v", comp, i, err)
			}
			got = append(got, s...)
			for _, delta := range []int64{-1, 1} {
				wrong := c
				wrong.RawSize += delta
				var fe *FormatError
				if _, err := d.Decode(nil, data[c.Offset:c.Offset+c.Size], comp, wrong); !errors.As(err, &fe) {
					t.Errorf("%s chunk %d with RawSize %+d: err = %v, want a *FormatError", comp, i, delta, err)
				}
			}
		}
		if diff := diffSamples(samples, got); diff != "" {
			t.Fatalf("%s: Decode samples differ: %s", comp, diff)
		}
	}

	// 64 MiB of zeros compress to a few kB. A manifest saying 1 MiB must
	// not cost 64 MiB, whether the frame header states its size (EncodeAll)
	// or not (a streaming encoder).
	zeros := make([]byte, 64<<20)
	enc, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	withSize := enc.EncodeAll(zeros, nil)
	var stream bytes.Buffer
	sw, err := zstd.NewWriter(&stream)
	if err != nil {
		t.Fatal(err)
	}
	sw.Write(zeros)
	sw.Close()
	enc.Close()
	zeros = nil
	for name, frame := range map[string][]byte{"content size in header": withSize, "streamed": stream.Bytes()} {
		var d Decoder
		d.decompress(nil, nil, manifest.CompressionZstd, 0) // create the decoder outside the measurement
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := d.decompress(nil, frame, manifest.CompressionZstd, 1<<20)
		runtime.ReadMemStats(&after)
		var fe *FormatError
		if !errors.As(err, &fe) {
			t.Errorf("%s: 64 MiB frame as a 1 MiB chunk: err = %v, want a *FormatError", name, err)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
			t.Errorf("%s: decoding a 64 MiB frame as a 1 MiB chunk allocated %d MiB, want a bound near 1 MiB", name, alloc>>20)
		}
	}
}

// TestDecodeIntoDst: a zstd chunk decodes into dst when dst has room for
// its RawSize (the read path passes a pooled buffer and keeps it as the
// samples' owner), and into a buffer of its own when not.
func TestDecodeIntoDst(t *testing.T) {
	samples := testSamples(20, 8)
	data, sh := writeShard(t, samples, manifest.CompressionZstd, 1<<30)
	c := sh.Chunks[0]
	raw := data[c.Offset : c.Offset+c.Size]
	var d Decoder
	for _, tc := range []struct {
		capacity int64
		inDst    bool
	}{{c.RawSize, true}, {c.RawSize + 4096, true}, {c.RawSize - 1, false}} {
		dst := make([]byte, 7, tc.capacity) // a length is ignored
		got, err := d.Decode(dst, raw, manifest.CompressionZstd, c)
		if err != nil {
			t.Fatalf("cap(dst) %d: %v", tc.capacity, err)
		}
		if diff := diffSamples(samples, got); diff != "" {
			t.Fatalf("cap(dst) %d: samples differ: %s", tc.capacity, diff)
		}
		field := got[0].Fields[0].Data
		full := dst[:cap(dst)]
		in := &field[0] == &full[512] // the first sample's data follows its header
		if in != tc.inDst {
			t.Errorf("cap(dst) %d (RawSize %d): samples in dst = %v, want %v", tc.capacity, c.RawSize, in, tc.inDst)
		}
	}
}
