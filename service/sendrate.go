package service

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/status"
)

// sendBucket is Config.SendBytesPerSecond: a token bucket shared by every
// stream of one server. A batch larger than the bucket is let through at
// once and paid for afterwards (the bucket goes into debt), so any batch
// size works and the long-run rate is the configured one. A nil bucket
// never waits.
type sendBucket struct {
	rate  float64 // bytes per second
	burst float64 // the most tokens saved up: a tenth of a second's worth

	mu     sync.Mutex
	tokens float64 // may be negative: debt the next senders wait out
	last   time.Time
}

func newSendBucket(bytesPerSecond int64) *sendBucket {
	if bytesPerSecond <= 0 {
		return nil
	}
	r := float64(bytesPerSecond)
	return &sendBucket{rate: r, burst: r / 10, tokens: r / 10, last: time.Now()}
}

// wait takes n bytes from the bucket, sleeping out any debt first; it
// returns ctx's status if ctx ends while it sleeps.
func (b *sendBucket) wait(ctx context.Context, n int) error {
	if b == nil {
		return nil
	}
	b.mu.Lock()
	now := time.Now()
	b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	b.tokens -= float64(n)
	var d time.Duration
	if b.tokens < 0 {
		d = time.Duration(-b.tokens / b.rate * float64(time.Second))
	}
	b.mu.Unlock()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return status.FromContextError(ctx.Err()).Err()
	}
}
