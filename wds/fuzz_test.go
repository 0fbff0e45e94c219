package wds

import (
	"archive/tar"
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/shardstream/shardstream/manifest"
)

var writeSeeds = flag.Bool("write-fuzz-seeds", false, "rewrite the committed fuzz seed corpora under testdata/fuzz")

// fuzzDecoder caps decompression so that the fuzzer's zstd bombs fail
// fast instead of exhausting memory.
func fuzzDecoder() *Decoder { return &Decoder{MaxRawSize: 16 << 20} }

// FuzzDecodeChunk: any bytes, plain or zstd, decode to exactly the number
// of samples asked for or to an error; never a panic or a hang. Where a
// plain chunk decodes, the streaming scanner IndexShard uses finds the
// same samples, and cutting at its sample starts gives pieces that decode
// to one sample each (what the index's chunks rely on).
func FuzzDecodeChunk(f *testing.F) {
	for _, s := range decodeSeeds(f) {
		f.Add(s.data, s.zstd, s.want)
	}
	d := fuzzDecoder()
	ref, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(uint64(d.MaxRawSize)))
	if err != nil {
		f.Fatal(err)
	}
	defer ref.Close()
	f.Fuzz(func(t *testing.T, data []byte, compressed bool, want uint8) {
		comp := manifest.CompressionNone
		if compressed {
			comp = manifest.CompressionZstd
		}
		// The decompressed bytes, by a zstd decoder without a size
		// bound: Decode with their true size gives the same bytes, with
		// one byte less it fails.
		full := data
		if compressed {
			var err error
			if full, err = ref.DecodeAll(data, nil); err != nil {
				return // not zstd: nothing decodes
			}
		}
		got, err := d.decompress(nil, data, comp, int64(len(full)))
		if err != nil || !bytes.Equal(got, full) {
			t.Fatalf("decompress(%d bytes) = %d bytes, %v; the reference gave %d bytes", len(full), len(got), err, len(full))
		}
		if len(full) > 0 {
			if _, err := d.decompress(nil, data, comp, int64(len(full)-1)); err == nil {
				t.Fatalf("decompress with a raw size one short of %d bytes succeeded", len(full))
			}
		}
		samples, err := d.Decode(nil, data, comp, manifest.Chunk{RawSize: int64(len(full)), Samples: int64(want)})
		if err != nil {
			return
		}
		if len(samples) != int(want) {
			t.Fatalf("%d samples, asked for %d", len(samples), want)
		}
		for i, s := range samples {
			if len(s.Fields) == 0 {
				t.Fatalf("sample %d (%q) has no fields", i, s.Key)
			}
			if i > 0 && samples[i-1].Key == s.Key {
				t.Fatalf("samples %d and %d share key %q", i-1, i, s.Key)
			}
		}
		if compressed {
			return
		}
		starts, _, err := scanTar(context.Background(), bytes.NewReader(data))
		if err != nil {
			t.Fatalf("ParseTar decoded %d samples, scanTar failed: %v", len(samples), err)
		}
		if len(starts) != len(samples) {
			t.Fatalf("ParseTar found %d samples, scanTar %d", len(samples), len(starts))
		}
		// Cut where the index would: every piece is exactly its sample.
		for k, from := range starts {
			to := int64(len(data))
			if k+1 < len(starts) {
				to = starts[k+1]
			}
			if from > to || to > int64(len(data)) {
				t.Fatalf("sample starts %v out of order or past %d bytes", starts, len(data))
			}
			one, err := ParseTar(data[from:to], int64(k), 1)
			if err != nil {
				t.Fatalf("sample %d cut at [%d,%d): %v", k, from, to, err)
			}
			if one[0].Key != samples[k].Key || len(one[0].Fields) != len(samples[k].Fields) {
				t.Fatalf("sample %d cut at [%d,%d) is %q with %d fields, want %q with %d", k, from, to, one[0].Key, len(one[0].Fields), samples[k].Key, len(samples[k].Fields))
			}
		}
	})
}

