// Command shardstream-bench measures shardstream against its storage. It is
// a binary of its own, apart from shardstream, because it starts MinIO
// through internal/miniotest, which links the testing package: the
// production binary must not carry test code (make check-deps).
//
//	shardstream-bench read [flags]    read path vs plain ranged GETs on MinIO (make bench-read)
//	shardstream-bench epoch [flags]   store bytes fetched per epoch through a loader (make bench-epoch)
//	shardstream-bench client [flags]  one stream from a running server, the Go client (make bench-client)
//	shardstream-bench fanin [flags]   one rank through 1, 2, 4 rate-limited loaders (make bench-fanin)
package main

import (
	"context"
	"flag"
	"io"

	"github.com/shardstream/shardstream/internal/cli"
)

var program = &cli.Program{
	Name: "shardstream-bench",
	Commands: map[string]cli.Command{
		"read":   {Summary: "measure the read path against plain ranged GETs", Run: runRead},
		"epoch":  {Summary: "measure store bytes fetched per epoch through a real loader", Run: runEpoch},
		"client": {Summary: "read one stream from a running server and report MB/s and CPU per GB", Run: runClient},
		"fanin":  {Summary: "one rank's MB/s through 1, 2, 4 loaders each limited to a fixed send rate", Run: runFanin},
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
	return cli.NewFlagSet("shardstream-bench "+name, stderr)
}

func parseFlags(fs *flag.FlagSet, args []string) error { return cli.ParseFlags(fs, args) }
