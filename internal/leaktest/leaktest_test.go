package leaktest

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	failed string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, args ...any) {
	r.failed = fmt.Sprintf(format, args...)
}

// TestWaitSeesExitingGoroutine: a goroutine that has sent its result but
// not yet returned is waited for, not reported.
func TestWaitSeesExitingGoroutine(t *testing.T) {
	base := runtime.NumGoroutine()
	done := make(chan struct{})
	go func() { done <- struct{}{} }()
	<-done
	r := &recorder{TB: t}
	Wait(r, base)
	if r.failed != "" {
		t.Errorf("Wait reported a goroutine that was ending: %s", r.failed)
	}
}

// TestWaitReportsLeak: a goroutine still blocked is reported with stacks.
func TestWaitReportsLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	stop := make(chan struct{})
	go func() { <-stop }()
	r := &recorder{TB: t}
	waitFor(r, base, 100*time.Millisecond)
	if r.failed == "" {
		t.Error("Wait did not report a blocked goroutine")
	}
	close(stop)
	Wait(t, base) // and once it can end, it is waited for
}
