package filestore_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shardstream/shardstream/store"
	"github.com/shardstream/shardstream/store/filestore"
	"github.com/shardstream/shardstream/store/storetest"
)

func TestConformance(t *testing.T) {
	s, err := filestore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	storetest.Run(t, s)
}

func TestOpenFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := filestore.Open(f); err == nil {
		t.Errorf("Open(%s), a file, succeeded", f)
	}
}

// TestChangedUnderReader: a file rewritten in place or replaced by a
// rename, with the same size, fails every later read with ErrChanged; a
// write through the Store itself is a new version it reads.
func TestChangedUnderReader(t *testing.T) {
	ctx := context.Background()
	for _, how := range []string{"in place", "rename"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			s, err := filestore.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			name := filepath.Join(dir, "shard")
			if err := os.WriteFile(name, []byte("0123456789"), 0o644); err != nil {
				t.Fatal(err)
			}
			read := func() error {
				rc, err := s.ReadRange(ctx, "shard", 2, 4)
				if err != nil {
					return err
				}
				defer rc.Close()
				_, err = io.ReadAll(rc)
				return err
			}
			for range 2 {
				if err := read(); err != nil {
					t.Fatalf("read before the change: %v", err)
				}
			}
			switch how {
			case "in place":
				// A filesystem with coarse timestamps may not see the
				// modification time move within the same tick: set it.
				if err := os.WriteFile(name, []byte("abcdefghij"), 0o644); err != nil {
					t.Fatal(err)
				}
				later := time.Now().Add(time.Minute)
				if err := os.Chtimes(name, later, later); err != nil {
					t.Fatal(err)
				}
			case "rename":
				tmp := filepath.Join(dir, "new")
				if err := os.WriteFile(tmp, []byte("abcdefghij"), 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, name); err != nil {
					t.Fatal(err)
				}
			}
			for i := range 3 {
				if err := read(); !errors.Is(err, store.ErrChanged) {
					t.Errorf("read %d after a same-size change %s = %v, want ErrChanged", i, how, err)
				}
			}
			if err := s.Write(ctx, "shard", strings.NewReader("ABCDEFGHIJ")); err != nil {
				t.Fatal(err)
			}
			if err := read(); err != nil {
				t.Errorf("read after the Store's own Write = %v, want nil", err)
			}
		})
	}
}