// FuzzSeekTable: any tail parses to a table or an error; a parsed table
// with descriptor 0 (no checksums, unused bits clear: what we write)
// re-encodes to the same bytes.
func FuzzSeekTable(f *testing.F) {
	for _, s := range seekSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		size, ok := SeekTableSize(data)
		if !ok {
			return
		}
		if size < skippableHeader+seekFooterSize {
			t.Fatalf("SeekTableSize = %d, below the minimum", size)
		}
		if size > int64(len(data)) {
			return
		}
		table := data[int64(len(data))-size:]
		entries, err := ParseSeekTable(table)
		if err != nil {
			return
		}
		if table[len(table)-5] == 0 {
			if again := AppendSeekTable(nil, entries); !bytes.Equal(again, table) {
				t.Fatalf("table %x re-encodes as %x", table, again)
			}
		}
	})
}

type decodeSeed struct {
	data []byte
	zstd bool
	want uint8
}

func decodeSeeds(t testing.TB) []decodeSeed {
	var out []decodeSeed
	// Small seeds: the fuzzer minimizes every new input, at a cost that
	// grows with its size.
	small := []Sample{
		{Key: "a/x", Fields: []Field{{"jpg", []byte("jpeg")}, {"seg.png", []byte("png")}}},
		{Key: "a/y", Fields: []Field{{"cls", []byte("7")}}},
		{Key: "z", Fields: []Field{{"", nil}}},
	}
	for _, comp := range []string{manifest.CompressionNone, manifest.CompressionZstd} {
		data, sh := writeShard(t, small, comp, 1<<20)
		c := sh.Chunks[0]
		out = append(out, decodeSeed{data[c.Offset : c.Offset+c.Size], comp == manifest.CompressionZstd, uint8(c.Samples)})
	}
	long := "d/" + string(bytes.Repeat([]byte("x"), 101))
	for _, format := range []tar.Format{tar.FormatGNU, tar.FormatPAX} {
		data := tarOf(t, format, tar.Header{Name: "d/", Typeflag: tar.TypeDir}, tar.Header{Name: long + ".a.b"}, tar.Header{Name: long + ".c"}, tar.Header{Name: "k.x"})
		out = append(out, decodeSeed{data, false, 2})
		z, _ := zstd.NewWriter(nil)
		out = append(out, decodeSeed{z.EncodeAll(data, nil), true, 2})
		z.Close()
	}
	var g bytes.Buffer // a PAX global header between samples, as git archive writes
	tw := tar.NewWriter(&g)
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "a.x", Size: 1, Mode: 0o644})
	tw.Write([]byte("a"))
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "c"}})
	tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "b.x", Size: 1, Mode: 0o644})
	tw.Write([]byte("b"))
	tw.Close()
	out = append(out, decodeSeed{g.Bytes(), false, 2})
	out = append(out, decodeSeed{nil, false, 0}, decodeSeed{make([]byte, 1024), false, 0})
	return out
}

func seekSeeds() [][]byte {
	withSum := AppendSeekTable(nil, []SeekEntry{{1, 2}})
	withSum[len(withSum)-5] = seekChecksumFlag // a footer that claims checksums
	return [][]byte{
		AppendSeekTable(nil, nil),
		AppendSeekTable(nil, []SeekEntry{{100, 4096}, {7, 1 << 20}}),
		AppendSeekTable([]byte("frames before"), []SeekEntry{{13, 0}}),
		withSum,
	}
}

// TestWriteFuzzSeeds rewrites testdata/fuzz/<Name>/ with -write-fuzz-seeds.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*writeSeeds {
		t.Skip("run with -write-fuzz-seeds to rewrite the seed corpora")
	}
	var dec []string
	for _, s := range decodeSeeds(t) {
		dec = append(dec, fmt.Sprintf("[]byte(%s)\nbool(%v)\nuint8(%d)\n", strconv.Quote(string(s.data)), s.zstd, s.want))
	}
	writeCorpus(t, "FuzzDecodeChunk", dec)
	var seek []string
	for _, s := range seekSeeds() {
		seek = append(seek, fmt.Sprintf("[]byte(%s)\n", strconv.Quote(string(s))))
	}
	writeCorpus(t, "FuzzSeekTable", seek)
	var fast []string
	for _, s := range fastSeeds(t) {
		fast = append(fast, fmt.Sprintf("[]byte(%s)\nuint8(255)\n", strconv.Quote(string(s))))
	}
	writeCorpus(t, "FuzzParseTarFast", fast)
}

func writeCorpus(t *testing.T, name string, entries []string) {
	dir := filepath.Join("testdata", "fuzz", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, e := range entries {
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte("go test fuzz v1\n"+e), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
