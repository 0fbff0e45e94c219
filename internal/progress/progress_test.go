package progress

import (
	"bytes"
	"regexp"
	"testing"
	"time"
)

// TestBar: off a terminal one line per finished shard and nothing from
// Done; on a terminal a line redrawn in place, ended by Done.
func TestBar(t *testing.T) {
	start := time.Now().Add(-time.Second)
	var buf bytes.Buffer
	p := New(&buf, "pack", start) // a buffer is not a terminal
	p.Update(0, 5, 1e6)
	p.Update(1, 10, 2e6)
	p.Update(1, 11, 2.1e6)
	p.Update(2, 20, 4e6)
	p.Done()
	want := `^pack: 1 shards done, 10 samples, 2\.0 MB, [\d.]+ MB/s\npack: 2 shards done, 20 samples, 4\.0 MB, [\d.]+ MB/s\n$`
	if !regexp.MustCompile(want).MatchString(buf.String()) {
		t.Errorf("off a terminal wrote %q, want it to match %s", buf.String(), want)
	}

	buf.Reset()
	p = New(&buf, "index", start)
	p.tty = true
	p.Update(0, 5, 1e6)
	p.Update(0, 6, 1.1e6) // within 100 ms, no new shard: not drawn
	p.Update(1, 10, 2e6)
	p.Done()
	want = `^\rindex: 0 shards, 5 samples, 1\.0 MB, [\d.]+ MB/s   \rindex: 1 shards, 10 samples, 2\.0 MB, [\d.]+ MB/s   \n$`
	if !regexp.MustCompile(want).MatchString(buf.String()) {
		t.Errorf("on a terminal wrote %q, want it to match %s", buf.String(), want)
	}
}
