package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"strings"
	"testing"
)

func testProgram(ran *[]string) *Program {
	return &Program{
		Name: "prog",
		Commands: map[string]Command{
			"go": {Summary: "goes", Run: func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
				fs := NewFlagSet("prog go", stderr)
				n := fs.Int("n", 0, "how far")
				if err := ParseFlags(fs, args); err != nil {
					return err
				}
				*ran = append(*ran, strings.Repeat("x", *n))
				return nil
			}},
		},
		Moved: map[string]string{"old": "old moved to prog go"},
	}
}

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		args  []string
		code  int
		ran   string // what the command ran with, "-" for not at all
		inErr string // in stderr
	}{
		{[]string{"go", "-n", "2"}, 0, "xx", ""},
		{nil, 2, "-", "usage: prog COMMAND"},
		{[]string{"help"}, 0, "-", "go          goes"},
		{[]string{"-h"}, 0, "-", "usage: prog"},
		{[]string{"help", "go"}, 0, "-", "-n int"},
		{[]string{"help", "nope"}, 2, "-", "usage: prog"},
		{[]string{"help", "go", "go"}, 2, "-", "usage: prog"},
		{[]string{"nope"}, 2, "-", "usage: prog"},
		{[]string{"old"}, 2, "-", ""},
		{[]string{"go", "-n"}, 2, "-", "flag needs an argument"},
		{[]string{"go", "extra"}, 2, "-", ""},
		{[]string{"go", "-h"}, 2, "-", "-n int"},
	} {
		var ran []string
		var stdout, stderr bytes.Buffer
		err := testProgram(&ran).Run(context.Background(), tc.args, &stdout, &stderr)
		if got := ExitCode(err); got != tc.code {
			t.Errorf("%q: exit code %d (%v), want %d", tc.args, got, err, tc.code)
		}
		if tc.ran == "-" && len(ran) > 0 || tc.ran != "-" && (len(ran) != 1 || ran[0] != tc.ran) {
			t.Errorf("%q: ran %q, want %q", tc.args, ran, tc.ran)
		}
		if !strings.Contains(stderr.String(), tc.inErr) {
			t.Errorf("%q: stderr %q, want it to hold %q", tc.args, stderr.String(), tc.inErr)
		}
	}
}

func TestExitCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, 0},
		{errors.New("boom"), 1},
		{Usage("bad flag"), 2},
		{flag.ErrHelp, 2},
	} {
		if got := ExitCode(tc.err); got != tc.want {
			t.Errorf("ExitCode(%v) = %d, want %d", tc.err, got, tc.want)
		}
	}
}
