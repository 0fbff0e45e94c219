package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/shardstream/shardstream/internal/miniotest"
	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store/s3store"
	"github.com/shardstream/shardstream/store/storeuri"
	"github.com/shardstream/shardstream/wds"
	"github.com/shardstream/shardstream/worker"
)

// packTestTree writes files under dir: nested directories, several fields
// per key, dots in field names, a hidden file; it returns the files pack
// must store, as "key|field" → contents.
func packTestTree(t *testing.T, dir string, n int) map[string][]byte {
	t.Helper()
	r := rand.New(rand.NewPCG(3, 4))
	want := map[string][]byte{}
	for i := range n {
		key := fmt.Sprintf("class%d/img%04d", i%4, i)
		if i%7 == 0 {
			key = fmt.Sprintf("top%04d", i)
		}
		for _, field := range []string{"jpg", "cls", "seg.png"}[:1+i%3] {
			data := make([]byte, r.IntN(5000))
			for j := range data {
				data[j] = byte(r.IntN(8))
			}
			p := filepath.Join(dir, filepath.FromSlash(key+"."+field))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			want[key+"|"+field] = data
		}
	}
	if err := os.WriteFile(filepath.Join(dir, ".DS_Store"), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	return want
}

// readDatasetTest decodes every chunk of the dataset at uri into
// "key|field" → contents, failing on a key/field seen twice.
func readDatasetTest(t *testing.T, ctx context.Context, uri string, cfg ...s3store.Config) (*manifest.Manifest, map[string][]byte) {
	t.Helper()
	cfg = append(cfg, s3store.Config{})
	st, err := storeuri.Open(ctx, uri, cfg[0])
	if err != nil {
		t.Fatal(err)
	}
	read := func(path string, off, n int64) []byte {
		rc, err := st.ReadRange(ctx, path, off, n)
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
	m, err := manifest.Parse(read(manifest.FileName, 0, -1))
	if err != nil {
		t.Fatal(err)
	}
	var d wds.Decoder
	got := map[string][]byte{}
	for _, sh := range m.Shards {
		for ci, c := range sh.Chunks {
			samples, err := d.Decode(nil, read(sh.Path, c.Offset, c.Size), sh.Compression, c)
			if err != nil {
				t.Fatalf("%s chunk %d: %v", sh.Path, ci, err)
			}
			for _, s := range samples {
				for _, f := range s.Fields {
					k := s.Key + "|" + f.Name
					if _, dup := got[k]; dup {
						t.Fatalf("%s: sample %q field %q seen twice", sh.Path, s.Key, f.Name)
					}
					got[k] = f.Data
				}
			}
		}
	}
	return m, got
}

// readWithWorker reads every chunk of the dataset at uri through the
// loader's read path (worker.Reader) into "key|field" → contents.
func readWithWorker(t *testing.T, ctx context.Context, uri string) map[string][]byte {
	t.Helper()
	r, err := worker.Open(ctx, uri, worker.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	got := map[string][]byte{}
	for si, sh := range r.Manifest().Shards {
		for ci := range sh.Chunks {
			c, err := r.Chunk(ctx, si, ci)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range c.Samples {
				for _, f := range s.Fields {
					got[s.Key+"|"+f.Name] = f.Data
				}
			}
		}
	}
	return got
}

func compareFiles(t *testing.T, want, got map[string][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("dataset holds %d fields, input has %d files", len(got), len(want))
	}
	for k, w := range want {
		if g, ok := got[k]; !ok || !bytes.Equal(g, w) {
			t.Errorf("%s: present %v, %d bytes, want %d bytes", k, ok, len(g), len(w))
		}
	}
}

func TestPack(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in := t.TempDir()
	want := packTestTree(t, in, 300)
	for _, comp := range []string{"zstd", "none"} {
		t.Run(comp, func(t *testing.T) {
			var fps []string
			for run := range 2 {
				out := filepath.Join(t.TempDir(), "ds")
				var stdout, stderr bytes.Buffer
				err := runPack(ctx, []string{"--input", in, "--output", out, "--shard-size", "100k", "--chunk-size", "8k", "--compress", comp}, &stdout, &stderr)
				if err != nil {
					t.Fatalf("pack: %v\nstderr: %s", err, stderr.String())
				}
				if !strings.HasPrefix(stdout.String(), "packed ") || !strings.Contains(stderr.String(), "shards done") {
					t.Errorf("run %d: stdout %q, stderr %q: want a final line and per-shard progress", run, stdout.String(), stderr.String())
				}
				m, got := readDatasetTest(t, ctx, out)
				if len(m.Shards) < 3 {
					t.Errorf("%d shards, want several of 100 kB", len(m.Shards))
				}
				compareFiles(t, want, got)
				compareFiles(t, want, readWithWorker(t, ctx, out))
				fps = append(fps, m.Fingerprint())
			}
			if fps[0] != fps[1] {
				t.Errorf("two packs of one tree differ: fingerprints %s, %s", fps[0], fps[1])
			}
		})
	}
}

// TestPackIndexS3 packs into and indexes a bucket of a real MinIO.
func TestPackIndexS3(t *testing.T) {
	srv := miniotest.Start(t)
	srv.CreateBucket(t, "data")
	srv.Env(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in := t.TempDir()
	want := packTestTree(t, in, 200)
	uri := "s3://data/packed"
	s3 := []string{"--s3-endpoint", srv.Endpoint, "--s3-path-style", "--s3-region", srv.Region}
	var stdout, stderr bytes.Buffer
	if err := runPack(ctx, append([]string{"--input", in, "--output", uri, "--shard-size", "100k", "--chunk-size", "8k"}, s3...), &stdout, &stderr); err != nil {
		t.Fatalf("pack: %v\nstderr: %s", err, stderr.String())
	}
	cfg := s3store.Config{Endpoint: srv.Endpoint, PathStyle: true, Region: srv.Region}
	packed, got := readDatasetTest(t, ctx, uri, cfg)
	compareFiles(t, want, got)
	for _, sh := range packed.Shards {
		if sh.ETag == "" {
			t.Errorf("%s: no ETag in the manifest of an S3 dataset", sh.Path)
		}
	}
	if err := runIndex(ctx, append([]string{"--data", uri, "--chunk-size", "8k", "--overwrite"}, s3...), &stdout, &stderr); err != nil {
		t.Fatalf("index: %v\nstderr: %s", err, stderr.String())
	}
	indexed, got := readDatasetTest(t, ctx, uri, cfg)
	compareFiles(t, want, got)
	if diff := cmp.Diff(packed, indexed); diff != "" {
		t.Errorf("index of a packed bucket differs from pack's manifest:\n%s", diff)
	}
}

// TestPackOutputInsideInput: packing into a directory of the input, twice,
// never packs the previous output.
func TestPackOutputInsideInput(t *testing.T) {
	ctx := context.Background()
	in := t.TempDir()
	want := packTestTree(t, in, 40)
	out := filepath.Join(in, "packed")
	for range 2 {
		var stderr bytes.Buffer
		if err := runPack(ctx, []string{"--input", in, "--output", out, "--shard-size", "64k", "--overwrite"}, io.Discard, &stderr); err != nil {
			t.Fatal(err)
		}
	}
	_, got := readDatasetTest(t, ctx, out)
	compareFiles(t, want, got)
}

func TestPackErrors(t *testing.T) {
	ctx := context.Background()
	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, "odd."), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--output", t.TempDir()}, "required"},
		{[]string{"--input", bad, "--output", t.TempDir(), "--compress", "gzip"}, "gzip"},
		{[]string{"--input", bad, "--output", t.TempDir(), "--shard-size", "lots"}, "lots"},
		{[]string{"--input", bad, "--output", t.TempDir()}, "odd."},
		{[]string{"--input", filepath.Join(bad, "missing"), "--output", t.TempDir()}, "missing"},
		{[]string{"--input", t.TempDir(), "--output", t.TempDir()}, "no files"},
	} {
		err := runPack(ctx, tc.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("pack %q: err = %v, want one naming %q", tc.args, err, tc.want)
		}
	}
}

// TestPackCancel: a cancelled pack returns the context's error and
// writes no manifest.
func TestPackCancel(t *testing.T) {
	in, out := t.TempDir(), t.TempDir()
	packTestTree(t, in, 50)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := runPack(ctx, []string{"--input", in, "--output", out}, io.Discard, io.Discard)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
	if _, err := os.Stat(filepath.Join(out, manifest.FileName)); err == nil {
		t.Error("a cancelled pack wrote a manifest")
	}
}

// TestPackFrameSize: --frame-size is --chunk-size by its zstd name.
func TestPackFrameSize(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	in := t.TempDir()
	want := packTestTree(t, in, 100)
	chunks := map[string]int{}
	for _, flag := range []string{"--chunk-size", "--frame-size"} {
		for _, size := range []string{"4k", "64k"} {
			out := filepath.Join(t.TempDir(), "ds")
			var stdout, stderr bytes.Buffer
			if err := runPack(ctx, []string{"--input", in, "--output", out, "--shard-size", "1MiB", flag, size}, &stdout, &stderr); err != nil {
				t.Fatalf("pack %s %s: %v", flag, size, err)
			}
			m, got := readDatasetTest(t, ctx, out)
			compareFiles(t, want, got)
			for _, sh := range m.Shards {
				chunks[flag+size] += len(sh.Chunks)
			}
		}
	}
	if chunks["--frame-size4k"] != chunks["--chunk-size4k"] || chunks["--frame-size64k"] != chunks["--chunk-size64k"] {
		t.Errorf("chunk counts %v: --frame-size and --chunk-size differ", chunks)
	}
	if chunks["--frame-size4k"] <= chunks["--frame-size64k"] {
		t.Errorf("chunk counts %v: 4k frames should make more chunks than 64k", chunks)
	}
}

// TestOverwriteRefused: pack and index refuse to write over a dataset
// without --overwrite, and leave its manifest as it was.
func TestOverwriteRefused(t *testing.T) {
	ctx := context.Background()
	in, out := t.TempDir(), t.TempDir()
	packTestTree(t, in, 10)
	if err := runPack(ctx, []string{"--input", in, "--output", out, "--shard-size", "64k"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := runPack(ctx, []string{"--input", in, "--output", out, "--shard-size", "32k"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Errorf("pack over a dataset = %v, want an error naming --overwrite", err)
	}
	if err := runIndex(ctx, []string{"--data", out, "--chunk-size", "4k"}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "--overwrite") {
		t.Errorf("index over a manifest = %v, want an error naming --overwrite", err)
	}
	after, err := os.ReadFile(filepath.Join(out, "manifest.json"))
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("the manifest changed after refusals (%v)", err)
	}
}

// TestOverwriteDiesMidway: pack --overwrite first marks the dataset as being
// rewritten, so a pack that dies before its new manifest leaves no manifest
// a reader would trust: readers refuse the dataset, naming why, instead of
// reading new shard bytes through the old chunk tables.
func TestOverwriteDiesMidway(t *testing.T) {
	ctx := context.Background()
	in, out := t.TempDir(), t.TempDir()
	packTestTree(t, in, 10)
	if err := runPack(ctx, []string{"--input", in, "--output", out, "--shard-size", "64k"}, io.Discard, io.Discard); err != nil {
		t.Fatal(err)
	}
	// The first shard cannot be written: a directory stands in its place.
	first := filepath.Join(out, wds.ShardName(0, manifest.CompressionZstd))
	if err := os.Remove(first); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(first, 0o755); err != nil {
		t.Fatal(err)
	}
	err := runPack(ctx, []string{"--input", in, "--output", out, "--shard-size", "64k", "--overwrite"}, io.Discard, io.Discard)
	if err == nil {
		t.Fatal("pack --overwrite over a shard path that is a directory succeeded")
	}
	_, err = worker.Open(ctx, out, worker.Config{}, nil)
	if err == nil || !strings.Contains(err.Error(), "being rewritten") {
		t.Errorf("opening the dataset after the failed pack: %v, want an error saying it is being rewritten", err)
	}
}
