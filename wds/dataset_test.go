package wds

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/klauspost/compress/zstd"

	"github.com/shardstream/shardstream/internal/leaktest"
	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store"
	"github.com/shardstream/shardstream/store/memstore"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func readAll(t *testing.T, ctx context.Context, st store.Store, path string) []byte {
	t.Helper()
	rc, err := st.ReadRange(ctx, path, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// decodeDataset reads the manifest from st and decodes every chunk of
// every shard through ranged reads.
func decodeDataset(t *testing.T, ctx context.Context, st store.Store) (*manifest.Manifest, []Sample) {
	t.Helper()
	m, err := manifest.Parse(readAll(t, ctx, st, manifest.FileName))
	if err != nil {
		t.Fatal(err)
	}
	var d Decoder
	var all []Sample
	for _, sh := range m.Shards {
		all = append(all, decodeShard(t, &d, readAll(t, ctx, st, sh.Path), sh)...)
	}
	return m, all
}

func TestWriteDataset(t *testing.T) {
	ctx := testContext(t)
	samples := testSamples(1000, 7)
	for _, comp := range []string{manifest.CompressionNone, manifest.CompressionZstd} {
		t.Run(comp, func(t *testing.T) {
			st := memstore.New()
			i := 0
			next := func() (Sample, bool, error) {
				if i == len(samples) {
					return Sample{}, false, nil
				}
				i++
				return samples[i-1], true, nil
			}
			var calls, lastSamples int64
			opts := DatasetOptions{ShardSize: 200_000, ChunkSize: 30_000, Compression: comp, Progress: func(shards, n, bytes int64) {
				calls++
				if n < lastSamples {
					t.Errorf("progress went back from %d to %d samples", lastSamples, n)
				}
				lastSamples = n
			}}
			m, err := WriteDataset(ctx, st, next, opts)
			if err != nil {
				t.Fatal(err)
			}
			if len(m.Shards) < 3 {
				t.Fatalf("%d shards; want several of ~200 kB", len(m.Shards))
			}
			if lastSamples != int64(len(samples)) || calls < int64(len(samples)) {
				t.Errorf("progress: %d calls, last %d samples; want ≥ %d calls ending at %d", calls, lastSamples, len(samples), len(samples))
			}
			for i, sh := range m.Shards {
				if sh.Path != ShardName(i, comp) {
					t.Errorf("shard %d is %q, want %q", i, sh.Path, ShardName(i, comp))
				}
				if i < len(m.Shards)-1 && (sh.Size < 180_000 || sh.Size > 300_000) {
					t.Errorf("shard %d has %d bytes; want about 200 kB", i, sh.Size)
				}
			}
			got, all := decodeDataset(t, ctx, st)
			if diff := cmp.Diff(m, got); diff != "" {
				t.Errorf("stored manifest differs from the returned one:\n%s", diff)
			}
			if diff := diffSamples(samples, all); diff != "" {
				t.Fatal(diff)
			}
		})
	}
}

func TestWriteDatasetError(t *testing.T) {
	ctx := testContext(t)
	st := memstore.New()
	n := 0
	next := func() (Sample, bool, error) {
		n++
		if n == 50 {
			return Sample{}, false, fmt.Errorf("source broke")
		}
		return testSamples(1, uint64(n))[0], true, nil
	}
	if _, err := WriteDataset(ctx, st, next, DatasetOptions{}); err == nil {
		t.Fatal("WriteDataset succeeded over a failing source")
	}
	infos, err := st.List(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		if in.Path == manifest.FileName {
			t.Fatal("a failed WriteDataset wrote a manifest")
		}
	}
}

// indexAndDecode indexes the shard at path and decodes all its chunks.
func indexAndDecode(t *testing.T, ctx context.Context, st store.Store, path string, chunkSize int64) (manifest.Shard, []Sample) {
	t.Helper()
	sh, err := IndexShard(ctx, st, path, "", chunkSize)
	if err != nil {
		t.Fatal(err)
	}
	m := manifest.Manifest{Version: manifest.Version, Shards: []manifest.Shard{sh}}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	var d Decoder
	return sh, decodeShard(t, &d, readAll(t, ctx, st, path), sh)
}

// foreignTar is a tar written by archive/tar: directories, long names,
// several fields per key.
func foreignTar(t *testing.T, format tar.Format, n int) ([]byte, []Sample) {
	var hs []tar.Header
	for i := range n {
		dir := fmt.Sprintf("part%d/%s/", i/10, bytes.Repeat([]byte("deep"), i%40))
		if i%10 == 0 {
			hs = append(hs, tar.Header{Name: dir, Typeflag: tar.TypeDir})
		}
		for _, f := range []string{"cls", "jpg", "seg.png"}[:1+i%3] {
			hs = append(hs, tar.Header{Name: fmt.Sprintf("%sx%04d.%s", dir, i, f)})
		}
	}
	data := tarOf(t, format, hs...)
	want, err := ParseTar(data, 0, int64(n))
	if err != nil {
		t.Fatal(err)
	}
	return data, want
}

func TestIndexTar(t *testing.T) {
	ctx := testContext(t)
	st := memstore.New()
	for _, format := range []tar.Format{tar.FormatGNU, tar.FormatPAX} {
		data, want := foreignTar(t, format, 200)
		path := "x-" + format.String() + ".tar"
		if err := st.Write(ctx, path, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		for _, cs := range []int64{1, 5000, 1 << 30} {
			sh, got := indexAndDecode(t, ctx, st, path, cs)
			if diff := diffSamples(want, got); diff != "" {
				t.Errorf("%s chunk size %d: %s", format, cs, diff)
			}
			if cs == 1 && len(sh.Chunks) != len(want) {
				t.Errorf("%s chunk size 1: %d chunks for %d samples", format, len(sh.Chunks), len(want))
			}
			if cs == 1<<30 && len(sh.Chunks) != 1 {
				t.Errorf("%s chunk size 1 GiB: %d chunks", format, len(sh.Chunks))
			}
		}
	}
}

func TestIndexZstd(t *testing.T) {
	ctx := testContext(t)
	st := memstore.New()
	data, want := foreignTar(t, tar.FormatPAX, 300)

	// One frame from an ordinary streaming encoder: one chunk.
	var single bytes.Buffer
	zw, _ := zstd.NewWriter(&single)
	zw.Write(data)
	zw.Close()
	st.Write(ctx, "single.tar.zst", bytes.NewReader(single.Bytes()))
	sh, got := indexAndDecode(t, ctx, st, "single.tar.zst", 1000)
	if len(sh.Chunks) != 1 || sh.Chunks[0].Size != int64(single.Len()) || sh.Chunks[0].RawSize < int64(len(data))-1024 {
		t.Errorf("single frame: chunks %+v, want one of %d bytes", sh.Chunks, single.Len())
	}
	if diff := diffSamples(want, got); diff != "" {
		t.Error(diff)
	}

	// Seekable, frames cut every 2048 raw bytes regardless of entries
	// (some cuts fall inside entries, some between samples): chunks are
	// runs of frames ending on sample boundaries.
	enc, _ := zstd.NewWriter(nil)
	var seek bytes.Buffer
	var entries []SeekEntry
	for off := 0; off < len(data); off += 2048 {
		part := data[off:min(off+2048, len(data))]
		f := enc.EncodeAll(part, nil)
		seek.Write(f)
		entries = append(entries, SeekEntry{uint32(len(f)), uint32(len(part))})
	}
	seek.Write(AppendSeekTable(nil, entries))
	st.Write(ctx, "seek.tar.zst", bytes.NewReader(seek.Bytes()))
	sh, got = indexAndDecode(t, ctx, st, "seek.tar.zst", 1)
	if len(sh.Chunks) < 10 {
		t.Errorf("seekable: %d chunks from %d frames, want many", len(sh.Chunks), len(entries))
	}
	if diff := diffSamples(want, got); diff != "" {
		t.Error(diff)
	}

	// A seek table that does not describe the frames is ignored: one chunk.
	var lying bytes.Buffer
	lying.Write(seek.Bytes()[:seek.Len()-len(AppendSeekTable(nil, entries))])
	entries[0].DecompressedSize++
	lying.Write(AppendSeekTable(nil, entries))
	st.Write(ctx, "lying.tar.zst", bytes.NewReader(lying.Bytes()))
	sh, got = indexAndDecode(t, ctx, st, "lying.tar.zst", 1)
	if len(sh.Chunks) != 1 {
		t.Errorf("seek table with a wrong size: %d chunks, want 1", len(sh.Chunks))
	}
	if diff := diffSamples(want, got); diff != "" {
		t.Error(diff)
	}

	// A table whose sizes add up but misplace frame ends (one byte moved
	// from frame 1's decompressed size to frame 0's, or compressed sizes
	// that cut frames apart) is ignored too: IndexShard checks every
	// frame against its entry.
	entries[0].DecompressedSize--
	for name, move := range map[string]func(e []SeekEntry){
		"raw sizes":        func(e []SeekEntry) { e[2].DecompressedSize++; e[3].DecompressedSize-- },
		"compressed sizes": func(e []SeekEntry) { e[2].CompressedSize++; e[3].CompressedSize-- },
		"a 3 GiB frame":    func(e []SeekEntry) { e[1].DecompressedSize = 3 << 30 },
	} {
		moved := slices.Clone(entries)
		move(moved)
		var b bytes.Buffer
		b.Write(seek.Bytes()[:seek.Len()-len(AppendSeekTable(nil, entries))])
		b.Write(AppendSeekTable(nil, moved))
		st.Write(ctx, "moved.tar.zst", bytes.NewReader(b.Bytes()))
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		sh, got = indexAndDecode(t, ctx, st, "moved.tar.zst", 1)
		runtime.ReadMemStats(&after)
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 256<<20 {
			t.Errorf("seek table with moved %s: indexing and decoding %d kB allocated %d MiB", name, len(data)>>10, alloc>>20)
		}
		if len(sh.Chunks) != 1 {
			t.Errorf("seek table with moved %s: %d chunks, want 1", name, len(sh.Chunks))
		}
		if diff := diffSamples(want, got); diff != "" {
			t.Errorf("seek table with moved %s: %s", name, diff)
		}
	}

	// Our own shards index to the chunk table they were written with.
	samples := testSamples(200, 9)
	own, wrote := writeShard(t, samples, manifest.CompressionZstd, 20_000)
	st.Write(ctx, "own.tar.zst", bytes.NewReader(own))
	sh, got = indexAndDecode(t, ctx, st, "own.tar.zst", 20_000)
	wrote.Path, sh.ETag = "own.tar.zst", ""
	if diff := cmp.Diff(wrote, sh); diff != "" {
		t.Errorf("index of a written shard differs from its writer's entry:\n%s", diff)
	}
	if diff := diffSamples(samples, got); diff != "" {
		t.Error(diff)
	}
}

func TestIndexCorrupt(t *testing.T) {
	ctx := testContext(t)
	st := memstore.New()
	data, _ := foreignTar(t, tar.FormatGNU, 50)
	st.Write(ctx, "cut.tar", bytes.NewReader(data[:len(data)/2+100]))
	if _, err := IndexShard(ctx, st, "cut.tar", "", 0); err == nil {
		t.Error("indexed a truncated tar")
	}
	z, _ := zstd.NewWriter(nil)
	frame := z.EncodeAll(data, nil)
	frame[len(frame)/2] ^= 0xff
	st.Write(ctx, "bad.tar.zst", bytes.NewReader(frame))
	if _, err := IndexShard(ctx, st, "bad.tar.zst", "", 0); err == nil {
		t.Error("indexed a corrupt zstd shard")
	}
	if _, err := IndexShard(ctx, st, "missing.tar", "", 0); err == nil {
		t.Error("indexed a missing shard")
	}
}

// TestIndexGlobalHeader: a PAX global header mid-archive (git archive
// writes one) does not shift the chunk boundaries after it.
func TestIndexGlobalHeader(t *testing.T) {
	ctx := testContext(t)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	var want []Sample
	for i := range 6 {
		if i == 3 {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "a commit id of 40 characters, say, 0123456789"}}); err != nil {
				t.Fatal(err)
			}
		}
		key := fmt.Sprintf("s%d", i)
		data := bytes.Repeat([]byte{byte(i)}, 100*i)
		tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: key + ".bin", Size: int64(len(data)), Mode: 0o644})
		tw.Write(data)
		want = append(want, Sample{Key: key, Fields: []Field{{"bin", data}}})
	}
	tw.Close()
	st := memstore.New()
	st.Write(ctx, "g.tar", bytes.NewReader(buf.Bytes()))
	sh, got := indexAndDecode(t, ctx, st, "g.tar", 1)
	if len(sh.Chunks) != len(want) {
		t.Errorf("%d chunks, want one per sample (%d)", len(sh.Chunks), len(want))
	}
	if diff := diffSamples(want, got); diff != "" {
		t.Error(diff)
	}
}

