package wds

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/shardstream/shardstream/manifest"
)

// benchChunk is an 8 MiB tar chunk of samples that compress about like
// tokenized text (bytes drawn from a small alphabet).
func benchChunk(b *testing.B) ([]byte, int64) {
	data, sh := writeShard(b, testSamples(6000, 21), manifest.CompressionNone, 1<<30)
	return data[:sh.Chunks[0].Size], sh.Chunks[0].Samples
}

// BenchmarkEncode compares the encoder levels for a chunk: the choice of
// newEncoder (docs/format.md has the figures).
func BenchmarkEncode(b *testing.B) {
	tokens, _ := benchChunk(b)
	for _, in := range []struct {
		name string
		raw  []byte
	}{{"tokens", tokens[:8<<20]}, {"text", goSource(b, 8<<20)}} {
		for _, level := range []zstd.EncoderLevel{zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression} {
			b.Run(in.name+"/"+level.String(), func(b *testing.B) { benchEncode(b, in.raw, level) })
		}
	}
}

// goSource returns about n bytes of Go source from GOROOT: text that
// compresses like JSON or captions do.
func goSource(b *testing.B, n int) []byte {
	var buf bytes.Buffer
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		b.Fatalf("go env GOROOT: %v", err)
	}
	root := filepath.Join(strings.TrimSpace(string(goroot)), "src")
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || buf.Len() >= n {
			return fs.SkipAll
		}
		if strings.HasSuffix(p, ".go") {
			data, _ := os.ReadFile(p)
			buf.Write(data)
		}
		return nil
	})
	if buf.Len() < n {
		b.Skipf("only %d bytes of Go source under %s", buf.Len(), root)
	}
	return buf.Bytes()[:n]
}

func benchEncode(b *testing.B, raw []byte, level zstd.EncoderLevel) {
	enc, _ := zstd.NewWriter(nil, zstd.WithEncoderLevel(level), zstd.WithEncoderConcurrency(1))
	defer enc.Close()
	var out []byte
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		out = enc.EncodeAll(raw, out[:0])
	}
	b.ReportMetric(float64(len(raw))/float64(len(out)), "ratio")
	dec, _ := zstd.NewReader(nil)
	defer dec.Close()
	if _, err := dec.DecodeAll(out, nil); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkDecodeChunk measures decoding one chunk into samples.
func BenchmarkDecodeChunk(b *testing.B) {
	raw, n := benchChunk(b)
	var w bytes.Buffer
	sw := NewShardWriter(&w, manifest.CompressionZstd, 1<<30)
	samples, err := ParseTar(raw, 0, n)
	if err != nil {
		b.Fatal(err)
	}
	for _, s := range samples {
		sw.WriteSample(s)
	}
	sh, _ := sw.Close()
	z := w.Bytes()[:sh.Chunks[0].Size]
	for _, comp := range []string{manifest.CompressionNone, manifest.CompressionZstd} {
		in := raw
		if comp == manifest.CompressionZstd {
			in = z
		}
		// The manifest's RawSize bounds and presizes the buffer.
		c := sh.Chunks[0]
		c.Size, c.RawSize = int64(len(in)), int64(len(raw))
		b.Run(comp+"/bounded", func(b *testing.B) {
			var d Decoder
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := d.Decode(nil, in, comp, c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWriteShard measures the writer end to end (tar + zstd).
func BenchmarkWriteShard(b *testing.B) {
	samples := testSamples(6000, 22)
	var size int64
	for _, s := range samples {
		for _, f := range s.Fields {
			size += int64(len(f.Data))
		}
	}
	for _, tc := range []struct {
		comp string
		conc int
	}{{manifest.CompressionNone, 1}, {manifest.CompressionZstd, 1}, {manifest.CompressionZstd, runtime.GOMAXPROCS(0)}} {
		b.Run(fmt.Sprintf("%s/conc=%d", tc.comp, tc.conc), func(b *testing.B) {
			enc, _ := newEncoder(tc.conc)
			defer enc.Close()
			b.SetBytes(size)
			for b.Loop() {
				sw := newShardWriter(io.Discard, tc.comp, DefaultChunkSize, enc, tc.conc)
				for _, s := range samples {
					if err := sw.WriteSample(s); err != nil {
						b.Fatal(err)
					}
				}
				if _, err := sw.Close(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkParseTar compares ParseTar's fast path with archive/tar alone
// on an 8 MiB chunk of pack's output (docs/read-path.md has the figures).
func BenchmarkParseTar(b *testing.B) {
	raw, n := benchChunk(b)
	for _, p := range []struct {
		name  string
		parse func([]byte, int64, int64) ([]Sample, error)
	}{{"fast", ParseTar}, {"archive-tar", parseArchiveOnly}} {
		b.Run(p.name, func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.parse(raw, 0, n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
