// Package store is the small object-store interface that pack, index and
// the loader's read path share, and what every backend must do. The
// backends are packages of their own, so a user of one links only it:
//
//	store/filestore   a local or mounted directory (Mountpoint for S3, FSx)
//	store/s3store     S3, S3 Express One Zone, S3-compatible stores (MinIO)
//	store/memstore    in memory, for tests and embedding
//	store/storeuri    picks one of them from a URI (path, file://, s3://, mem://)
//
// Ranges, retries, decompression and metrics live in the worker package's
// Reader, not here: a backend makes one attempt per call and reports what
// went wrong. store/storetest is the conformance suite every backend runs.
//
// # Errors
//
// Missing objects, buckets and roots wrap ErrNotFound; a range that starts
// past the end of an object wraps ErrRange; a path that is empty, absolute
// or climbs out of the root wraps ErrInvalidPath; an error that retrying
// cannot fix (access denied, a bad request) wraps ErrPermanent. Other
// errors are the backend's, wrapped with the path they concern, and
// Transient says whether they are worth retrying.
package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
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

// IfMatcher is implemented by backends that can make a read conditional
// on the object's ETag (S3's If-Match): a read of an object whose ETag is
// no longer etag fails with an error wrapping ErrChanged, so a reader never
// decodes bytes of an object rewritten under its manifest, even one
// rewritten with the same size. The read path uses it where the manifest
// has an ETag.
type IfMatcher interface {
	ReadRangeIfMatch(ctx context.Context, path string, off, n int64, etag string) (io.ReadCloser, error)
}

// ErrChanged is wrapped by errors of a conditional read whose object no
// longer has the ETag asked for.
var ErrChanged = errors.New("object changed: ETag differs")

// ErrNotFound is wrapped by errors for missing objects, buckets and roots.
var ErrNotFound = errors.New("not found")

// ErrInvalidPath is wrapped by errors for paths that are empty, absolute or
// climb out of the root.
var ErrInvalidPath = errors.New("store: invalid path")

// ErrRange is wrapped by errors for ranges that start past an object's end.
var ErrRange = errors.New("range not satisfiable")

// ErrPermanent is wrapped by backend errors that a retry cannot fix: the
// store answered, and the answer was no (access denied, a bad request, a
// store that ignores ranges).
var ErrPermanent = errors.New("permanent")

// Transient reports whether err is worth retrying. Cancellation, missing
// objects, bad ranges and paths, permission errors and errors a backend
// marked ErrPermanent are not; anything else comes from the network or the
// disk (resets, bodies cut short, dial errors, per-attempt deadlines,
// throttling, server errors) and is. The caller tells its own deadline
// apart from a per-attempt one.
func Transient(err error) bool {
	switch {
	case err == nil, errors.Is(err, context.Canceled),
		errors.Is(err, ErrNotFound), errors.Is(err, ErrRange), errors.Is(err, ErrInvalidPath), errors.Is(err, ErrChanged),
		errors.Is(err, ErrPermanent), errors.Is(err, fs.ErrPermission):
		return false
	}
	return true
}

// Compile-time checks live beside each backend: var _ store.Store = (*T)(nil).

// ValidPath rejects paths that are empty, absolute or climb out of the
// root: a manifest is untrusted input.
func ValidPath(p string) error {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\\") {
		return fmt.Errorf("%w %q", ErrInvalidPath, p)
	}
	for _, el := range strings.Split(p, "/") {
		if el == "" || el == "." || el == ".." {
			return fmt.Errorf("%w %q", ErrInvalidPath, p)
		}
	}
	return nil
}

// CheckRange applies ReadRange's rules for an object of the given size and
// returns the number of bytes to read.
func CheckRange(path string, size, off, n int64) (int64, error) {
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

// EmptyBody is the body of zero-length reads.
var EmptyBody = io.NopCloser(strings.NewReader(""))

// ContextReader returns a reader of r that stops with ctx's error once ctx
// ends: a backend's Write copies with it so a long copy can be cancelled.
func ContextReader(ctx context.Context, r io.Reader) io.Reader { return ctxReader{ctx, r} }

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
