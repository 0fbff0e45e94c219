package service

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"

	"github.com/shardstream/shardstream/worker/store"
)

// readCode classifies a read-path error by kind, never by message.
func readCode(err error) codes.Code {
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, store.ErrNotFound):
		return codes.NotFound
	}
	return codes.Internal
}
