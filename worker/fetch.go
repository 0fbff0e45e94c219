package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/shardstream/shardstream/store"
)

// fetchRange reads [off, off+n) of path into buf (len n) with parallel
// ranged GETs, each retried on its own. The first part to fail for good
// cancels the others.
func (r *Reader) fetchRange(ctx context.Context, shard int, path string, off int64, buf []byte) error {
	n := int64(len(buf))
	ps := partSize(n, r.cfg.PartSize)
	if n <= ps {
		return r.fetchPart(ctx, shard, path, off, buf)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		once     sync.Once
		firstErr error
	)
	for p := int64(0); p < n; p += ps {
		part := buf[p:min(p+ps, n)]
		wg.Go(func() {
			if err := r.fetchPart(ctx, shard, path, off+p, part); err != nil {
				once.Do(func() { firstErr = err; cancel() })
			}
		})
	}
	wg.Wait()
	return firstErr
}

// partSize splits n bytes into parts of about max bytes of equal size, so
// that parallel parts take equally long: a chunk a little over PartSize
// (chunks end at a sample boundary) is one GET, not one plus a sliver; a
// larger one splits evenly.
func partSize(n, max int64) int64 {
	parts := n / max
	if n%max > max/8 || parts == 0 {
		parts++
	}
	return (n + parts - 1) / parts
}

// fetchPart fills buf from [off, off+len(buf)) of path, retrying
// transient failures with backoff. It holds a GET slot only while a GET is
// in flight, not while it backs off.
func (r *Reader) fetchPart(ctx context.Context, shard int, path string, off int64, buf []byte) error {
	return r.retry(ctx, r.gets, shard, path, off, "read", func(ctx context.Context) error {
		start := time.Now()
		var rc io.ReadCloser
		var err error
		// With the manifest's ETag and a store that can, every GET is
		// conditional: an object rewritten under the manifest, even with
		// the same size, fails each read, not only the first Stat.
		if im, ok := r.store.(store.IfMatcher); ok && r.man.Shards[shard].ETag != "" {
			rc, err = im.ReadRangeIfMatch(ctx, path, off, int64(len(buf)), r.man.Shards[shard].ETag)
		} else {
			rc, err = r.store.ReadRange(ctx, path, off, int64(len(buf)))
		}
		if err != nil {
			return err
		}
		got, err := io.ReadFull(rc, buf)
		if err == nil {
			// Read on to EOF: proves the body was exactly the range, and
			// lets the HTTP transport reuse the connection.
			var probe [1]byte
			if k, _ := rc.Read(probe[:]); k > 0 {
				err = fmt.Errorf("body longer than the %d bytes asked", len(buf))
			}
		}
		rc.Close()
		r.m.bytes.Add(float64(got))
		r.m.getTime.Observe(time.Since(start).Seconds())
		if err != nil {
			// A body cut short (a reset, a proxy's truncation, or the
			// object shrinking) is worth another try; a persistent one
			// ends as Unavailable and the Stat check names the change.
			return fmt.Errorf("read [%d,+%d): got %d bytes: %w", off, len(buf), got, err)
		}
		return nil
	})
}

// retry runs op until it succeeds, fails for good, or runs out of
// attempts. Each attempt first takes a slot of gate (when not nil), then
// gets PartTimeout: waiting for a slot under load is not a stalled
// request. Errors come back as *Error.
func (r *Reader) retry(ctx context.Context, gate *weighted, shard int, path string, off int64, opName string, op func(context.Context) error) error {
	canceled := func() error {
		return &Error{Shard: shard, Path: path, Offset: off, Op: opName, Kind: Canceled, Err: context.Cause(ctx)}
	}
	var err error
	for attempt := 1; ; attempt++ {
		if gate != nil {
			if _, err := gate.acquire(ctx, 1); err != nil {
				return canceled()
			}
		}
		actx, cancel := context.WithTimeout(ctx, r.cfg.PartTimeout)
		err = op(actx)
		cancel()
		if gate != nil {
			gate.release(1)
		}
		if err == nil {
			return nil
		}
		if ctx.Err() != nil { // the caller's, not the attempt's deadline
			return canceled()
		}
		if !store.Transient(err) {
			return &Error{Shard: shard, Path: path, Offset: off, Op: opName, Kind: permanentKind(err), Err: err}
		}
		if attempt >= r.cfg.MaxAttempts {
			return &Error{Shard: shard, Path: path, Offset: off, Op: opName, Kind: Unavailable,
				Err: fmt.Errorf("%w after %d attempts: %w", ErrRetriesExhausted, attempt, err)}
		}
		d := r.backoff(attempt)
		r.m.retries.Inc()
		r.log.Warn("retrying read", "shard", shard, "path", path, "offset", off, "op", opName,
			"attempt", attempt, "backoff", d, "err", err)
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return canceled()
		case <-t.C:
		}
	}
}

// backoff is "equal jitter" over an exponential ceiling: uniform in
// [ceiling/2, ceiling], ceiling = RetryBase·2^(attempt-1) capped at
// RetryMax. The floor of half keeps a throttled store from seeing
// near-immediate retries.
func (r *Reader) backoff(attempt int) time.Duration {
	ceil := r.cfg.RetryBase << min(attempt-1, 30)
	if ceil > r.cfg.RetryMax || ceil <= 0 {
		ceil = r.cfg.RetryMax
	}
	return ceil/2 + rand.N(ceil/2+1)
}

func permanentKind(err error) Kind {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return NotFound
	case errors.Is(err, store.ErrRange):
		return Changed // the manifest points past the object's end
	case errors.Is(err, store.ErrChanged):
		return Changed // a conditional read: the ETag moved
	}
	return Other
}
