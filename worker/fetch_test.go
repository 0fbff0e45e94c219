package worker

import "testing"

func TestPartSize(t *testing.T) {
	const mib = 1 << 20
	tests := []struct{ n, max, want int64 }{
		{1, 8 * mib, 1},
		{8 * mib, 8 * mib, 8 * mib},
		{8*mib + 100<<10, 8 * mib, 8*mib + 100<<10}, // a sliver over: one GET
		{12 * mib, 8 * mib, 6 * mib},                // two even parts
		{16 * mib, 8 * mib, 8 * mib},
		{17 * mib, 8 * mib, 17 * mib / 2},
		{64 * mib, 8 * mib, 8 * mib},
		{100, 7, 7},
	}
	for _, tt := range tests {
		got := partSize(tt.n, tt.max)
		if got != tt.want {
			t.Errorf("partSize(%d, %d) = %d, want %d", tt.n, tt.max, got, tt.want)
		}
		if parts := (tt.n + got - 1) / got; got > tt.max+tt.max/8 || (parts > 1 && got*(parts-1) >= tt.n) {
			t.Errorf("partSize(%d, %d) = %d: parts too large or one empty", tt.n, tt.max, got)
		}
	}
}
