package store_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shardstream/shardstream/internal/miniotest"
	"github.com/shardstream/shardstream/worker/store"
	"github.com/shardstream/shardstream/worker/store/storetest"
)

func TestLocal(t *testing.T) {
	s, err := store.Open(context.Background(), t.TempDir(), store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	storetest.Run(t, s)
}

func TestLocalFileURI(t *testing.T) {
	s, err := store.Open(context.Background(), "file://"+t.TempDir(), store.Config{})
	if err != nil {
		t.Fatal(err)
	}
	storetest.Run(t, s)
}

func TestMem(t *testing.T) {
	storetest.Run(t, store.NewMem())
}

func TestS3(t *testing.T) {
	srv := miniotest.Start(t)
	srv.CreateBucket(t, "data")
	for _, uri := range []string{"s3://data", "s3://data/some/prefix/"} {
		t.Run(uri, func(t *testing.T) {
			s, err := store.Open(context.Background(), uri, s3Config(srv))
			if err != nil {
				t.Fatal(err)
			}
			storetest.Run(t, s)
		})
	}
}

func s3Config(srv *miniotest.Server) store.Config {
	return store.Config{S3Endpoint: srv.Endpoint, S3PathStyle: true, S3Region: srv.Region, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}
}

func TestOpenMissing(t *testing.T) {
	srv := miniotest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	missingDir := filepath.Join(t.TempDir(), "nope")
	for _, uri := range []string{missingDir, "file://" + missingDir, "s3://no-such-bucket/x"} {
		_, err := store.Open(ctx, uri, s3Config(srv))
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Open(%s) err = %v, want ErrNotFound", uri, err)
		}
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, []byte("x"), 0o644)
	if _, err := store.Open(ctx, f, store.Config{}); err == nil {
		t.Errorf("Open(%s), a file, succeeded", f)
	}
	if _, err := store.Open(ctx, "gs://bucket", store.Config{}); err == nil {
		t.Error("Open(gs://bucket) succeeded, want unknown scheme")
	}
}
