package main

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestBenchFanin runs fanin small: 4 loaders at 5 MB/s each (far below
// what the machine does, so the limits are the bottleneck) on a 2 MiB
// dataset. Every K must get every step once and in order (fanin fails
// otherwise), and 4 loaders must beat 1.
func TestBenchFanin(t *testing.T) {
	if testing.Short() {
		t.Skip("rate-limited epochs take a few seconds")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"fanin", "--rate", "5", "--dataset", "2097152", "--shard", "524288",
		"--chunk", "131072", "--sample", "16384", "--batch", "4", "--reps", "3"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("fanin: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	t.Logf("fanin:\n%s", out)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	perK := regexp.MustCompile(`^K=(\d) loaders: ([0-9.]+) MB/s .*, every one of (\d+) steps once and in order$`)
	mbps := map[string]float64{}
	for _, l := range lines[1 : len(lines)-1] {
		m := perK.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("line %q: want %v", l, perK)
		}
		mbps[m[1]] = atof(t, m[2])
	}
	for _, k := range []string{"1", "2", "4"} {
		if _, ok := mbps[k]; !ok {
			t.Fatalf("no line for K=%s in\n%s", k, out)
		}
	}
	last := regexp.MustCompile(`^rank throughput with 4 loaders / 1 loader: (\d+\.\d\d)$`)
	m := last.FindStringSubmatch(lines[len(lines)-1])
	if m == nil {
		t.Fatalf("last line %q: want %v", lines[len(lines)-1], last)
	}
	if r := atof(t, m[1]); r <= 1 || mbps["4"] <= mbps["1"] {
		t.Errorf("4 loaders / 1 loader = %v (%.1f vs %.1f MB/s), want > 1", r, mbps["4"], mbps["1"])
	}
}

func TestBenchFaninFlags(t *testing.T) {
	for _, args := range [][]string{
		{"--ks", "2,4"}, {"--ks", "0"}, {"--ks", "x"}, {"--rate", "0"}, {"--batch", "0"}, {"--reps", "0"}, {"--dataset", "-1"},
	} {
		err := runFanin(context.Background(), args, &bytes.Buffer{}, &bytes.Buffer{})
		if _, ok := err.(usageError); !ok {
			t.Errorf("bench-fanin %q = %v, want a usage error", args, err)
		}
	}
}
