package service

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"

	"github.com/shardstream/shardstream/worker"
)

// readCode classifies a read-path error by kind, never by message.
func readCode(err error) codes.Code {
	switch {
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	}
	switch worker.KindOf(err) {
	case worker.NotFound:
		return codes.NotFound
	case worker.Corrupt:
		return codes.DataLoss
	case worker.Changed:
		return codes.FailedPrecondition
	case worker.Unavailable:
		return codes.Unavailable
	case worker.Canceled:
		return codes.Canceled
	}
	return codes.Internal
}
