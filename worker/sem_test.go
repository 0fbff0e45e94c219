package worker

import (
	"context"
	"testing"
	"time"
)

func TestWeighted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s := newWeighted(10)
	if n, err := s.acquire(ctx, 100); err != nil || n != 10 {
		t.Fatalf("acquire(100) of 10 = %d, %v; want the whole budget", n, err)
	}
	// A waiter whose context ends leaves the queue.
	cctx, ccancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() {
		_, err := s.acquire(cctx, 5)
		done <- err
	}()
	ccancel()
	if err := <-done; err == nil {
		t.Fatal("acquire on a cancelled context succeeded")
	}
	// FIFO: a large waiter first, a small one behind it.
	got := make(chan int64, 2)
	go func() { n, _ := s.acquire(ctx, 8); got <- n }()
	for s.queued() < 1 {
		time.Sleep(time.Millisecond)
	}
	go func() { n, _ := s.acquire(ctx, 2); got <- n }()
	for s.queued() < 2 {
		time.Sleep(time.Millisecond)
	}
	s.release(10)
	a, b := <-got, <-got
	if a+b != 10 || s.held() != 10 {
		t.Fatalf("after release: waiters got %d and %d, held %d; want 8+2 and 10", a, b, s.held())
	}
	s.release(8)
	s.release(2)
	if s.held() != 0 {
		t.Fatalf("held %d after releasing everything", s.held())
	}
	if n, err := s.acquire(ctx, 10); err != nil || n != 10 {
		t.Fatalf("acquire(10) after releasing everything = %d, %v", n, err)
	}
}
