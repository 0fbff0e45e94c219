// Command shardstream is the one binary of the service: it packs and
// indexes datasets, prints epoch plans, and serves the coordinator and the
// loader.
//
//	shardstream serve --data DIR|s3://bucket/prefix   embedded coordinator + loader
//	shardstream coordinator --data … --listen …       plans and the live loader pool
//	shardstream loader --coordinator ADDR --data …    a loader in the coordinator's pool
//	shardstream status --coordinator ADDR [--json]    the pool: loaders and their load
//	shardstream pack  --input DIR --output DIR|s3://… pack files into tar shards
//	shardstream index --data DIR|s3://…               build a manifest for existing shards
//	shardstream plan  --data DIR|s3://… …             print an epoch plan as JSON lines
//	shardstream help  [COMMAND]                       the commands, or one command's flags
//
// The read-path benchmark is a binary of its own, cmd/shardstream-bench, so
// that this one links no test code (make check-deps).
package main

import (
	"context"
	"flag"
	"io"

	"github.com/shardstream/shardstream/internal/cli"
)

// program is the binary: its commands, and where former ones went.
var program = &cli.Program{
	Name: "shardstream",
	Commands: map[string]cli.Command{
		"serve":       {Summary: "serve a dataset: coordinator and loader in one process", Run: runServe},
		"coordinator": {Summary: "plan epochs and keep the live loader pool (serves no batches)", Run: runCoordinator},
		"loader":      {Summary: "stream batches; join a coordinator's pool by heartbeats and drain on SIGTERM", Run: runLoader},
		"status":      {Summary: "print a coordinator's loader pool", Run: runStatus},
		"pack":        {Summary: "pack a directory of files into WebDataset tar shards and a manifest", Run: runPack},
		"index":       {Summary: "build the manifest of existing WebDataset shards", Run: runIndex},
		"plan":        {Summary: "print an epoch plan as JSON lines", Run: runPlan},
	},
	Moved: map[string]string{
		"bench-read": "bench-read moved to its own binary: make bench-read, or shardstream-bench read (go build ./cmd/shardstream-bench)",
	},
}

func main() { program.Main() }

// run runs the command line args, for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return program.Run(ctx, args, stdout, stderr)
}

// exitCode is the process's exit code for err.
func exitCode(err error) int { return cli.ExitCode(err) }

// usageError marks errors in the command line itself.
type usageError = cli.UsageError

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	return cli.NewFlagSet("shardstream "+name, stderr)
}

func parseFlags(fs *flag.FlagSet, args []string) error { return cli.ParseFlags(fs, args) }
