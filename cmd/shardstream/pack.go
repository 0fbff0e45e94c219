package main

import (
	"context"
	"errors"
	"io"
)

// runPack is a placeholder until the subcommand lands.
func runPack(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("not implemented yet")
}
