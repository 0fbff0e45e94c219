// Package pack turns a directory of files into a dataset: List finds the
// files and orders them so that a sample's files are consecutive (a file's
// path up to the first dot of its base name is the sample key, the rest
// its field), a Loader reads whole samples ahead of the shard writer
// within a memory budget, and Write feeds them to wds.WriteDataset.
//
//	files, skipped, err := pack.List(dir, "")
//	m, inBytes, err := pack.Write(ctx, st, files, wds.DatasetOptions{})
//
// The read-ahead is there because reading one small file at a time (on a
// network file system or a cold disk) would leave the compressors idle.
// Errors name the file and start with "pack: ".
package pack

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store"
	"github.com/shardstream/shardstream/wds"
)

// File is one input file: its path on disk and its place in a sample.
type File struct {
	Path       string
	Key, Field string
	Size       int64 // at listing time, for the read-ahead budget
}

// Write's read-ahead: files are read by Readers goroutines ahead of the
// writer, up to AheadBytes (and aheadSamples) in memory, so that per-file
// latency (network file systems, cold disks) overlaps the compression.
const (
	Readers      = 8
	AheadBytes   = 256 << 20
	aheadSamples = 256
)

// Write writes the samples of files (sorted as List sorts them) into st
// with wds.WriteDataset, reading them ahead with a Loader of Readers
// goroutines and AheadBytes. It returns the manifest and the input bytes
// it read. Its goroutines have ended when it returns.
func Write(ctx context.Context, st store.Store, files []File, opts wds.DatasetOptions) (*manifest.Manifest, int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	ld := NewLoader(ctx, files, Readers, AheadBytes)
	defer func() {
		cancel()
		ld.Wait()
	}()
	var inBytes int64
	next := func() (wds.Sample, bool, error) {
		s, ok, err := ld.Next(ctx)
		for _, f := range s.Fields {
			inBytes += int64(len(f.Data))
		}
		return s, ok, err
	}
	m, err := wds.WriteDataset(ctx, st, next, opts)
	return m, inBytes, err
}

// Loader reads the samples of a sorted file list ahead of their use. Its
// goroutines end when all samples are read or ctx ends; Wait waits for
// them.
type Loader struct {
	queue    chan chan loaded // samples in order, each filled when read
	freed    chan struct{}    // signalled when Next hands a sample over
	inflight atomic.Int64     // bytes read ahead and not handed over
	wg       sync.WaitGroup
}

type loaded struct {
	s    wds.Sample
	size int64
	err  error
}

// NewLoader starts reading the samples of files (consecutive files with
// one key make a sample), with at most readers files open at once and
// about budget bytes read ahead; a sample larger than budget is read
// alone.
func NewLoader(ctx context.Context, files []File, readers int, budget int64) *Loader {
	ld := &Loader{queue: make(chan chan loaded, aheadSamples), freed: make(chan struct{}, 1)}
	ld.wg.Add(1)
	go func() {
		defer ld.wg.Done()
		defer close(ld.queue)
		sem := make(chan struct{}, readers)
		for i := 0; i < len(files); {
			j, size := i, int64(0)
			for ; j < len(files) && files[j].Key == files[i].Key; j++ {
				size += files[j].Size
			}
			group := files[i:j]
			i = j
			// A sample larger than the budget goes alone.
			for ld.inflight.Load() > 0 && ld.inflight.Load()+size > budget {
				select {
				case <-ld.freed:
				case <-ctx.Done():
					return
				}
			}
			ch := make(chan loaded, 1)
			select {
			case ld.queue <- ch:
			case <-ctx.Done():
				return
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				ch <- loaded{err: ctx.Err()}
				return
			}
			ld.inflight.Add(size)
			ld.wg.Add(1)
			go func() {
				defer ld.wg.Done()
				defer func() { <-sem }()
				ch <- loadSample(group, size)
			}()
		}
	}()
	return ld
}

// loadSample reads the files of one sample.
func loadSample(group []File, size int64) loaded {
	l := loaded{s: wds.Sample{Key: group[0].Key}, size: size}
	for _, f := range group {
		data, err := os.ReadFile(f.Path)
		if err != nil {
			l.err = fmt.Errorf("pack: %w", err)
			return l
		}
		l.s.Fields = append(l.s.Fields, wds.Field{Name: f.Field, Data: data})
	}
	return l
}

// Next returns the next sample in order; false when all are read.
func (ld *Loader) Next(ctx context.Context) (wds.Sample, bool, error) {
	var ch chan loaded
	select {
	case c, ok := <-ld.queue:
		if !ok {
			return wds.Sample{}, false, ctx.Err()
		}
		ch = c
	case <-ctx.Done():
		return wds.Sample{}, false, ctx.Err()
	}
	var l loaded
	select {
	case l = <-ch:
	case <-ctx.Done():
		return wds.Sample{}, false, ctx.Err()
	}
	ld.inflight.Add(-l.size)
	select {
	case ld.freed <- struct{}{}:
	default:
	}
	if l.err != nil {
		return wds.Sample{}, false, l.err
	}
	return l.s, true, nil
}

// Wait waits for the loader's goroutines; cancel its ctx first to stop it
// early.
func (ld *Loader) Wait() { ld.wg.Wait() }

// List returns the regular files under dir (symbolic links followed to
// files), sorted by sample key and field so that a sample's files are
// consecutive, and how many hidden (dot) or non-regular entries it
// skipped. The directory skip (pack's output, when inside dir) is left
// out.
func List(dir, skip string) ([]File, int, error) {
	var files []File
	skipped := 0
	if skip != "" {
		skip, _ = filepath.Abs(skip)
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("pack: %w", err)
		}
		if d.IsDir() && skip != "" {
			if abs, _ := filepath.Abs(p); abs == skip {
				return fs.SkipDir
			}
		}
		if p != dir && strings.HasPrefix(d.Name(), ".") {
			skipped++
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if !d.Type().IsRegular() {
			fi, err := os.Stat(p) // a link to a regular file counts
			if err != nil || !fi.Mode().IsRegular() {
				skipped++
				return nil
			}
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return fmt.Errorf("pack: %w", err)
		}
		rel = filepath.ToSlash(rel)
		key, field := wds.SplitName(rel)
		if wds.EntryName(key, field) != rel {
			return fmt.Errorf("pack: %s: a name ending in a dot cannot be stored as a sample field", p)
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("pack: %w", err)
		}
		files = append(files, File{Path: p, Key: key, Field: field, Size: info.Size()})
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	sort.Slice(files, func(i, j int) bool {
		if files[i].Key != files[j].Key {
			return files[i].Key < files[j].Key
		}
		return files[i].Field < files[j].Field
	})
	return files, skipped, nil
}
