package gateway

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"testing"
	"testing/iotest"
)

// TestReadBody: readBody answers as io.ReadAll of http.MaxBytesReader did,
// whatever the Content-Length says and however the body is read.
func TestReadBody(t *testing.T) {
	const limit = 64
	readers := map[string]func([]byte) io.Reader{
		"plain":    func(b []byte) io.Reader { return bytes.NewReader(b) },
		"one byte": func(b []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(b)) },
		"data+EOF": func(b []byte) io.Reader { return iotest.DataErrReader(bytes.NewReader(b)) },
		"half":     func(b []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(b)) },
		"error": func(b []byte) io.Reader {
			return io.MultiReader(bytes.NewReader(b), iotest.ErrReader(errors.New("reset")))
		},
		"data+error": func(b []byte) io.Reader { return &dataErr{b: b} },
	}
	for _, n := range []int{0, 1, 30, limit - 1, limit, limit + 1, 3 * limit, 2000} {
		body := bytes.Repeat([]byte("x"), n)
		for name, mk := range readers {
			for _, size := range []int64{-1, int64(n), int64(n) - 1, int64(n) + 1, 1 << 40} {
				t.Run(strconv.Itoa(n)+"/"+name+"/"+strconv.FormatInt(size, 10), func(t *testing.T) {
					want, werr := io.ReadAll(http.MaxBytesReader(nil, io.NopCloser(mk(body)), limit))
					var mbe *http.MaxBytesError
					wantLarge := errors.As(werr, &mbe)
					got, large, err := readBody(mk(body), size, limit)
					switch {
					case large != wantLarge:
						t.Fatalf("tooLarge %v, want %v (%v)", large, wantLarge, werr)
					case wantLarge:
					case (err == nil) != (werr == nil) || err != nil && err.Error() != werr.Error():
						t.Fatalf("error %v, want %v", err, werr)
					case werr == nil && !bytes.Equal(got, want):
						t.Fatalf("read %d bytes, want %d", len(got), len(want))
					}
				})
			}
		}
	}
}

// dataErr returns all its data with an error that is not EOF.
type dataErr struct{ b []byte }

func (d *dataErr) Read(p []byte) (int, error) {
	n := copy(p, d.b)
	d.b = d.b[n:]
	if len(d.b) == 0 {
		return n, errors.New("reset with data")
	}
	return n, nil
}
