// Command shardstream is the one binary of the service: it packs and
// indexes datasets, prints epoch plans, and serves the coordinator and the
// loader.
//
//	shardstream serve --data DIR|s3://bucket/prefix   embedded coordinator + loader
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
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

// command is one subcommand: it parses its own flags from args and runs
// until done or until ctx is cancelled.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"serve": {"serve a dataset: coordinator and loader in one process", runServe},
	"pack":  {"pack a directory of files into WebDataset tar shards and a manifest", runPack},
	"index": {"build the manifest of existing WebDataset shards", runIndex},
	"plan":  {"print an epoch plan as JSON lines", runPlan},
}

// moved are former commands, not listed in the usage: running one says
// where it went instead of "unknown command".
var moved = map[string]string{
	"bench-read": "bench-read moved to its own binary: make bench-read, or shardstream-bench read (go build ./cmd/shardstream-bench)",
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "shardstream:", err)
		}
		os.Exit(exitCode(err))
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	switch {
	case len(args) == 0:
		usage(stderr)
		return errors.New("no command given")
	case args[0] == "-h" || args[0] == "--help" || (args[0] == "help" && len(args) == 1):
		usage(stderr)
		return nil
	case args[0] == "help":
		return help(ctx, args[1:], stdout, stderr)
	}
	cmd, err := lookup(args[0], stderr)
	if err != nil {
		return err
	}
	return cmd.run(ctx, args[1:], stdout, stderr)
}

// lookup finds the command name; for an unknown one it prints the usage.
func lookup(name string, stderr io.Writer) (command, error) {
	if msg, ok := moved[name]; ok {
		return command{}, usageError{msg}
	}
	cmd, ok := commands[name]
	if !ok {
		usage(stderr)
		return command{}, fmt.Errorf("unknown command %q", name)
	}
	return cmd, nil
}

// help prints a command's flags, as "shardstream COMMAND -h" does, but
// exits 0: help was asked for, and given. An unknown command is a usage
// error (exit 2), so a script that misspells one notices.
func help(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 {
		usage(stderr)
		return usageError{fmt.Sprintf("help: want one command, got %q", args)}
	}
	cmd, err := lookup(args[0], stderr)
	if err != nil {
		return usageError{"help: " + err.Error()}
	}
	if err := cmd.run(ctx, []string{"-h"}, stdout, stderr); !errors.Is(err, flag.ErrHelp) {
		return err // every command parses its flags first: not reached
	}
	return nil
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: shardstream COMMAND [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-11s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'shardstream COMMAND -h' for a command's flags.")
}

// exitCode is 2 for usage errors and 1 for everything else.
func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

// usageError marks errors in the command line itself.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("shardstream "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// parseFlags parses args and turns flag errors into usage errors.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("unexpected arguments %q", fs.Args())}
	}
	return nil
}
