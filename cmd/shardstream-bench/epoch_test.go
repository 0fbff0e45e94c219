package main

import (
	"bytes"
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shardstream/shardstream/internal/miniotest"
)

// TestBenchEpoch runs the epoch benchmark end to end on tiny datasets
// (MinIO started by the command): shards of 2 and 4 MiB in chunks of
// 256 KiB, so every shard has several chunks and the window of 8 chunks
// spans shards. It checks every line's form, that each ratio is its
// fetched / dataset bytes, and the goal on the last line: R ≤ 1.05, the
// largest ratio printed.
func TestBenchEpoch(t *testing.T) {
	bin := miniotest.BinaryFor(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := runEpoch(ctx, []string{"--minio", bin, "--shards", "2MiB,4MiB", "--dataset", "8MiB", "--chunk", "256KiB", "--caches", "0,1MiB,64MiB"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("bench-epoch: %v\nstderr:\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	want := []string{`^store http://127\.0\.0\.1:\d+; datasets of 8 MiB in shards of 2 MiB, 4 MiB \(uncompressed tar, 256 KiB chunks, samples of ~8 KiB\); window 8 chunks \(default\); batch 64; seed 1; memory cache off, 1 MiB, 64 MiB, world 1; world 4 at the default cache; GOMAXPROCS \d+$`}
	const figures = `: fetched / dataset bytes (\d+\.\d{3}) \((\d+) of (\d+)\), \d+ MB/s, [1-9]\d* steps, chunk memory per stream: peak [\d.]+ (?:KiB|MiB), reserved [\d.]+ MiB$`
	for _, shards := range []string{"2 MiB", "4 MiB"} {
		for _, c := range []string{"off, world 1", "1 MiB, world 1", "64 MiB, world 1", `default \(1 GiB\), world 4`} {
			want = append(want, `^shards `+shards+`, memory cache `+c+figures)
		}
	}
	want = append(want, `^store bytes fetched per epoch / dataset bytes \(worst case\): (\d+\.\d{3})$`)
	if len(lines) != len(want) {
		t.Fatalf("bench-epoch printed %d lines, want %d:\n%s", len(lines), len(want), stdout.String())
	}
	worst := 0.0
	for i, re := range want {
		m := regexp.MustCompile(re).FindStringSubmatch(lines[i])
		if m == nil {
			t.Errorf("line %d = %q, want it to match %s", i+1, lines[i], re)
			continue
		}
		if i == 0 || i == len(lines)-1 {
			continue
		}
		ratio, fetched, total := atof(t, m[1]), atof(t, m[2]), atof(t, m[3])
		if fetched == 0 || total == 0 || ratio != atof(t, strconv.FormatFloat(fetched/total, 'f', 3, 64)) {
			t.Errorf("line %d = %q: the ratio is not fetched / dataset bytes", i+1, lines[i])
		}
		worst = max(worst, ratio)
	}
	m := regexp.MustCompile(want[len(want)-1]).FindStringSubmatch(lines[len(lines)-1])
	if m == nil {
		return
	}
	if r := atof(t, m[1]); r != worst || r > 1.05 {
		t.Errorf("last line = %q: want the worst case ratio %.3f, at most 1.05", lines[len(lines)-1], worst)
	}
}

func TestBenchEpochFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--shards", "0"}, {"--shards", "x"}, {"--shards", "64MB"}, {"--dataset", "1GiB,2GiB"},
		{"--chunk", "-1"}, {"--caches", "-1"}, {"--batch", "0"}, {"--sample", ""},
	} {
		err := runEpoch(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{})
		if _, ok := err.(usageError); !ok {
			t.Errorf("bench-epoch %q = %v, want a usage error", args, err)
		}
	}
}

func TestParseSizes(t *testing.T) {
	got, err := parseSizes("0, 8192,256KiB,64MiB,1GiB", true)
	want := []int64{0, 8192, 256 << 10, 64 << 20, 1 << 30}
	if err != nil || len(got) != len(want) {
		t.Fatalf("parseSizes = %v, %v; want %v", got, err, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("parseSizes[%d] = %d, want %d", i, got[i], want[i])
		}
	}
	for _, s := range []string{"0", "9999999999GiB", "1TiB", "1.5MiB"} {
		if _, err := parseSizes(s, false); err == nil {
			t.Errorf("parseSizes(%q) = nil error, want one", s)
		}
	}
}

func atof(t *testing.T, s string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		t.Fatal(err)
	}
	return f
}
