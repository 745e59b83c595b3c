package smtp

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"math/rand"
	"strconv"
	"strings"
	"testing"
)

// refDataReader is dataReader as it read a byte at a time: the reference
// the buffered one must agree with, byte for byte and error for error.
type refDataReader struct {
	r     *bufio.Reader
	state int
}

func (r *refDataReader) Read(b []byte) (n int, err error) {
	const (
		stateBeginLine = iota
		stateDot
		stateDotCR
		stateCR
		stateData
		stateEOF
	)
	for n < len(b) && r.state != stateEOF {
		var c byte
		c, err = r.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			break
		}
		switch r.state {
		case stateBeginLine:
			if c == '.' {
				r.state = stateDot
				continue
			}
			if c == '\r' {
				r.state = stateCR
				break
			}
			r.state = stateData
		case stateDot:
			if c == '\r' {
				r.state = stateDotCR
				continue
			}
			r.state = stateData
		case stateDotCR:
			if c == '\n' {
				r.state = stateEOF
				continue
			}
			r.state = stateData
		case stateCR:
			if c == '\n' {
				r.state = stateBeginLine
				break
			}
			r.state = stateData
		case stateData:
			if c == '\r' {
				r.state = stateCR
			}
		}
		b[n] = c
		n++
	}
	if err == nil && r.state == stateEOF {
		err = io.EOF
	}
	return
}

// refLineLimitReader is lineLimitReader as it counted a byte at a time.
type refLineLimitReader struct {
	R             io.Reader
	LineLimit     int
	curLineLength int
}

func (r *refLineLimitReader) Read(b []byte) (int, error) {
	if r.curLineLength > r.LineLimit && r.LineLimit > 0 {
		return 0, ErrTooLongLine
	}
	n, err := r.R.Read(b)
	if err != nil {
		return n, err
	}
	if r.LineLimit == 0 {
		return n, nil
	}
	for _, chr := range b[:n] {
		if chr == '\n' {
			r.curLineLength = 0
		}
		r.curLineLength++
		if r.curLineLength > r.LineLimit {
			return 0, ErrTooLongLine
		}
	}
	return n, nil
}

// chunkReader returns its input in reads of the sizes it is given, in
// turn, so that lines and the end marker fall across buffer refills.
type chunkReader struct {
	p     []byte
	sizes []int
	i     int
}

func (c *chunkReader) Read(b []byte) (int, error) {
	if len(c.p) == 0 {
		return 0, io.EOF
	}
	k := c.sizes[c.i%len(c.sizes)]
	c.i++
	if k > len(b) {
		k = len(b)
	}
	if k > len(c.p) {
		k = len(c.p)
	}
	n := copy(b, c.p[:k])
	c.p = c.p[n:]
	return n, nil
}

// readAllIn reads r to its end with reads of the given sizes, and
// returns what it read, the error that ended it and what the underlying
// buffer still held after it (what the next command would read).
func readAllIn(r io.Reader, sizes []int, br *bufio.Reader) (string, error, string) {
	var out bytes.Buffer
	buf := make([]byte, 4096)
	var err error
	for i := 0; err == nil; i++ {
		var n int
		n, err = r.Read(buf[:sizes[i%len(sizes)]])
		out.Write(buf[:n])
	}
	rest, _ := io.ReadAll(br)
	return out.String(), err, string(rest)
}

// dataCases are inputs with every state of the dot and CR machine in
// them, as the server reads them after DATA.
var dataCases = []string{
	"",
	".\r\n",
	"a\r\n.\r\nNEXT\r\n",
	"..\r\n.\r\n",
	".a\r\n..b\r\n.\r\n",
	"a\r\r\n.\r\n",
	"a\rb\r\n.\r\n",
	"a\nb\n.\n.\r\n",
	".\rx\r\n.\r\n",
	".\r\r\n.\r\n",
	"\r\n\r\n.\r\n",
	"line one\r\n.\r",
	"no end",
	"x\r\n.\r\nQUIT\r\n",
	strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n", 300) + ".\r\n",
}

func FuzzDataReader(f *testing.F) {
	for _, c := range dataCases {
		f.Add([]byte(c), uint16(7), uint16(4096), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, readSize, netSize uint16, lineLimit uint8) {
		sizes := []int{int(readSize%4096) + 1, 1, int(readSize%97) + 1}
		net := []int{int(netSize%4096) + 1, int(netSize%13) + 1}
		limit := int(lineLimit % 80)

		refBr := bufio.NewReader(&refLineLimitReader{R: &chunkReader{p: in, sizes: net}, LineLimit: limit})
		want, wantErr, wantRest := readAllIn(&refDataReader{r: refBr}, sizes, refBr)

		br := bufio.NewReader(&lineLimitReader{R: &chunkReader{p: in, sizes: net}, LineLimit: limit})
		got, gotErr, gotRest := readAllIn(&dataReader{r: br}, sizes, br)

		if got != want || !errors.Is(gotErr, wantErr) || gotRest != wantRest {
			t.Fatalf("input %q (reads %v, network %v, line limit %d):\n got %q, %v, rest %q\nwant %q, %v, rest %q",
				in, sizes, net, limit, got, gotErr, gotRest, want, wantErr, wantRest)
		}
	})
}

// The buffered reader agrees with the reference on random messages,
// random read sizes and random network chunking.
func TestDataReaderMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	alphabet := []byte("ab.\r\n")
	for i := 0; i < 20000; i++ {
		in := make([]byte, rng.Intn(300))
		for j := range in {
			in[j] = alphabet[rng.Intn(len(alphabet))]
		}
		sizes := []int{rng.Intn(64) + 1, rng.Intn(8) + 1}
		net := []int{rng.Intn(64) + 1, rng.Intn(5) + 1}
		limit := []int{0, 5, 20, 1000}[rng.Intn(4)]

		refBr := bufio.NewReader(&refLineLimitReader{R: &chunkReader{p: in, sizes: net}, LineLimit: limit})
		want, wantErr, wantRest := readAllIn(&refDataReader{r: refBr}, sizes, refBr)
		br := bufio.NewReader(&lineLimitReader{R: &chunkReader{p: in, sizes: net}, LineLimit: limit})
		got, gotErr, gotRest := readAllIn(&dataReader{r: br}, sizes, br)
		if got != want || !errors.Is(gotErr, wantErr) || gotRest != wantRest {
			t.Fatalf("input %q (reads %v, network %v, line limit %d):\n got %q, %v, rest %q\nwant %q, %v, rest %q",
				in, sizes, net, limit, got, gotErr, gotRest, want, wantErr, wantRest)
		}
	}
}

// BenchmarkDataReader reads a message of 64-byte lines, as the server
// reads DATA: through the line length limit and a 4 KB bufio.Reader.
func BenchmarkDataReader(b *testing.B) {
	for _, size := range []int{2 << 10, 100 << 10} {
		line := "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"
		msg := []byte(strings.Repeat(line, size/len(line)) + ".\r\n")
		b.Run(strconv.Itoa(size>>10)+"KB", func(b *testing.B) {
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			buf := make([]byte, 32<<10)
			src := bytes.NewReader(msg)
			ll := &lineLimitReader{R: src, LineLimit: 2000}
			br := bufio.NewReader(ll)
			for i := 0; i < b.N; i++ {
				src.Reset(msg)
				br.Reset(ll)
				r := &dataReader{r: br}
				for {
					if _, err := r.Read(buf); err != nil {
						if err != io.EOF {
							b.Fatal(err)
						}
						break
					}
				}
			}
		})
	}
}
