// Package progress reports a long write or index on stderr: a bar redrawn
// in place on a terminal, one line per finished shard otherwise (a log
// file or CI output would fill with carriage returns).
package progress

import (
	"fmt"
	"io"
	"os"
	"time"
)

// Bar is one command's progress. Its methods are not safe for concurrent
// use: callers that update from several goroutines hold a lock.
type Bar struct {
	w      io.Writer
	what   string
	tty    bool
	start  time.Time
	drawn  time.Time
	shards int64
	line   bool
}

// New returns a Bar that writes to w, each line starting with what; rates
// count from start. It draws in place when w is a terminal.
func New(w io.Writer, what string, start time.Time) *Bar {
	p := &Bar{w: w, what: what, start: start}
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			p.tty = true
		}
	}
	return p
}

// Update reports the shards finished, samples and bytes so far. On a
// terminal it redraws at most every 100 ms, or when a shard finished.
func (p *Bar) Update(shards, samples, bytes int64) {
	now := time.Now()
	rate := float64(bytes) / 1e6 / max(now.Sub(p.start).Seconds(), 1e-9)
	if p.tty {
		if now.Sub(p.drawn) < 100*time.Millisecond && shards == p.shards {
			return
		}
		p.drawn, p.shards, p.line = now, shards, true
		fmt.Fprintf(p.w, "\r%s: %d shards, %d samples, %.1f MB, %.1f MB/s   ", p.what, shards, samples, float64(bytes)/1e6, rate)
		return
	}
	if shards != p.shards {
		p.shards = shards
		fmt.Fprintf(p.w, "%s: %d shards done, %d samples, %.1f MB, %.1f MB/s\n", p.what, shards, samples, float64(bytes)/1e6, rate)
	}
}

// Done ends the bar's line on a terminal.
func (p *Bar) Done() {
	if p.tty && p.line {
		fmt.Fprintln(p.w)
	}
}
