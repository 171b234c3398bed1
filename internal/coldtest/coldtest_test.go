package coldtest

import "testing"

func TestEvictor(t *testing.T) {
	tests := []struct {
		name  string
		bytes int
		want  int // cache lines read
	}{
		{"none", 0, 0},
		{"one line", 64, 1},
		{"4 KiB", 4096, 64},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			buf := make([]byte, 1<<16)
			for i := range buf {
				buf[i] = 1
			}
			ev := Evictor{Buf: buf, Seed: 1}
			ev.Touch(tc.bytes)
			if int(ev.Sum) != tc.want {
				t.Fatalf("read %d lines, want %d", ev.Sum, tc.want)
			}
		})
	}
	a, b := Evictor{Seed: 7}, Evictor{Seed: 7}
	if a.Next() != b.Next() || a.Next() == a.Seed-1 {
		t.Fatal("the sequence is not a function of its seed")
	}
}
