package main

import (
	"context"
	"errors"
	"io"
)

// runIndex is a placeholder until the subcommand lands.
func runIndex(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("not implemented yet")
}
