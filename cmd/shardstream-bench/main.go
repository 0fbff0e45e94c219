// Command shardstream-bench measures shardstream against its storage. It is
// a binary of its own, apart from shardstream, because it starts MinIO
// through internal/miniotest, which links the testing package: the
// production binary must not carry test code (make check-deps).
//
//	shardstream-bench read [flags]    read path vs plain ranged GETs on MinIO (make bench-read)
//	shardstream-bench epoch [flags]   store bytes fetched per epoch through a loader (make bench-epoch)
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
	"read":  {"measure the read path against plain ranged GETs", runRead},
	"epoch": {"measure store bytes fetched per epoch through a real loader", runEpoch},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "shardstream-bench:", err)
		}
		os.Exit(exitCode(err))
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	switch {
	case len(args) == 0:
		usage(stderr)
		return usageError{"no command given"}
	case args[0] == "-h" || args[0] == "--help":
		usage(stderr)
		return nil
	case args[0] == "help" && len(args) == 1:
		usage(stderr)
		return nil
	case args[0] == "help":
		// help COMMAND prints the command's flags, as COMMAND -h does.
		cmd, ok := commands[args[1]]
		if !ok {
			usage(stderr)
			return usageError{fmt.Sprintf("help: unknown command %q", args[1])}
		}
		if err := cmd.run(ctx, []string{"-h"}, stdout, stderr); !errors.Is(err, flag.ErrHelp) {
			return err
		}
		return nil
	}
	cmd, ok := commands[args[0]]
	if !ok {
		usage(stderr)
		return usageError{fmt.Sprintf("unknown command %q", args[0])}
	}
	return cmd.run(ctx, args[1:], stdout, stderr)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: shardstream-bench COMMAND [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-11s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'shardstream-bench COMMAND -h' for a command's flags.")
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
	fs := flag.NewFlagSet("shardstream-bench "+name, flag.ContinueOnError)
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
