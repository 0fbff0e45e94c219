// Package cli is the command-line frame the project's binaries share:
// subcommands that parse their own flags, `help [COMMAND]`, usage errors,
// and one exit code policy (2 for a bad command line, 1 for any other
// failure, 0 for success and for help asked for).
package cli

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

// Command is one subcommand: it parses its own flags from args and runs
// until done or until ctx is cancelled.
type Command struct {
	Summary string
	Run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

// Program is a binary made of subcommands.
type Program struct {
	Name     string
	Commands map[string]Command
	// Moved are former commands, not listed in the usage: running one
	// says where it went instead of "unknown command".
	Moved map[string]string
}

// Main runs the program on the process's arguments until it ends or a
// SIGINT or SIGTERM cancels it, and exits with ExitCode.
func (p *Program) Main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := p.Run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "%s: %v\n", p.Name, err)
		}
		os.Exit(ExitCode(err))
	}
}

// Run runs the command args name.
func (p *Program) Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	switch {
	case len(args) == 0:
		p.usage(stderr)
		return Usage("no command given")
	case args[0] == "-h" || args[0] == "--help" || (args[0] == "help" && len(args) == 1):
		p.usage(stderr)
		return nil
	case args[0] == "help":
		return p.help(ctx, args[1:], stdout, stderr)
	}
	cmd, err := p.lookup(args[0], stderr)
	if err != nil {
		return err
	}
	return cmd.Run(ctx, args[1:], stdout, stderr)
}

// lookup finds the command name; for an unknown one it prints the usage.
func (p *Program) lookup(name string, stderr io.Writer) (Command, error) {
	if msg, ok := p.Moved[name]; ok {
		return Command{}, Usage(msg)
	}
	cmd, ok := p.Commands[name]
	if !ok {
		p.usage(stderr)
		return Command{}, Usage(fmt.Sprintf("unknown command %q", name))
	}
	return cmd, nil
}

// help prints a command's flags, as "PROGRAM COMMAND -h" does, but succeeds:
// help was asked for, and given. An unknown command is a usage error, so a
// script that misspells one notices.
func (p *Program) help(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 {
		p.usage(stderr)
		return Usage(fmt.Sprintf("help: want one command, got %q", args))
	}
	cmd, err := p.lookup(args[0], stderr)
	if err != nil {
		return Usage("help: " + err.Error())
	}
	if err := cmd.Run(ctx, []string{"-h"}, stdout, stderr); !errors.Is(err, flag.ErrHelp) {
		return err // every command parses its flags first: not reached
	}
	return nil
}

func (p *Program) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: %s COMMAND [flags]\n\ncommands:\n", p.Name)
	names := make([]string, 0, len(p.Commands))
	for n := range p.Commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-11s %s\n", n, p.Commands[n].Summary)
	}
	fmt.Fprintf(w, "\nRun '%s help COMMAND' for a command's flags.\n", p.Name)
}

// UsageError marks an error in the command line itself.
type UsageError struct{ Msg string }

func (e UsageError) Error() string { return e.Msg }

// Usage returns a UsageError saying msg.
func Usage(msg string) error { return UsageError{Msg: msg} }

// ExitCode is 2 for usage errors (and -h on a command), 1 for any other
// error, 0 for none.
func ExitCode(err error) int {
	var u UsageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &u) || errors.Is(err, flag.ErrHelp):
		return 2
	}
	return 1
}

// NewFlagSet returns a flag set named "PROGRAM COMMAND" that reports errors
// instead of exiting.
func NewFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// ParseFlags parses args and turns flag errors, and arguments left over,
// into usage errors.
func ParseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return Usage(err.Error())
	}
	if fs.NArg() > 0 {
		return Usage(fmt.Sprintf("unexpected arguments %q", fs.Args()))
	}
	return nil
}
