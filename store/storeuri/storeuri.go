// Package storeuri opens the store a URI names:
//
//	/data/ds, file:///data/ds   a local or mounted directory (store/filestore)
//	s3://bucket/prefix          S3 or, with an endpoint, an S3-compatible store (store/s3store)
//	mem://name                  a fresh in-memory store (store/memstore)
//
// It links every backend; a program that needs one backend imports that
// backend's package instead.
package storeuri

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/shardstream/shardstream/store"
	"github.com/shardstream/shardstream/store/filestore"
	"github.com/shardstream/shardstream/store/memstore"
	"github.com/shardstream/shardstream/store/s3store"
)

// Open returns the store for uri; s3 configures s3:// URIs and is ignored
// for the others. A local root or a bucket that does not exist is an error
// wrapping store.ErrNotFound and naming the uri.
func Open(ctx context.Context, uri string, s3 s3store.Config) (store.Store, error) {
	switch {
	case strings.HasPrefix(uri, "s3://"):
		bucket, prefix, _ := strings.Cut(strings.TrimPrefix(uri, "s3://"), "/")
		if bucket == "" {
			return nil, fmt.Errorf("store: %q: no bucket", uri)
		}
		return s3store.Open(ctx, bucket, strings.Trim(prefix, "/"), s3)
	case strings.HasPrefix(uri, "file://"):
		return filestore.Open(strings.TrimPrefix(uri, "file://"))
	case strings.HasPrefix(uri, "mem://"):
		return memstore.New(), nil
	case strings.Contains(uri, "://"):
		return nil, fmt.Errorf("store: %q: unknown scheme (want a path, file://, s3:// or mem://)", uri)
	case uri == "":
		return nil, errors.New("store: empty uri")
	default:
		return filestore.Open(uri)
	}
}
