// Package storetest is the conformance suite every store.Store runs: the
// same cases against local directories, the in-memory store and S3 (a real
// MinIO), so the Reader can rely on one behaviour.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/shardstream/shardstream/store"
)

// Run runs the suite against s, which must hold nothing under "storetest/"
// and "storetestx".
func Run(t *testing.T, s store.Store) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	objects := map[string][]byte{
		"storetest/a":     data,
		"storetest/b/c":   []byte("nested"),
		"storetest/empty": {},
		"storetestx":      []byte("sibling"),
	}
	for p, d := range objects {
		if err := s.Write(ctx, p, bytes.NewReader(d)); err != nil {
			t.Fatalf("Write(%s): %v", p, err)
		}
	}

	t.Run("ReadRange", func(t *testing.T) {
		tests := []struct {
			path    string
			off, n  int64
			want    []byte
			wantErr error
		}{
			{"storetest/a", 0, -1, data, nil},
			{"storetest/a", 0, 0, nil, nil},
			{"storetest/a", 500, 0, nil, nil},
			{"storetest/a", 0, 1, data[:1], nil},
			{"storetest/a", 10, 20, data[10:30], nil},
			{"storetest/a", 990, -1, data[990:], nil},     // to the end
			{"storetest/a", 990, 100, data[990:], nil},    // runs past the end
			{"storetest/a", 0, 1000, data, nil},           // exactly the object
			{"storetest/a", 999, 1, data[999:], nil},      // last byte
			{"storetest/a", 1000, 1, nil, store.ErrRange}, // starts at the end
			{"storetest/a", 2000, -1, nil, store.ErrRange},
			{"storetest/empty", 0, -1, nil, nil},
			{"storetest/missing", 0, 10, nil, store.ErrNotFound},
			{"storetest/missing", 0, -1, nil, store.ErrNotFound},
			{"storetest/b", 0, -1, nil, store.ErrNotFound}, // a "directory"
		}
		for _, tt := range tests {
			name := fmt.Sprintf("%s[%d,+%d)", tt.path, tt.off, tt.n)
			got, err := readRange(ctx, s, tt.path, tt.off, tt.n)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Errorf("ReadRange %s: err = %v, want %v", name, err, tt.wantErr)
				}
				continue
			}
			if err != nil {
				t.Errorf("ReadRange %s: %v", name, err)
				continue
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("ReadRange %s = %d bytes, want %d bytes %s", name, len(got), len(tt.want), firstDiff(got, tt.want))
			}
		}
	})

	t.Run("Stat", func(t *testing.T) {
		for p, d := range objects {
			info, err := s.Stat(ctx, p)
			if err != nil {
				t.Errorf("Stat(%s): %v", p, err)
				continue
			}
			if info.Path != p || info.Size != int64(len(d)) {
				t.Errorf("Stat(%s) = %+v, want path %s size %d", p, info, p, len(d))
			}
		}
		if _, err := s.Stat(ctx, "storetest/missing"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Stat(missing) err = %v, want ErrNotFound", err)
		}
	})

	t.Run("InvalidPath", func(t *testing.T) {
		for _, p := range []string{"", "/abs", "../up", "storetest/../a", "a//b"} {
			if _, err := s.ReadRange(ctx, p, 0, -1); err == nil {
				t.Errorf("ReadRange(%q) succeeded, want an invalid-path error", p)
			}
			if err := s.Write(ctx, p, strings.NewReader("x")); err == nil {
				t.Errorf("Write(%q) succeeded, want an invalid-path error", p)
			}
		}
	})

	t.Run("List", func(t *testing.T) {
		tests := []struct {
			prefix string
			want   []string
		}{
			{"storetest/", []string{"storetest/a", "storetest/b/c", "storetest/empty"}},
			{"storetest", []string{"storetest/a", "storetest/b/c", "storetest/empty", "storetestx"}},
			{"storetest/b", []string{"storetest/b/c"}},
			{"storetest/b/", []string{"storetest/b/c"}},
			{"storetest/e", []string{"storetest/empty"}},
			{"nothing/", nil},
		}
		for _, tt := range tests {
			infos, err := s.List(ctx, tt.prefix)
			if err != nil {
				t.Errorf("List(%q): %v", tt.prefix, err)
				continue
			}
			var got []string
			for _, in := range infos {
				got = append(got, in.Path)
				if want := int64(len(objects[in.Path])); in.Size != want {
					t.Errorf("List(%q): %s size %d, want %d", tt.prefix, in.Path, in.Size, want)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("List(%q) paths (-want +got):\n%s", tt.prefix, diff)
			}
		}
	})

	t.Run("LargeWrite", func(t *testing.T) {
		// Larger than one upload part of the S3 store.
		const p = "storetest/large"
		big := make([]byte, 17<<20+123)
		for i := range big {
			big[i] = byte(i / 4093)
		}
		if err := s.Write(ctx, p, bytes.NewReader(big)); err != nil {
			t.Fatal(err)
		}
		info, err := s.Stat(ctx, p)
		if err != nil || info.Size != int64(len(big)) {
			t.Fatalf("Stat(%s) = %+v, %v; want size %d", p, info, err, len(big))
		}
		off := int64(16<<20 - 5000)
		got, err := readRange(ctx, s, p, off, 10000)
		if err != nil || !bytes.Equal(got, big[off:off+10000]) {
			t.Errorf("ReadRange across the part boundary: %d bytes, %v %s", len(got), err, firstDiff(got, big[off:off+10000]))
		}
	})

	t.Run("WriteReplaces", func(t *testing.T) {
		const p = "storetest/replaced"
		if err := s.Write(ctx, p, strings.NewReader("first version")); err != nil {
			t.Fatal(err)
		}
		before, err := s.Stat(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Write(ctx, p, strings.NewReader("second")); err != nil {
			t.Fatal(err)
		}
		got, err := readRange(ctx, s, p, 0, -1)
		if err != nil || string(got) != "second" {
			t.Fatalf("after replace: ReadRange = %q, %v; want %q", got, err, "second")
		}
		after, err := s.Stat(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if after.Size != 6 {
			t.Errorf("after replace: size %d, want 6", after.Size)
		}
		if before.ETag != "" && before.ETag == after.ETag {
			t.Errorf("after replace: ETag unchanged (%s)", after.ETag)
		}
	})
	t.Run("ReadRangeIfMatch", func(t *testing.T) {
		im, ok := s.(store.IfMatcher)
		if !ok {
			t.Skip("the backend has no conditional reads")
		}
		const p = "storetest/ifmatch"
		if err := s.Write(ctx, p, strings.NewReader("first!")); err != nil {
			t.Fatal(err)
		}
		info, err := s.Stat(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		rc, err := im.ReadRangeIfMatch(ctx, p, 1, 3, info.ETag)
		if err != nil {
			t.Fatalf("ReadRangeIfMatch(current ETag) = %v", err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || string(got) != "irs" {
			t.Errorf("ReadRangeIfMatch(current ETag) read %q, %v; want %q", got, err, "irs")
		}
		// Rewritten with the same size: every read after fails.
		if err := s.Write(ctx, p, strings.NewReader("second")); err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			rc, err := im.ReadRangeIfMatch(ctx, p, 1, 3, info.ETag)
			if err == nil {
				rc.Close()
			}
			if !errors.Is(err, store.ErrChanged) || store.Transient(err) {
				t.Errorf("read %d after a same-size rewrite: %v, want a permanent error wrapping ErrChanged", i, err)
			}
		}
	})
}

func readRange(ctx context.Context, s store.Store, p string, off, n int64) ([]byte, error) {
	rc, err := s.ReadRange(ctx, p, off, n)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func firstDiff(a, b []byte) string {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return fmt.Sprintf("(first difference at byte %d)", i)
		}
	}
	return ""
}
