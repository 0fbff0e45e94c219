package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// runClient reads one rank's epoch from a running server as a trainer's
// Go client would, keeping nothing, and prints what it received, how fast
// and its own CPU time per GB: the reference the Python client is measured
// against (make bench-client). One line, key=value, for scripts.
func runClient(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("client", stderr)
	addr := fs.String("addr", "", "host:port of a shardstream server (required)")
	batch := fs.Uint("batch-size", 256, "samples per batch")
	seed := fs.Uint64("seed", 0, "job seed")
	columnar := fs.Bool("columnar", false, "ask for columnar batches (StreamBatchesRequest.columnar)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *addr == "" {
		return usageError{Msg: "--addr is required"}
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return err
	}
	defer conn.Close()
	job := &pb.JobSpec{Seed: *seed, WorldSize: 1, BatchSize: uint32(*batch)}
	cpu0 := cpuTime()
	start := time.Now()
	stream, err := pb.NewLoaderServiceClient(conn).StreamBatches(ctx, &pb.StreamBatchesRequest{Job: job, Columnar: *columnar})
	if err != nil {
		return err
	}
	var batches, samples, bytes int64
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("batch %d: %w", batches, err)
		}
		b := r.GetBatch()
		batches++
		if c := b.GetColumns(); c != nil {
			samples += int64(c.GetCount())
			for _, f := range c.GetFields() {
				bytes += int64(len(f.GetData()))
			}
			continue
		}
		samples += int64(len(b.GetSamples()))
		for _, s := range b.GetSamples() {
			for _, f := range s.GetFields() {
				bytes += int64(len(f.GetData()))
			}
		}
	}
	wall := time.Since(start).Seconds()
	cpu := (cpuTime() - cpu0).Seconds()
	fmt.Fprintf(stdout, "batches=%d samples=%d bytes=%d wall_s=%.4f cpu_s=%.4f\n", batches, samples, bytes, wall, cpu)
	return nil
}
