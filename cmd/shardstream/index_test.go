package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/shardstream/shardstream/manifest"
)

// indexTestTar writes a tar with archive/tar in format: n samples with
// long (> 100 byte) names in some, two fields each, and a directory entry.
func indexTestTar(t *testing.T, format tar.Format, prefix string, n int, want map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: prefix + "/", Typeflag: tar.TypeDir, Mode: 0o755, Format: format}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		key := fmt.Sprintf("%s/%s%05d", prefix, strings.Repeat("long", i%50), i)
		for _, field := range []string{"txt", "meta.json"} {
			data := bytes.Repeat([]byte(key+field), 1+i%20)
			if err := tw.WriteHeader(&tar.Header{Name: key + "." + field, Size: int64(len(data)), Mode: 0o644, Typeflag: tar.TypeReg, Format: format}); err != nil {
				t.Fatal(err)
			}
			tw.Write(data)
			want[key+"|"+field] = data
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestIndex(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	want := map[string][]byte{}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a-gnu.tar", indexTestTar(t, tar.FormatGNU, "gnu", 120, want))
	write("b-pax.tar", indexTestTar(t, tar.FormatPAX, "pax", 120, want))
	var z bytes.Buffer
	zw, err := zstd.NewWriter(&z) // an ordinary single-frame encoder, no seek table
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(indexTestTar(t, tar.FormatPAX, "zst", 80, want))
	zw.Close()
	write("c-plain.tar.zst", z.Bytes())
	write("README.txt", []byte("not a shard"))

	var stdout, stderr bytes.Buffer
	if err := runIndex(ctx, []string{"--data", dir, "--chunk-size", "16k", "--parallel", "2"}, &stdout, &stderr); err != nil {
		t.Fatalf("index: %v\nstderr: %s", err, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "indexed 3 shards") {
		t.Errorf("stdout %q, want it to start with %q", stdout.String(), "indexed 3 shards")
	}
	m, got := readDatasetTest(t, ctx, dir)
	var paths []string
	for _, sh := range m.Shards {
		paths = append(paths, sh.Path)
	}
	if strings.Join(paths, ",") != "a-gnu.tar,b-pax.tar,c-plain.tar.zst" {
		t.Errorf("shards %v, want the three shards in order", paths)
	}
	if len(m.Shards[0].Chunks) < 3 || len(m.Shards[1].Chunks) < 3 {
		t.Errorf("tar shards have %d and %d chunks; want several of 16 kB", len(m.Shards[0].Chunks), len(m.Shards[1].Chunks))
	}
	if zs := m.Shards[2]; zs.Compression != manifest.CompressionZstd || len(zs.Chunks) != 1 {
		t.Errorf("single-frame zstd shard: compression %q, %d chunks; want zstd, one chunk", zs.Compression, len(zs.Chunks))
	}
	compareFiles(t, want, got)

	// A packed dataset re-indexes to the chunk table pack wrote.
	in, out := t.TempDir(), t.TempDir()
	packTestTree(t, in, 100)
	if err := runPack(ctx, []string{"--input", in, "--output", out, "--shard-size", "64k", "--chunk-size", "8k"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	packed, _ := readDatasetTest(t, ctx, out)
	if err := runIndex(ctx, []string{"--data", out, "--chunk-size", "8k", "--overwrite"}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	indexed, _ := readDatasetTest(t, ctx, out)
	if packed.Fingerprint() != indexed.Fingerprint() {
		t.Errorf("index of a packed dataset differs from pack's manifest")
	}
}

func TestIndexErrors(t *testing.T) {
	ctx := context.Background()
	empty := t.TempDir()
	bad := t.TempDir()
	os.WriteFile(filepath.Join(bad, "x.tar"), bytes.Repeat([]byte("not a tar "), 100), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "required"},
		{[]string{"--data", empty}, "no *.tar"},
		{[]string{"--data", bad}, "x.tar"},
		{[]string{"--data", empty, "--parallel", "0"}, "parallel"},
		{[]string{"--data", empty, "--compression", "gzip"}, "--compression"},
	} {
		err := runIndex(ctx, tc.args, &bytes.Buffer{}, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("index %q: err = %v, want one naming %q", tc.args, err, tc.want)
		}
	}
}

// TestIndexCompression: --compression overrides the name's compression for
// every shard; a plain tar read as zstd is an error naming the shard.
func TestIndexCompression(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	want := map[string][]byte{}
	var z bytes.Buffer
	zw, err := zstd.NewWriter(&z)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(indexTestTar(t, tar.FormatGNU, "z", 40, want))
	zw.Close()
	// A zstd shard whose name says plain tar: only --compression zstd reads it.
	if err := os.WriteFile(filepath.Join(dir, "odd.tar"), z.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := runIndex(ctx, []string{"--data", dir}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "odd.tar") {
		t.Errorf("index --compression auto of a zstd shard named .tar: err = %v, want one naming odd.tar", err)
	}
	if err := runIndex(ctx, []string{"--data", dir, "--compression", "zstd"}, &stdout, &stderr); err != nil {
		t.Fatalf("index --compression zstd: %v", err)
	}
	m, got := readDatasetTest(t, ctx, dir)
	if len(m.Shards) != 1 || m.Shards[0].Compression != manifest.CompressionZstd || m.Shards[0].Samples != 40 {
		t.Errorf("manifest %+v, want one zstd shard of 40 samples", m.Shards)
	}
	compareFiles(t, want, got)
}
