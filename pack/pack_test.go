package pack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/shardstream/shardstream/internal/leaktest"
	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store/memstore"
	"github.com/shardstream/shardstream/wds"
)

// TestLoader: samples come back in order under a budget smaller than a
// sample; a file that cannot be read is an error naming it, and the
// loader's goroutines end after cancel.
func TestLoader(t *testing.T) {
	dir := t.TempDir()
	var files []File
	for i := range 50 {
		for _, f := range []string{"a", "b"} {
			p := filepath.Join(dir, fmt.Sprintf("%02d.%s", i, f))
			os.WriteFile(p, []byte(p), 0o644)
			files = append(files, File{Path: p, Key: fmt.Sprintf("%02d", i), Field: f, Size: int64(len(p))})
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	ld := NewLoader(ctx, files, 4, 10)
	for i := 0; ; i++ {
		s, ok, err := ld.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			if i != 50 {
				t.Fatalf("%d samples, want 50", i)
			}
			break
		}
		if s.Key != fmt.Sprintf("%02d", i) || len(s.Fields) != 2 || string(s.Fields[1].Data) != files[2*i+1].Path {
			t.Fatalf("sample %d = %q with %d fields, out of order or incomplete", i, s.Key, len(s.Fields))
		}
	}
	cancel()
	ld.Wait()

	files[61].Path = filepath.Join(dir, "gone.b")
	ctx, cancel = context.WithCancel(context.Background())
	ld = NewLoader(ctx, files, 4, 1<<20)
	var err error
	for n := 0; err == nil; n++ {
		var ok bool
		if _, ok, err = ld.Next(ctx); !ok && err == nil {
			t.Fatal("all samples read despite a missing file")
		}
	}
	if !strings.Contains(err.Error(), "gone.b") {
		t.Errorf("err = %v, want one naming gone.b", err)
	}
	cancel()
	ld.Wait()
}

// TestList: files sorted by key then field, hidden entries and the skip
// directory left out, links to files followed, a name ending in a dot
// refused.
func TestList(t *testing.T) {
	dir := t.TempDir()
	write := func(rel string) {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(rel), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, rel := range []string{"b/2.jpg", "b/2.cls", "a.seg.png", "a.cls", ".DS_Store", ".git/x.txt", "out/shard.tar"} {
		write(rel)
	}
	if err := os.Symlink(filepath.Join(dir, "a.cls"), filepath.Join(dir, "c.cls")); err != nil {
		t.Fatal(err)
	}
	files, skipped, err := List(dir, filepath.Join(dir, "out"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, f := range files {
		got = append(got, f.Key+"|"+f.Field)
		if want := int64(len(strings.TrimPrefix(filepath.ToSlash(f.Path), filepath.ToSlash(dir)+"/"))); f.Key != "c" && f.Size != want {
			t.Errorf("%s: size %d, want %d", f.Path, f.Size, want)
		}
	}
	want := []string{"a|cls", "a|seg.png", "b/2|cls", "b/2|jpg", "c|cls"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("List: (-want +got)\n%s", diff)
	}
	if skipped != 2 {
		t.Errorf("skipped %d, want 2 (.DS_Store, .git)", skipped)
	}

	write("odd.")
	if _, _, err := List(dir, ""); err == nil || !strings.Contains(err.Error(), "odd.") {
		t.Errorf("List with odd. = %v, want an error naming it", err)
	}
}

// TestWrite packs files into a memory store: every sample and input byte
// is written, and no goroutine outlives Write, also when it is cancelled.
func TestWrite(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	var files []File
	var size int64
	for i := range 100 {
		p := filepath.Join(dir, fmt.Sprintf("%03d.bin", i))
		data := bytes.Repeat([]byte{byte(i)}, 100+i)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		files = append(files, File{Path: p, Key: fmt.Sprintf("%03d", i), Field: "bin", Size: int64(len(data))})
		size += int64(len(data))
	}
	opts := wds.DatasetOptions{ShardSize: 4 << 10, ChunkSize: 1 << 10, Compression: manifest.CompressionNone}
	m, in, err := Write(context.Background(), memstore.New(), files, opts)
	if err != nil {
		t.Fatal(err)
	}
	if m.TotalSamples() != 100 || in != size || len(m.Shards) < 2 {
		t.Errorf("Write: %d samples, %d input bytes in %d shards; want 100, %d in several", m.TotalSamples(), in, len(m.Shards), size)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := Write(ctx, memstore.New(), files, opts); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Write = %v, want context.Canceled", err)
	}
}
