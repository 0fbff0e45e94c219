package worker

import (
	"context"
	"errors"
	"fmt"

	"github.com/shardstream/shardstream/store"
)

// Kind classifies an Error for the caller: the service turns kinds into
// gRPC codes.
type Kind int

// The kinds of Error.
const (
	Other       Kind = iota // not classified: permissions, bad arguments
	NotFound                // missing object, bucket or root
	Corrupt                 // bytes that do not decode, an unparsable manifest
	Changed                 // the object differs from the manifest (size, ETag)
	Unavailable             // throttling or failures outlasted the retries
	Canceled                // the caller's context was cancelled or its deadline passed
)

var kindNames = [...]string{"other", "not_found", "corrupt", "changed", "unavailable", "canceled"}

func (k Kind) String() string {
	if k < 0 || int(k) >= len(kindNames) {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k]
}

// Error is the error of every Reader method: what was being done to which
// shard at which offset, and why.
type Error struct {
	Shard  int    // index in the manifest; -1 for the manifest itself
	Path   string // object path, or the dataset uri for the manifest
	Offset int64  // byte offset in the object
	Op     string // "open", "stat", "read", "decode", "chunk"
	Kind   Kind
	Err    error
}

func (e *Error) Error() string {
	if e.Shard < 0 {
		return fmt.Sprintf("%s %s: %s: %v", e.Op, e.Path, e.Kind, e.Err)
	}
	return fmt.Sprintf("%s shard %d (%s) at offset %d: %s: %v", e.Op, e.Shard, e.Path, e.Offset, e.Kind, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the Kind of err: that of the *Error it wraps, Canceled
// for context errors, Other otherwise.
func KindOf(err error) Kind {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Kind
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return Canceled
	case errors.Is(err, store.ErrNotFound):
		return NotFound
	}
	return Other
}

// ErrChanged is wrapped by Changed errors.
var ErrChanged = errors.New("object changed under the manifest")

// ErrRetriesExhausted is wrapped by Unavailable errors.
var ErrRetriesExhausted = errors.New("retries exhausted")
