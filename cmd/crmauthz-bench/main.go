// Command crmauthz-bench generates the synthetic datasets and request mixes
// used to measure crmauthz (see internal/dataset).
//
//	crmauthz-bench gen --records 1000000 --users 10000 > snapshot.ndjson
//	crmauthz-bench requests --n 100000 > requests.ndjson   (one POST /v1/decision body per line)
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"

	"github.com/crmauthz/crmauthz/internal/dataset"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: crmauthz-bench gen|requests [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	records := fs.Int("records", 1_000_000, "records in the world")
	users := fs.Int("users", 10_000, "users in the world")
	locations := fs.Int("locations", 5, "locations in the world")
	seq := fs.Uint64("seq", 1, "applied_seq of the snapshot")
	n := fs.Int("n", 100_000, "requests to write")
	_ = fs.Parse(os.Args[2:])
	w := dataset.New(dataset.Config{Records: *records, Users: *users, Locations: *locations})
	out := bufio.NewWriterSize(os.Stdout, 256<<10)
	defer out.Flush()
	switch os.Args[1] {
	case "gen":
		if err := w.WriteSnapshot(out, *seq); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "requests":
		var b []byte
		for i := 0; i < *n; i++ {
			b = append(w.RequestAt(i).AppendJSON(b[:0]), '\n')
			out.Write(b)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
}
