package deliver

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/sealrelay/sealrelay/agent/spool"
	"github.com/sealrelay/sealrelay/internal/testing/upstream"
)

// BenchmarkDeliver sends a message (2 KB and 100 KB) through a pooled,
// authenticated STARTTLS connection to an upstream that keeps no bodies.
// The upstream runs in the same process, so its share (TLS, reading the
// data) is in the figures too.
func BenchmarkDeliver(b *testing.B) {
	for _, size := range []int{2 << 10, 100 << 10} {
		b.Run(fmt.Sprintf("%dKB", size>>10), func(b *testing.B) {
			u := startUpstream(b, upstream.Config{CountOnly: true})
			h := newDeliverer(b, newCreds(testPass), relayTo(u, AuthRequired))
			text := "Message-ID: <bench@test>\r\nSubject: bench\r\n\r\n" + strings.Repeat(strings.Repeat("x", 78)+"\r\n", size/80)
			m := &spool.Delivery{
				ID: "bench", From: "app@example.com", To: []string{"rcpt@example.net"}, Size: int64(len(text)), Attempt: 1, Received: time.Now(),
				Open: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(text)), nil },
			}
			ctx := context.Background()
			b.SetBytes(int64(len(text)))
			b.ReportAllocs()
			for b.Loop() {
				if res := h.d.Deliver(ctx, m); res[0].Status != spool.Delivered {
					b.Fatal(res[0].Err)
				}
			}
			b.StopTimer()
			if st := h.d.Stats(); st.ConnectionsOpened != 1 {
				b.Errorf("connections opened = %d, want 1 (pooled)", st.ConnectionsOpened)
			}
		})
	}
}