// TestIndexDirWithSize: a directory header whose size field is not zero
// has no data after it (as archive/tar reads it); chunk boundaries after
// it stay on headers.
func TestIndexDirWithSize(t *testing.T) {
	ctx := testContext(t)
	data := tarOf(t, tar.FormatUSTAR, tar.Header{Name: "d/", Typeflag: tar.TypeDir}, tar.Header{Name: "d/a.x"}, tar.Header{Name: "d/b.x"}, tar.Header{Name: "d/c.x"})
	hdr := data[:512]
	copy(hdr[124:136], fmt.Sprintf("%011o\x00", 1024)) // size field
	copy(hdr[148:156], "        ")                     // checksum over spaces
	var sum int
	for _, b := range hdr {
		sum += int(b)
	}
	copy(hdr[148:156], fmt.Sprintf("%06o\x00 ", sum))
	want, err := ParseTar(data, 0, 3)
	if err != nil {
		t.Fatalf("a directory with a size field: %v", err)
	}
	st := memstore.New()
	st.Write(ctx, "d.tar", bytes.NewReader(data))
	sh, got := indexAndDecode(t, ctx, st, "d.tar", 1)
	if len(sh.Chunks) != 3 {
		t.Errorf("%d chunks, want 3", len(sh.Chunks))
	}
	if diff := diffSamples(want, got); diff != "" {
		t.Error(diff)
	}
}

