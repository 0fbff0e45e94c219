package store_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"testing"

	"github.com/shardstream/shardstream/store"
)

func TestTransient(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{context.Canceled, false},
		{fmt.Errorf("read x: %w", store.ErrNotFound), false},
		{fmt.Errorf("read x: %w", store.ErrRange), false},
		{fmt.Errorf("read x: %w", store.ErrInvalidPath), false},
		{fmt.Errorf("read x: %w: 403", store.ErrPermanent), false},
		{fmt.Errorf("open x: %w", fs.ErrPermission), false},
		{io.ErrUnexpectedEOF, true},
		{context.DeadlineExceeded, true}, // a per-attempt deadline: the caller checks its own
		{errors.New("connection reset by peer"), true},
	} {
		if got := store.Transient(tc.err); got != tc.want {
			t.Errorf("Transient(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
