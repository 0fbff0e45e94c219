package main

// Load test of the real binary: 64 concurrent rank streams on one loader,
// whose resident memory must stay under the bound docs/operations.md
// ("Sizing memory") gives for its flags.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
)

// procStatusKiB reads a "Name:   N kB" line of /proc/pid/status, in bytes.
func procStatusKiB(pid int, name string) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), name+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, name)
}

// TestLoad64StreamsMemoryBound serves 64 rank streams at once from one
// `shardstream serve` with explicit memory flags and checks that the
// process's peak resident memory stays within the documented bound:
//
//	chunk memory + memory cache + fetch buffers + buffer pool
//	+ streams × (readahead + 2) × batch bytes + runtime allowance
func TestLoad64StreamsMemoryBound(t *testing.T) {
	bin := buildBinary(t) // skips with -short

	const (
		world    = 64
		batch    = 4
		window   = 1
		binSize  = 32 << 10 // bytes of each sample's bin field
		perChunk = 32       // samples per chunk: chunks of about 1 MiB
		perShard = 256      // 8 chunks per shard
		shards   = 40       // 10240 samples, about 330 MiB of tar
		ahead    = 4        // --readahead
		fetchBuf = 32 << 20 // --fetch-buffer-size
		poolBuf  = 16 << 20 // --buffer-pool-size
		memCache = 0        // --memory-cache-size
		// allowance is what the documented formula leaves out: the Go
		// runtime and the binary's text and data (about 40 MiB resident at
		// idle), the gRPC transport's per-connection buffers (64
		// connections × 32 KiB read + write buffers, plus frames), the
		// plans and per-stream bookkeeping, and the garbage collector's
		// headroom above the live heap (GOGC=100 lets the heap reach twice
		// what is live before collecting; the short-lived copies of batches
		// being marshalled are garbage the formula does not count).
		allowance = 150 << 20
	)

	dir := t.TempDir()
	start := time.Now()
	m := makeDatasetSized(t, dir, shards, perShard, perChunk, binSize)
	var dataBytes, chunkMax int64
	minSamples := int64(perChunk)
	for _, sh := range m.Shards {
		dataBytes += sh.Size
		for _, c := range sh.Chunks {
			chunkMax = max(chunkMax, c.RawSize)
			minSamples = min(minSamples, c.Samples)
		}
	}
	t.Logf("dataset: %d shards, %d samples, %.0f MiB, largest chunk %d bytes, made in %v",
		shards, m.TotalSamples(), float64(dataBytes)/(1<<20), chunkMax, time.Since(start).Round(time.Millisecond))

	// The per-stream reservation, as docs/operations.md states it:
	// (k·W + 1) × C with k = ⌈(B − 1) / (W·m)⌉ + 1.
	k := (batch-1+window*minSamples-1)/(window*minSamples) + 1
	reservation := (k*window + 1) * chunkMax
	chunkMemory := world * reservation // --chunk-memory ≥ streams × reservation

	p := startServe(t, bin, "--data", dir,
		"--chunk-memory", strconv.FormatInt(chunkMemory, 10),
		"--memory-cache-size", strconv.Itoa(memCache),
		"--fetch-buffer-size", strconv.Itoa(fetchBuf),
		"--buffer-pool-size", strconv.Itoa(poolBuf),
		"--readahead", strconv.Itoa(ahead),
		"--max-streams", strconv.Itoa(world),
	)
	pid := p.cmd.Process.Pid
	idle, err := procStatusKiB(pid, "VmRSS")
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	job := &pb.JobSpec{WorldSize: world, BatchSize: batch, Seed: 7, Window: window}
	plan, err := pb.NewCoordinatorServiceClient(dial(t, p.addr)).PlanEpoch(ctx, &pb.PlanEpochRequest{Job: job})
	if err != nil {
		t.Fatalf("PlanEpoch: %v", err)
	}

	// Sample VmRSS while the streams run (an interval for measurement, not
	// synchronisation); VmHWM at the end catches a peak between samples.
	var peak int64
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss, err := procStatusKiB(pid, "VmRSS"); err == nil {
				peak = max(peak, rss)
			}
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()

	// 64 ranks, each on its own connection as trainers would be, all open
	// before any reads, then read at a pace slower than the server fills
	// read-ahead, so every stream's queue and chunk reservation fill.
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		batchMax  int
		got       = make([]int, world)
		errs      = make([]error, world)
		opened    sync.WaitGroup
		allOpened = make(chan struct{})
	)
	opened.Add(world)
	go func() { opened.Wait(); close(allOpened) }()
	streamStart := time.Now()
	for rank := range uint32(world) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := pb.NewLoaderServiceClient(dial(t, p.addr)).StreamBatches(ctx, &pb.StreamBatchesRequest{Job: job, Rank: rank})
			opened.Done()
			if err != nil {
				errs[rank] = err
				return
			}
			select {
			case <-allOpened:
			case <-ctx.Done():
				errs[rank] = ctx.Err()
				return
			}
			for {
				r, err := st.Recv()
				if err == io.EOF {
					return
				}
				if err != nil {
					errs[rank] = fmt.Errorf("after %d batches: %w", got[rank], err)
					return
				}
				if r.Batch.Rank != rank || r.Batch.Step != int64(got[rank]) || len(r.Batch.Samples) != batch {
					errs[rank] = fmt.Errorf("batch %d: rank %d step %d, %d samples", got[rank], r.Batch.Rank, r.Batch.Step, len(r.Batch.Samples))
					return
				}
				n := proto.Size(r.Batch)
				mu.Lock()
				batchMax = max(batchMax, n)
				mu.Unlock()
				got[rank]++
				time.Sleep(5 * time.Millisecond) // a trainer's step, so read-ahead fills
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(streamStart)
	close(done)
	<-sampled
	hwm, err := procStatusKiB(pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	peak = max(peak, hwm)

	for rank := range world {
		if errs[rank] != nil {
			t.Errorf("rank %d: %v", rank, errs[rank])
		} else if int64(got[rank]) != plan.Steps {
			t.Errorf("rank %d: %d batches, plan says %d", rank, got[rank], plan.Steps)
		}
	}

	// The documented bound for these flags.
	inFlight := int64(world) * (ahead + 2) * int64(batchMax)
	bound := chunkMemory + memCache + fetchBuf + poolBuf + inFlight
	mib := func(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }
	t.Logf("%d streams × %d steps of %d-sample batches (≤ %d bytes) in %v; idle RSS %s",
		world, plan.Steps, batch, batchMax, elapsed.Round(time.Millisecond), mib(idle))
	t.Logf("bound: chunk memory %s (%d × reservation %s, k=%d) + memory cache %s + fetch buffers %s + buffer pool %s + batches in flight %s = %s; + allowance %s = %s",
		mib(chunkMemory), world, mib(reservation), k, mib(memCache), mib(fetchBuf), mib(poolBuf), mib(inFlight), mib(bound), mib(allowance), mib(bound+allowance))
	t.Logf("peak RSS %s (VmHWM %s), %.0f%% of bound + allowance", mib(peak), mib(hwm), 100*float64(peak)/float64(bound+allowance))
	if peak > bound+allowance {
		t.Errorf("peak RSS %s > documented bound %s + allowance %s = %s", mib(peak), mib(bound), mib(allowance), mib(bound+allowance))
	}
}
