// Package store is the tiny backend interface of the read path and its
// implementations: local directories, S3 (and S3-compatible stores) and an
// in-memory store for tests. Ranges, retries, decompression and metrics
// live in the worker package's Reader, not here: a backend makes one
// attempt per call and reports what went wrong.
//
// Open picks the backend from a URI:
//
//	/data/ds, file:///data/ds   a local or mounted directory
//	s3://bucket/prefix          S3 or, with Config.S3Endpoint, an S3-compatible store
//	mem://name                  a fresh in-memory store (tests)
//
// # Errors
//
// Missing objects, buckets and roots wrap ErrNotFound; a range that starts
// past the end of an object wraps ErrRange. Other errors are the backend's,
// wrapped with the path they concern.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Info describes one object.
type Info struct {
	Path string // relative to the store's root
	Size int64
	ETag string // empty where the backend has none
}

// Store is a flat namespace of objects under one root (a directory or an
// s3://bucket/prefix). Paths are slash-separated and relative to the root.
// Implementations are safe for concurrent use.
type Store interface {
	// ReadRange returns n bytes of the object at path from off; n < 0 reads
	// to the end. A range that runs past the end returns the bytes up to
	// the end; one that starts at or past the end wraps ErrRange, except
	// n == 0 (empty, no request made) and off == 0 with n < 0 (a whole
	// object, empty or not). A missing object wraps ErrNotFound.
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

var errInvalidPath = errors.New("store: invalid path")

// ErrRange is wrapped by errors for ranges that start past an object's end.
var ErrRange = errors.New("range not satisfiable")

// Config configures the backends Open makes. Zero values mean defaults.
type Config struct {
	// S3Endpoint overrides the S3 endpoint, e.g. http://127.0.0.1:9000 for
	// MinIO; empty means AWS (the SDK's endpoint resolution, which also
	// handles S3 Express One Zone directory buckets).
	S3Endpoint string
	// S3PathStyle uses path-style addressing (MinIO and most S3-compatible
	// stores); AWS wants virtual-hosted style, the default.
	S3PathStyle bool
	// S3Region is the bucket's region. Default: the SDK's (AWS_REGION,
	// shared config), else us-east-1.
	S3Region string
	// AccessKey and SecretKey are static credentials. Empty: the standard
	// AWS credential chain (environment, shared files, IRSA, IMDS …).
	AccessKey, SecretKey string
	// MaxConns is how many connections per host stay open between
	// requests: size it to the reader's GET concurrency, or every burst
	// pays new TCP (and TLS) handshakes. The SDK's default keeps 10.
	// Default 64.
	MaxConns int
}

func (c *Config) validate() error {
	if c.MaxConns < 0 {
		return fmt.Errorf("store: MaxConns %d < 0", c.MaxConns)
	}
	if (c.AccessKey == "") != (c.SecretKey == "") {
		return errors.New("store: AccessKey and SecretKey go together")
	}
	if c.MaxConns == 0 {
		c.MaxConns = 64
	}
	return nil
}

// Open returns the store for uri. A local root that does not exist or a
// bucket that does not exist is an error wrapping ErrNotFound and naming
// the uri.
func Open(ctx context.Context, uri string, cfg Config) (Store, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	switch {
	case strings.HasPrefix(uri, "s3://"):
		bucket, prefix, _ := strings.Cut(strings.TrimPrefix(uri, "s3://"), "/")
		if bucket == "" {
			return nil, fmt.Errorf("store: %q: no bucket", uri)
		}
		return openS3(ctx, bucket, strings.Trim(prefix, "/"), cfg)
	case strings.HasPrefix(uri, "file://"):
		return OpenLocal(strings.TrimPrefix(uri, "file://"))
	case strings.HasPrefix(uri, "mem://"):
		return NewMem(), nil
	case strings.Contains(uri, "://"):
		return nil, fmt.Errorf("store: %q: unknown scheme (want a path, file://, s3:// or mem://)", uri)
	case uri == "":
		return nil, errors.New("store: empty uri")
	default:
		return OpenLocal(uri)
	}
}

// validPath rejects paths that are empty, absolute or climb out of the
// root: a manifest is untrusted input.
func validPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") {
		return fmt.Errorf("%w %q", errInvalidPath, p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("%w %q", errInvalidPath, p)
		}
	}
	return nil
}

// checkRange applies ReadRange's rules for an object of the given size and
// returns the number of bytes to read.
func checkRange(path string, size, off, n int64) (int64, error) {
	if off < 0 {
		return 0, fmt.Errorf("read %s [%d,+%d): negative offset", path, off, n)
	}
	if n == 0 || (off == 0 && n < 0) {
		if n == 0 {
			return 0, nil
		}
		return size, nil
	}
	if off >= size {
		return 0, fmt.Errorf("read %s [%d,+%d) of %d bytes: %w", path, off, n, size, ErrRange)
	}
	if n < 0 || off+n > size {
		n = size - off
	}
	return n, nil
}

// emptyBody is the body of zero-length reads.
var emptyBody = io.NopCloser(strings.NewReader(""))
