package s3store_test

import (
	"context"
	"testing"

	"github.com/shardstream/shardstream/internal/miniotest"
	"github.com/shardstream/shardstream/store/s3store"
	"github.com/shardstream/shardstream/store/storetest"
)

// TestConformance runs the suite against a real MinIO, at the bucket's
// root and under a prefix.
func TestConformance(t *testing.T) {
	srv := miniotest.Start(t)
	srv.CreateBucket(t, "data")
	for _, prefix := range []string{"", "some/prefix"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			s, err := s3store.Open(context.Background(), "data", prefix, srv.S3Config())
			if err != nil {
				t.Fatal(err)
			}
			storetest.Run(t, s)
		})
	}
}
