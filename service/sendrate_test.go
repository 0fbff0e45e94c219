package service

import (
	"context"
	"testing"
	"time"
)

func TestSendBucketRate(t *testing.T) {
	var none *sendBucket
	if err := none.wait(context.Background(), 1<<30); err != nil {
		t.Fatal(err)
	}
	if newSendBucket(0) != nil {
		t.Fatal("newSendBucket(0) is not nil")
	}
	b := newSendBucket(1 << 20) // 1 MiB/s, burst 0.1 s
	start := time.Now()
	for range 4 {
		if err := b.wait(context.Background(), 64<<10); err != nil {
			t.Fatal(err)
		}
	}
	// 256 KiB at 1 MiB/s less the 0.1 s burst: at least 0.15 s.
	if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
		t.Fatalf("256 KiB at 1 MiB/s took %v, want about 0.15s", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := b.wait(ctx, 1<<20); err == nil {
		t.Fatal("wait with a cancelled context and a debt: no error")
	}
}
