// Package shuffle holds the seeded permutations the epoch planner is built
// from, and a measure of how well a delivery order is shuffled.
//
// Everything here is a pure function of its arguments: randomness comes only
// from a PCG generator (math/rand/v2) whose seed and stream the caller
// derives from the job (seed, epoch, rank, window …) with Stream. Bounded
// draws use Lemire's multiply-shift method over PCG's 64-bit output, written
// here rather than taken from rand.Rand.Uint64N so that a plan never depends
// on how a Go release implements bounded draws: only the PCG algorithm
// itself, which is specified, feeds a permutation.
//
// Example:
//
//	src := shuffle.NewSource(seed, shuffle.Stream(shuffle.DomainShards, epoch))
//	order := shuffle.Perm(make([]uint32, len(counts)), src)
package shuffle

import (
	"math/bits"
	"math/rand/v2"
)

// Domains keep the streams of different uses of one seed apart.
const (
	// DomainShards seeds an epoch's shard permutation.
	DomainShards uint64 = 1
	// DomainBlock seeds the permutation inside one window block of a rank.
	DomainBlock uint64 = 2
)

// Stream folds parts into one 64-bit PCG stream selector. Equal parts give
// equal streams; any change to any part gives an unrelated stream
// (splitmix64 finaliser applied after each part).
func Stream(parts ...uint64) uint64 {
	h := uint64(0x9e3779b97f4a7c15)
	for _, p := range parts {
		h = mix(h ^ p)
	}
	return h
}

// mix is the splitmix64 finaliser: a bijection of uint64 with good
// avalanche.
func mix(z uint64) uint64 {
	z += 0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// NewSource returns the PCG generator for seed and stream.
func NewSource(seed, stream uint64) *rand.PCG {
	return rand.NewPCG(seed, stream)
}

// Uint64N returns a uniform value in [0, n) drawn from src; n must be > 0.
// Lemire, "Fast Random Integer Generation in an Interval" (2019).
func Uint64N(src rand.Source, n uint64) uint64 {
	hi, lo := bits.Mul64(src.Uint64(), n)
	if lo < n {
		thresh := -n % n
		for lo < thresh {
			hi, lo = bits.Mul64(src.Uint64(), n)
		}
	}
	return hi
}

// Perm fills dst with a uniformly random permutation of 0..len(dst)-1
// (Fisher–Yates, "inside-out" so dst need not be initialised) and returns
// it. len(dst) must fit in uint32.
func Perm(dst []uint32, src rand.Source) []uint32 {
	for i := range dst {
		j := Uint64N(src, uint64(i)+1)
		dst[i] = dst[j]
		dst[j] = uint32(i)
	}
	return dst
}
