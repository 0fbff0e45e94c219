package storeuri_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shardstream/shardstream/internal/miniotest"
	"github.com/shardstream/shardstream/store"
	"github.com/shardstream/shardstream/store/s3store"
	"github.com/shardstream/shardstream/store/storetest"
	"github.com/shardstream/shardstream/store/storeuri"
)

// TestSchemes runs the conformance suite through every scheme Open knows.
func TestSchemes(t *testing.T) {
	srv := miniotest.Start(t)
	srv.CreateBucket(t, "data")
	for _, uri := range []string{t.TempDir(), "file://" + t.TempDir(), "mem://x", "s3://data", "s3://data/some/prefix/"} {
		t.Run(uri, func(t *testing.T) {
			s, err := storeuri.Open(context.Background(), uri, srv.S3Config())
			if err != nil {
				t.Fatal(err)
			}
			storetest.Run(t, s)
		})
	}
}

func TestOpenMissing(t *testing.T) {
	srv := miniotest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	missingDir := filepath.Join(t.TempDir(), "nope")
	for _, uri := range []string{missingDir, "file://" + missingDir, "s3://no-such-bucket/x"} {
		_, err := storeuri.Open(ctx, uri, srv.S3Config())
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Open(%s) err = %v, want ErrNotFound", uri, err)
		}
	}
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := storeuri.Open(ctx, f, s3store.Config{}); err == nil {
		t.Errorf("Open(%s), a file, succeeded", f)
	}
	if _, err := storeuri.Open(ctx, "gs://bucket", s3store.Config{}); err == nil {
		t.Error("Open(gs://bucket) succeeded, want unknown scheme")
	}
}
