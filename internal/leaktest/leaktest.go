// Package leaktest checks that a test leaves no goroutine behind.
//
// A goroutine that has sent its last result is still counted until it
// returns, so a count taken right after the receive can be one too high.
// Check therefore polls the count until it is back at the base or a
// deadline passes: there is nothing to wait on for another goroutine's
// exit. Tests using it must not run in parallel with others.
package leaktest

import (
	"runtime"
	"testing"
	"time"
)

// Timeout is how long Check waits for goroutines to end.
const Timeout = 10 * time.Second

// Check records the goroutine count now and, when the test's cleanups run
// (after every cleanup registered later, LIFO), fails the test if
// goroutines started since are still running after Timeout, printing
// every stack. Call it first in the test.
func Check(t testing.TB) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() { Wait(t, base) })
}

// Wait fails t unless the goroutine count falls to base within Timeout.
func Wait(t testing.TB, base int) {
	t.Helper()
	waitFor(t, base, Timeout)
}

func waitFor(t testing.TB, base int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("goroutines: %d at the start, %d at the end:\n%s", base, runtime.NumGoroutine(), buf)
			return
		}
		time.Sleep(5 * time.Millisecond) // polling the count: there is nothing to wait on
	}
}
