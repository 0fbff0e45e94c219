package main

import (
	"context"
	"errors"
	"io"
)

// runBenchRead is a placeholder until the subcommand lands.
func runBenchRead(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("not implemented yet")
}
