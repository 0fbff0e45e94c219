package worker

import (
	"container/list"
	"context"
	"sync"
)

// weighted is a FIFO semaphore over a budget of units (bytes or slots).
// golang.org/x/sync/semaphore does the same; this one saves a dependency
// and reports what it holds for the inflight gauge.
type weighted struct {
	mu      sync.Mutex
	size    int64
	cur     int64
	waiters list.List // of *waiter
}

type waiter struct {
	n     int64
	ready chan struct{}
}

func newWeighted(n int64) *weighted { return &weighted{size: n} }

// acquire takes n units (at most the budget: larger requests take the
// whole budget), waiting in FIFO order until they are free or ctx ends.
// It returns the units actually taken, to pass to release.
func (s *weighted) acquire(ctx context.Context, n int64) (int64, error) {
	n = min(n, s.size)
	s.mu.Lock()
	if s.cur+n <= s.size && s.waiters.Len() == 0 {
		s.cur += n
		s.mu.Unlock()
		return n, nil
	}
	w := &waiter{n: n, ready: make(chan struct{})}
	el := s.waiters.PushBack(w)
	s.mu.Unlock()
	select {
	case <-w.ready:
		return n, nil
	case <-ctx.Done():
		s.mu.Lock()
		select {
		case <-w.ready: // acquired after all: give it back
			s.cur -= n
			s.notify()
		default:
			s.waiters.Remove(el)
			s.notify() // a large waiter leaving may unblock smaller ones
		}
		s.mu.Unlock()
		return 0, ctx.Err()
	}
}

func (s *weighted) release(n int64) {
	s.mu.Lock()
	s.cur -= n
	if s.cur < 0 {
		s.mu.Unlock()
		panic("worker: semaphore released more than held")
	}
	s.notify()
	s.mu.Unlock()
}

// notify wakes waiters in order while they fit. Called with mu held.
func (s *weighted) notify() {
	for {
		el := s.waiters.Front()
		if el == nil {
			return
		}
		w := el.Value.(*waiter)
		if s.cur+w.n > s.size {
			return
		}
		s.cur += w.n
		s.waiters.Remove(el)
		close(w.ready)
	}
}

func (s *weighted) held() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// queued is the number of waiters (for tests).
func (s *weighted) queued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waiters.Len()
}
