package leaktest

import (
	"fmt"
	"runtime"
	"strings"
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

// TestWaitReportsLeak: goroutines still blocked are reported with stacks.
// The base may count a goroutine of the previous test that is still
// returning; when it ends, one new blocked goroutine would bring the count
// back to the base and hide. So three are started: the count stays above
// the base unless three such goroutines end meanwhile.
func TestWaitReportsLeak(t *testing.T) {
	base := runtime.NumGoroutine()
	stop := make(chan struct{})
	for range 3 {
		go blockedUntil(stop)
	}
	r := &recorder{TB: t}
	waitFor(r, base, 100*time.Millisecond)
	if r.failed == "" {
		t.Error("Wait did not report blocked goroutines")
	} else if !strings.Contains(r.failed, "leaktest.blockedUntil") {
		t.Errorf("the report does not show the blocked goroutines' stacks:\n%s", r.failed)
	}
	close(stop)
	Wait(t, base) // and once they can end, they are waited for
}

func blockedUntil(stop <-chan struct{}) { <-stop }
