package sink

import (
	"bytes"
	"context"
	"net/http/httptest"
	"testing"

	"github.com/crmauthz/crmauthz/internal/replicatest"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/tracing"
	"github.com/crmauthz/crmauthz/internal/tracing/tracingtest"
)

// TestHTTPSinkTraceparent: a batch the HTTP sink posts is a client span,
// and the replica's span of that batch is its child (one trace from the
// connector to the sidecar).
func TestHTTPSinkTraceparent(t *testing.T) {
	rcv := tracingtest.Start(t)
	tr := rcv.Tracer(t, 1)
	rep := replicatest.New(t, replicatest.Config{Logger: quiet, Tracer: tr})
	hs := httptest.NewServer(rep.Server.AdminHandler()) // loopback: no token needed
	defer hs.Close()
	s, err := New(Config{URL: hs.URL, Logger: quiet, Tracer: tr})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Write(context.Background(), []replication.Event{userEv(1, "u-1", ""), userEv(2, "u-2", "")}); err != nil {
		t.Fatal(err)
	}
	if err := tr.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	client := rcv.WaitSpan(t, tracing.SpanSinkWrite, "")
	server := rcv.WaitSpan(t, tracing.SpanReplication, "")
	if !bytes.Equal(server.GetTraceId(), client.GetTraceId()) || !bytes.Equal(server.GetParentSpanId(), client.GetSpanId()) {
		t.Errorf("the replica's span (trace %x, parent %x) is not a child of the sink's (trace %x, span %x)",
			server.GetTraceId(), server.GetParentSpanId(), client.GetTraceId(), client.GetSpanId())
	}
	if n, _ := tracingtest.Attr(client, "crmauthz.replication.events"); n != int64(2) {
		t.Errorf("the sink span's events = %v, want 2", n)
	}
}