// failingStore fails every Write after reading limit bytes of it.
type failingStore struct {
	store.Store
	limit int64
}

func (f failingStore) Write(ctx context.Context, path string, r io.Reader) error {
	io.CopyN(io.Discard, r, f.limit)
	return fmt.Errorf("write %s: disk full", path)
}

// TestWriteDatasetStoreFails: an upload that fails mid-shard ends
// WriteDataset with an error naming the shard, without a hang, and leaves
// no goroutine behind (frames in flight included).
func TestWriteDatasetStoreFails(t *testing.T) {
	ctx := testContext(t)
	leaktest.Check(t)
	samples := testSamples(2000, 13)
	for _, limit := range []int64{0, 50_000} {
		i := 0
		next := func() (Sample, bool, error) {
			if i == len(samples) {
				return Sample{}, false, nil
			}
			i++
			return samples[i-1], true, nil
		}
		_, err := WriteDataset(ctx, failingStore{memstore.New(), limit}, next, DatasetOptions{ChunkSize: 4096})
		if err == nil || !strings.Contains(err.Error(), "shard-000000.tar.zst") || !strings.Contains(err.Error(), "disk full") {
			t.Errorf("limit %d: err = %v, want one naming the shard and the store's error", limit, err)
		}
	}
}

// TestDatasetOptionsValidate: every rejected option is named with its
// value.
func TestDatasetOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		opts DatasetOptions
		want string
	}{
		{DatasetOptions{ShardSize: -1}, "wds: DatasetOptions.ShardSize -1, want >= 0"},
		{DatasetOptions{ChunkSize: -2}, "wds: DatasetOptions.ChunkSize -2, want >= 0"},
		{DatasetOptions{Compression: "gzip"}, `wds: DatasetOptions.Compression "gzip", want "zstd" or "none"`},
		{DatasetOptions{}, ""},
	} {
		err := tc.opts.validate()
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%+v.validate() = %q, want %q", tc.opts, got, tc.want)
		}
	}
}
