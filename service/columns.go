package service

import (
	"encoding/binary"
	"fmt"

	pb "github.com/shardstream/shardstream/proto/shardstream/v1"
	"github.com/shardstream/shardstream/sampler"
	"github.com/shardstream/shardstream/worker"
)

// columnsOf is the columnar form (pb.Columns) of a batch: samples[i] is the
// sample ids[i] names. Integer arrays are little-endian int64 in bytes
// fields, so a client views them as arrays without decoding n varints.
//
// Each field's values are copied once, into its column's buffer; the
// per-sample form shares the chunk's bytes instead, but costs a message per
// sample and per field to build, to marshal and, worse, to parse (a Python
// object each). Two passes over the samples: the first sizes every buffer
// and finds the fixed-size fields, so the second copies into buffers of the
// exact size and nothing is reallocated.
func columnsOf(ids []sampler.SampleID, samples []*worker.Sample) (*pb.Columns, error) {
	n := len(samples)
	type column struct {
		size    int // bytes of all values
		have    int // samples with the field
		fixed   int // the size of every value so far, -1 once two differ
		present []byte
		col     *pb.Column
		offsets []byte
	}
	var cols []*column
	find := func(name string) int {
		for i, c := range cols { // a handful of fields: a scan beats a map
			if c.col.Name == name {
				return i
			}
		}
		return -1
	}
	keysLen := 0
	for i, smp := range samples {
		keysLen += len(smp.Key)
		for fi, f := range smp.Fields {
			for _, g := range smp.Fields[:fi] {
				if g.Name == f.Name {
					return nil, fmt.Errorf("sample %d of shard %d (%q) has field %q twice", ids[i].Index, ids[i].Shard, smp.Key, f.Name)
				}
			}
			ci := find(f.Name)
			if ci < 0 {
				ci = len(cols)
				cols = append(cols, &column{fixed: len(f.Data), present: make([]byte, (n+7)/8), col: &pb.Column{Name: f.Name}})
			}
			c := cols[ci]
			c.size += len(f.Data)
			c.have++
			if c.fixed != len(f.Data) {
				c.fixed = -1
			}
			c.present[i/8] |= 1 << (i % 8)
		}
	}
	for _, c := range cols {
		c.col.Data = make([]byte, 0, c.size)
		if c.have == n && c.fixed >= 0 {
			size := uint64(c.fixed)
			c.col.FixedSize = &size
			c.present = nil
			continue
		}
		c.offsets = make([]byte, 8, 8*(n+1)) // offsets[0] = 0
		if c.have == n {
			c.present = nil
		}
	}

	out := &pb.Columns{
		Count:      uint32(n),
		Shards:     make([]byte, 0, 8*n),
		Indices:    make([]byte, 0, 8*n),
		Keys:       make([]byte, 0, keysLen),
		KeyOffsets: make([]byte, 8, 8*(n+1)),
		Fields:     make([]*pb.Column, len(cols)),
	}
	for i, smp := range samples {
		out.Shards = binary.LittleEndian.AppendUint64(out.Shards, uint64(ids[i].Shard))
		out.Indices = binary.LittleEndian.AppendUint64(out.Indices, uint64(ids[i].Index))
		out.Keys = append(out.Keys, smp.Key...)
		out.KeyOffsets = binary.LittleEndian.AppendUint64(out.KeyOffsets, uint64(len(out.Keys)))
		for _, f := range smp.Fields {
			c := cols[find(f.Name)]
			c.col.Data = append(c.col.Data, f.Data...)
		}
		for _, c := range cols {
			if c.offsets != nil { // a sample without the field: an empty range
				c.offsets = binary.LittleEndian.AppendUint64(c.offsets, uint64(len(c.col.Data)))
			}
		}
	}
	for i, c := range cols {
		c.col.Offsets = c.offsets
		c.col.Present = c.present
		out.Fields[i] = c.col
	}
	return out, nil
}
