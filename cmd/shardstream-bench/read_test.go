package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/shardstream/shardstream/internal/miniotest"
)

// TestBenchRead runs a tiny read benchmark end to end (MinIO started by the
// command) and checks the figures it prints and its last line.
func TestBenchRead(t *testing.T) {
	bin := miniotest.BinaryFor(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := runRead(ctx, []string{"--minio", bin, "--sizes", "2,3", "--chunk", "1", "--sample", "16", "--reps", "1", "--pass", "4"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench-read: %v\nstderr:\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	// One line per format and shard size, then both sizes together.
	want := []string{`^store http://127\.0\.0\.1:\d+; shards 2,3 MiB; `}
	for _, group := range []string{"2 MiB shard", "3 MiB shard", "all shards"} {
		want = append(want, `^uncompressed, `+group+`: plain GET \d+ MB/s .*read path \d+ MB/s .*; ratio \d+\.\d\d$`)
	}
	for _, group := range []string{"2 MiB shard", "3 MiB shard", "all shards"} {
		want = append(want, `^zstd \([\d.]+x\), `+group+`: plain GET \d+ MB/s stored; read path \d+ MB/s stored = \d+ MB/s decompressed`)
	}
	want = append(want, `^read path / plain GET \(uncompressed\): \d+\.\d\d$`)
	if len(lines) != len(want) {
		t.Fatalf("bench-read printed %d lines, want %d:\n%s", len(lines), len(want), stdout.String())
	}
	for i, re := range want {
		if !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Errorf("line %d = %q, want it to match %s", i+1, lines[i], re)
		}
	}
	if !strings.Contains(stderr.String(), "pass 1") {
		t.Errorf("no progress on stderr:\n%s", stderr.String())
	}
	// The passes after the first reuse pooled buffers.
	if !regexp.MustCompile(`none chunk buffers: (\d+ new, )?[1-9]\d* pool`).MatchString(stderr.String()) {
		t.Errorf("no pooled chunk buffers reported on stderr:\n%s", stderr.String())
	}
}

func TestBenchReadFlags(t *testing.T) {
	for _, args := range [][]string{{"--sizes", "0"}, {"--sizes", "x"}, {"--reps", "0"}, {"--formats", "gzip"}} {
		err := runRead(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{})
		if _, ok := err.(usageError); !ok {
			t.Errorf("bench-read %q = %v, want a usage error", args, err)
		}
	}
}
