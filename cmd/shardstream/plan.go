package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strconv"

	"github.com/shardstream/shardstream/internal/cli"
	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/sampler"
	"github.com/shardstream/shardstream/worker"
)

// planFlags are the flags of `shardstream plan`.
type planFlags struct {
	data      string
	seed      uint64
	epoch     uint64
	worldSize int
	batchSize int
	window    int
	dropLast  bool
	pad       bool
	resume    string
	steps     int64
	format    string
	s3        s3Flags
}

func (f *planFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.data, "data", "", "dataset root: a local directory or s3://bucket/prefix (required)")
	fs.Uint64Var(&f.seed, "seed", 0, "the job's shuffle seed")
	fs.Uint64Var(&f.epoch, "epoch", 0, "the epoch to plan")
	fs.IntVar(&f.worldSize, "world-size", 1, "number of trainer ranks")
	fs.IntVar(&f.batchSize, "batch-size", 1, "samples per batch (per rank)")
	fs.IntVar(&f.window, "window", sampler.DefaultWindow, "shuffle window in chunks (manifest chunks of about 8 MiB)")
	fs.BoolVar(&f.dropLast, "drop-last", false, "drop the tail that does not fill a step on every rank (the default)")
	fs.BoolVar(&f.pad, "pad", false, "pad the last step by repeating samples instead of dropping the tail")
	fs.StringVar(&f.resume, "resume", "", "resume token: plan from that point on (steps count from it)")
	fs.Int64Var(&f.steps, "steps", -1, "print only the first K steps (negative: all)")
	fs.StringVar(&f.format, "format", "jsonl", "output format; jsonl is the only one")
	f.s3.register(fs)
}

// runPlan prints an epoch plan as JSON lines, step-major: for step 0 the
// batch of rank 0, 1, …, then step 1, and so on — the order in which the
// job as a whole consumes samples:
//
//	{"rank":0,"step":0,"samples":[[shard,index],...]}
//
// Steps count from the resume point (0 without --resume). The last line,
// {"resume_token":"…"}, is the token for the point after the printed steps.
func runPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f planFlags
	fs := newFlagSet("plan", stderr)
	f.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if f.data == "" {
		return cli.Usage("plan: --data is required")
	}
	if f.dropLast && f.pad {
		return cli.Usage("plan: --drop-last and --pad exclude each other")
	}
	if f.format != "jsonl" {
		return cli.Usage(fmt.Sprintf("plan: --format %q, want jsonl", f.format))
	}
	policy := sampler.DropLast
	if f.pad {
		policy = sampler.Pad
	}
	var resume *sampler.Token
	if f.resume != "" {
		t, err := sampler.ParseToken(f.resume)
		if err != nil {
			return cli.Usage(fmt.Sprintf("plan: --resume: %v", err))
		}
		resume = &t
	}
	m, err := loadManifest(ctx, f.data, worker.Config{S3: f.s3.config()}, stderr)
	if err != nil {
		return err
	}
	job := sampler.Job{Fingerprint: m.Fingerprint(), Seed: f.seed, Epoch: f.epoch, Window: f.window, Policy: policy}
	p, err := sampler.New(m.Units(), job, resume, f.worldSize, f.batchSize)
	if err != nil {
		return fmt.Errorf("plan %s: %w", f.data, err)
	}
	steps := p.Steps()
	if f.steps >= 0 {
		steps = min(steps, f.steps)
	}
	w := bufio.NewWriterSize(stdout, 64<<10)
	var line []byte
	var batch []sampler.SampleID
	for s := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		for r := range p.WorldSize() {
			batch = p.Batch(r, s, batch[:0])
			line = appendBatchJSON(line[:0], r, s, batch)
			if _, err := w.Write(line); err != nil {
				return fmt.Errorf("plan: write: %w", err)
			}
		}
	}
	fmt.Fprintf(w, "{\"resume_token\":%q}\n", p.Token(steps).String()) // base64url needs no escaping
	if err := w.Flush(); err != nil {
		return fmt.Errorf("plan: write: %w", err)
	}
	return nil
}

// appendBatchJSON appends one plan line. Written by hand rather than with
// encoding/json: a plan of a large dataset is millions of lines.
func appendBatchJSON(b []byte, rank int, step int64, batch []sampler.SampleID) []byte {
	b = append(b, `{"rank":`...)
	b = strconv.AppendInt(b, int64(rank), 10)
	b = append(b, `,"step":`...)
	b = strconv.AppendInt(b, step, 10)
	b = append(b, `,"samples":[`...)
	for i, id := range batch {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, id.Shard, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, id.Index, 10)
		b = append(b, ']')
	}
	return append(b, "]}\n"...)
}

// loadManifest reads the dataset's manifest through the read path
// (worker.Open), the same way the loader does.
func loadManifest(ctx context.Context, uri string, cfg worker.Config, stderr io.Writer) (*manifest.Manifest, error) {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r, err := worker.Open(ctx, uri, cfg, log)
	if err != nil {
		return nil, fmt.Errorf("plan: %w", err)
	}
	defer r.Close()
	return r.Manifest(), nil
}
