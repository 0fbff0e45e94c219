// Package store is the tiny backend interface of the read path and its
// implementations: local directories, S3 (and S3-compatible stores) and an
// in-memory store for tests. Ranges, retries, decompression and metrics
// live in the worker package's Reader, not here.
//
// PLACEHOLDER: the interface is the contract; implementations are being
// written.
package store

import (
	"context"
	"errors"
	"io"
)

// Info describes one object.
type Info struct {
	Path string // relative to the store's root
	Size int64
	ETag string // empty where the backend has none
}

// Store is a flat namespace of objects under one root (a directory or an
// s3://bucket/prefix).
type Store interface {
	// ReadRange returns n bytes of the object at path from off; n < 0 reads
	// to the end. A missing object wraps ErrNotFound.
	ReadRange(ctx context.Context, path string, off, n int64) (io.ReadCloser, error)
	// Stat describes the object at path.
	Stat(ctx context.Context, path string) (Info, error)
	// Write stores the whole object at path, replacing any old one.
	Write(ctx context.Context, path string, r io.Reader) error
	// List returns the objects whose paths start with prefix, sorted.
	List(ctx context.Context, prefix string) ([]Info, error)
}

// ErrNotFound is wrapped by errors for missing objects, buckets and roots.
var ErrNotFound = errors.New("not found")
