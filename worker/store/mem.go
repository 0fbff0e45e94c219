package store

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
)

// Mem is an in-memory store for tests. Its ETags are MD5s of the content,
// like S3's for single-part uploads.
type Mem struct {
	mu   sync.RWMutex
	objs map[string]memObject
}

type memObject struct {
	data []byte
	etag string
}

// NewMem returns an empty in-memory store.
func NewMem() *Mem { return &Mem{objs: make(map[string]memObject)} }

func (m *Mem) get(path string) (memObject, error) {
	if err := validPath(path); err != nil {
		return memObject{}, err
	}
	m.mu.RLock()
	o, ok := m.objs[path]
	m.mu.RUnlock()
	if !ok {
		return memObject{}, fmt.Errorf("mem://%s: %w", path, ErrNotFound)
	}
	return o, nil
}

// ReadRange implements Store.
func (m *Mem) ReadRange(ctx context.Context, path string, off, n int64) (io.ReadCloser, error) {
	if n == 0 {
		if err := validPath(path); err != nil {
			return nil, err
		}
		return emptyBody, nil
	}
	o, err := m.get(path)
	if err != nil {
		return nil, err
	}
	n, err = checkRange("mem://"+path, int64(len(o.data)), off, n)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(bytes.NewReader(o.data[off : off+n])), nil
}

// Stat implements Store.
func (m *Mem) Stat(ctx context.Context, path string) (Info, error) {
	o, err := m.get(path)
	if err != nil {
		return Info{}, err
	}
	return Info{Path: path, Size: int64(len(o.data)), ETag: o.etag}, nil
}

// Write implements Store.
func (m *Mem) Write(ctx context.Context, path string, r io.Reader) error {
	if err := validPath(path); err != nil {
		return err
	}
	data, err := io.ReadAll(ctxReader{ctx, r})
	if err != nil {
		return fmt.Errorf("write mem://%s: %w", path, err)
	}
	sum := md5.Sum(data)
	m.mu.Lock()
	m.objs[path] = memObject{data: data, etag: hex.EncodeToString(sum[:])}
	m.mu.Unlock()
	return nil
}

// List implements Store.
func (m *Mem) List(ctx context.Context, prefix string) ([]Info, error) {
	m.mu.RLock()
	var out []Info
	for p, o := range m.objs {
		if strings.HasPrefix(p, prefix) {
			out = append(out, Info{Path: p, Size: int64(len(o.data)), ETag: o.etag})
		}
	}
	m.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}
