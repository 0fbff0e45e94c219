package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/sampler"
	"github.com/shardstream/shardstream/worker"
)

// planTestManifest is a hand-written manifest: 4 shards of 5, 0, 7 and 3
// samples (15 in all).
const planTestManifest = `{
 "version": 1,
 "shards": [
  {"path": "a.tar", "size": 5120, "samples": 5, "compression": "none",
   "chunks": [{"offset": 0, "size": 5120, "raw_size": 5120, "first_sample": 0, "samples": 5}]},
  {"path": "b.tar", "size": 1024, "samples": 0, "compression": "none", "chunks": []},
  {"path": "c.tar.zst", "size": 3000, "samples": 7, "compression": "zstd",
   "chunks": [{"offset": 0, "size": 1000, "raw_size": 4096, "first_sample": 0, "samples": 4},
              {"offset": 1000, "size": 2000, "raw_size": 3072, "first_sample": 4, "samples": 3}]},
  {"path": "d.tar", "size": 3072, "samples": 3, "compression": "none",
   "chunks": [{"offset": 0, "size": 3072, "raw_size": 3072, "first_sample": 0, "samples": 3}]}
 ]
}`

var planTestCounts = []int64{5, 0, 7, 3}

type planLine struct {
	Rank        *int       `json:"rank"`
	Step        *int64     `json:"step"`
	Samples     [][2]int64 `json:"samples"`
	ResumeToken *string    `json:"resume_token"`
}

// runPlanTest runs `shardstream plan` in process on dir and returns the
// batch lines and the resume token.
func runPlanTest(t *testing.T, args ...string) ([]planLine, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := runPlan(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("plan %v: %v (stderr %q)", args, err, stderr.String())
	}
	var lines []planLine
	var token string
	for i, raw := range strings.Split(strings.TrimSuffix(stdout.String(), "\n"), "\n") {
		var l planLine
		if err := json.Unmarshal([]byte(raw), &l); err != nil {
			t.Fatalf("plan %v: line %d %q: %v", args, i, raw, err)
		}
		if token != "" {
			t.Fatalf("plan %v: line %d %q after the resume token", args, i, raw)
		}
		if l.ResumeToken != nil {
			token = *l.ResumeToken
			continue
		}
		if l.Rank == nil || l.Step == nil {
			t.Fatalf("plan %v: line %d %q has no rank or step", args, i, raw)
		}
		lines = append(lines, l)
	}
	if token == "" {
		t.Fatalf("plan %v: no resume_token line in %q", args, stdout.String())
	}
	return lines, token
}

func planTestDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), []byte(planTestManifest), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestPlanCommand(t *testing.T) {
	dir := planTestDir(t)
	base := []string{"--data", dir, "--seed", "7", "--epoch", "2", "--world-size", "2", "--batch-size", "3", "--window", "2"}
	lines, token := runPlanTest(t, base...)

	// 15 samples, 2 ranks × 3: 2 steps, 3 samples dropped; step-major order.
	if len(lines) != 4 {
		t.Fatalf("plan printed %d batch lines, want 2 steps × 2 ranks = 4", len(lines))
	}
	seen := map[[2]int64]bool{}
	for i, l := range lines {
		if *l.Step != int64(i/2) || *l.Rank != i%2 {
			t.Errorf("line %d is step %d rank %d, want step %d rank %d", i, *l.Step, *l.Rank, i/2, i%2)
		}
		if len(l.Samples) != 3 {
			t.Errorf("line %d has %d samples, want 3", i, len(l.Samples))
		}
		for _, s := range l.Samples {
			if s[0] < 0 || s[0] >= int64(len(planTestCounts)) || s[1] < 0 || s[1] >= planTestCounts[s[0]] || seen[s] {
				t.Errorf("line %d: sample %v is not a sample of the dataset or repeats", i, s)
			}
			seen[s] = true
		}
	}

	// The printed plan is the sampler's plan for the manifest's fingerprint.
	tok, err := sampler.ParseToken(token)
	if err != nil {
		t.Fatalf("resume token %q: %v", token, err)
	}
	if tok.Seed != 7 || tok.Epoch != 2 || tok.Window != 2 || tok.Policy != sampler.DropLast ||
		len(tok.Segments) != 1 || tok.Segments[0] != (sampler.Segment{WorldSize: 2, BatchSize: 3, Steps: 2}) {
		t.Errorf("resume token %+v, want seed 7 epoch 2 window 2 drop-last and 2 of 2 steps consumed", tok)
	}
	m, err := manifest.Parse([]byte(planTestManifest))
	if err != nil {
		t.Fatal(err)
	}
	p, err := sampler.New(m.Units(), tok.Job, nil, 2, 3) // one unit per chunk: c.tar.zst is two
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range lines {
		var want [][2]int64
		for _, id := range p.Batch(*l.Rank, *l.Step, nil) {
			want = append(want, [2]int64{id.Shard, id.Index})
		}
		if fmt.Sprint(want) != fmt.Sprint(l.Samples) {
			t.Errorf("line %d: samples %v, sampler says %v", i, l.Samples, want)
		}
	}

	// --steps 1, then --resume from its token: the two halves are the
	// whole plan.
	first, tok1 := runPlanTest(t, append(base, "--steps", "1")...)
	rest, tok2 := runPlanTest(t, append(base, "--resume", tok1)...)
	if len(first) != 2 || len(rest) != 2 {
		t.Fatalf("--steps 1 printed %d lines and the resume %d, want 2 and 2", len(first), len(rest))
	}
	for i, l := range append(first, rest...) {
		if fmt.Sprint(l.Samples) != fmt.Sprint(lines[i].Samples) || *l.Rank != *lines[i].Rank {
			t.Errorf("line %d of --steps 1 + --resume is %v, the whole plan has %v", i, l.Samples, lines[i].Samples)
		}
	}
	if tok2 != token {
		t.Errorf("token after resuming to the end %q, want %q", tok2, token)
	}

	// --pad: every sample at least once.
	padLines, _ := runPlanTest(t, "--data", dir, "--world-size", "2", "--batch-size", "4", "--pad")
	all := map[[2]int64]bool{}
	for _, l := range padLines {
		for _, s := range l.Samples {
			all[s] = true
		}
	}
	if len(padLines) != 4 || len(all) != 15 {
		t.Errorf("--pad: %d lines with %d distinct samples, want 4 lines covering all 15", len(padLines), len(all))
	}
}

func TestPlanCommandErrors(t *testing.T) {
	dir := planTestDir(t)
	otherSeed := sampler.Token{Job: sampler.Job{Fingerprint: "x", Seed: 1, Window: 4, Policy: sampler.DropLast}}.String()
	tests := []struct {
		name   string
		args   []string
		usage  bool
		target error
		substr string
	}{
		{"no data", []string{"--world-size", "2"}, true, nil, "--data is required"},
		{"both policies", []string{"--data", dir, "--pad", "--drop-last"}, true, nil, "exclude"},
		{"format", []string{"--data", dir, "--format", "csv"}, true, nil, "jsonl"},
		{"bad token", []string{"--data", dir, "--resume", "garbage!"}, true, nil, "malformed resume token"},
		{"missing dataset", []string{"--data", filepath.Join(dir, "nope")}, false, nil, "nope"},
		{"zero world", []string{"--data", dir, "--world-size", "0"}, false, sampler.ErrInvalid, "world size 0"},
		{"token of another dataset", []string{"--data", dir, "--seed", "1", "--resume", otherSeed}, false, sampler.ErrTokenMismatch, "fingerprint"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runPlan(context.Background(), tt.args, &stdout, &stderr)
			var u usageError
			if err == nil || errors.As(err, &u) != tt.usage || (tt.target != nil && !errors.Is(err, tt.target)) ||
				!strings.Contains(err.Error(), tt.substr) {
				t.Fatalf("plan %v = %v, want an error (usage %v, wrapping %v) containing %q", tt.args, err, tt.usage, tt.target, tt.substr)
			}
			if tt.name == "missing dataset" && worker.KindOf(err) != worker.NotFound {
				t.Fatalf("plan %v = %v, kind %v, want %v", tt.args, err, worker.KindOf(err), worker.NotFound)
			}
		})
	}
}
