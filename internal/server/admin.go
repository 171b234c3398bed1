package server

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/server/errcode"
	"github.com/crmauthz/crmauthz/internal/tracing"
)

// requireReplicationAuth guards the replication API: a bearer token when one
// is configured (compared in constant time), else loopback clients only.
func (s *Server) requireReplicationAuth(c *gin.Context) {
	if len(s.cfg.Token) == 0 {
		if !IsLoopbackAddr(c.Request.RemoteAddr) {
			s.writeError(c, newError(http.StatusUnauthorized, errcode.Unauthorized,
				"no replication token is configured, so only loopback clients may replicate"))
		}
		return
	}
	const prefix = "bearer "
	h := c.GetHeader("Authorization")
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		s.writeError(c, newError(http.StatusUnauthorized, errcode.Unauthorized, "missing bearer token"))
		return
	}
	// Hash both sides so the comparison takes the same time whatever the lengths.
	got := sha256.Sum256([]byte(strings.TrimSpace(h[len(prefix):])))
	want := sha256.Sum256(s.cfg.Token)
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
		s.writeError(c, newError(http.StatusUnauthorized, errcode.Unauthorized, "wrong bearer token"))
		return
	}
}

func opLabel(op string) string {
	for _, o := range replication.Ops {
		if o == op {
			return op
		}
	}
	return "unknown"
}

func (s *Server) postEvents(c *gin.Context) {
	var rs *reqSpan // nil: tracing off
	if s.tr != nil {
		if rs = s.startSpan(c.Request, tracing.SpanReplication, spanBatch); rs != nil {
			defer rs.endGin(c)
		}
	}
	body := &cutReader{r: http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxBatchBytes)}
	events, err := s.repl.DecodeBatch(body)
	if err != nil && body.cut {
		err = errTruncated
	}
	if err == nil {
		var res replication.Result
		res, err = s.repl.Apply(events)
		if err == nil {
			for op, n := range res.PerOp {
				s.m.Events(op, "applied", n.Applied)
				s.m.Events(op, "skipped", n.Skipped)
			}
			s.updateIndexMetrics()
			if rs != nil {
				rs.b.Events, rs.b.Applied, rs.b.Skipped, rs.b.AppliedSeq = len(events), res.Applied, res.Skipped, res.AppliedSeq
			}
			c.JSON(http.StatusOK, res)
			return
		}
	}
	if rs != nil {
		rs.b.Events, rs.b.AppliedSeq = len(events), s.ix.AppliedSeq()
	}
	// Nothing was applied: count the events of a decoded batch as rejected.
	for i := range events {
		s.m.Events(opLabel(events[i].Op), "rejected", 1)
	}
	s.writeError(c, err)
}

func (s *Server) putSnapshot(c *gin.Context) {
	var rs *reqSpan // nil: tracing off
	if s.tr != nil {
		if rs = s.startSpan(c.Request, tracing.SpanSnapshotLoad, spanSnapshot); rs != nil {
			defer rs.endGin(c)
		}
	}
	rc := http.NewResponseController(c.Writer)
	deadline := time.Now().Add(s.cfg.SnapshotTimeout)
	_ = rc.SetReadDeadline(deadline)
	_ = rc.SetWriteDeadline(deadline.Add(time.Minute))
	body := http.MaxBytesReader(c.Writer, c.Request.Body, s.cfg.MaxSnapshotBytes)
	res, err := s.repl.LoadSnapshot(body)
	if !errors.Is(err, replication.ErrSnapshotInProgress) {
		s.m.SnapshotLoad(metrics.SnapshotSourceHTTP, err == nil)
	}
	if err != nil {
		s.writeError(c, err)
		return
	}
	s.updateIndexMetrics()
	if rs != nil {
		rs.b.Users, rs.b.Records, rs.b.AppliedSeq = res.Users, res.Records, res.AppliedSeq
	}
	s.log.Info("snapshot loaded", "applied_seq", res.AppliedSeq, "users", res.Users, "records", res.Records)
	c.JSON(http.StatusOK, res)
}

// snapshotLinesTrailer is the HTTP trailer that ends a complete snapshot export: the number of
// NDJSON lines sent, the {"seq":N} line included. An export that fails part-way is cut off
// instead (no terminating chunk, no trailer), never a short body that looks whole
// (docs/operations.md, "Backup").
const snapshotLinesTrailer = "X-Crmauthz-Snapshot-Lines"

func (s *Server) getSnapshot(c *gin.Context) {
	w := s.newProgressWriter(c, true)
	c.Header("Content-Type", "application/x-ndjson")
	c.Header("Trailer", snapshotLinesTrailer)
	c.Status(http.StatusOK)
	if err := s.repl.WriteSnapshot(w); err != nil {
		// The status is sent already: cut the stream short so the client sees
		// an incomplete body rather than a silently truncated snapshot.
		s.log.Error("snapshot export failed", "err", err, "lines_sent", w.lines)
		panic(http.ErrAbortHandler)
	}
	c.Writer.Header().Set(snapshotLinesTrailer, strconv.FormatInt(w.lines, 10))
}

// getBackup streams a hot copy of the bbolt file (index.Backup): restore it
// by placing it at <data-dir>/index.db of a stopped server.
func (s *Server) getBackup(c *gin.Context) {
	w := s.newProgressWriter(c, false)
	started := false
	_, err := s.ix.Backup(w, func(seq uint64, size int64) error {
		started = true
		c.Header("Content-Type", "application/octet-stream")
		c.Header("Content-Disposition", `attachment; filename="index.db"`)
		c.Header("Content-Length", strconv.FormatInt(size, 10))
		c.Header("X-Crmauthz-Applied-Seq", strconv.FormatUint(seq, 10))
		c.Status(http.StatusOK)
		return nil
	})
	switch {
	case err != nil && !started:
		s.writeError(c, err)
	case err != nil:
		s.log.Error("backup failed", "err", err)
		panic(http.ErrAbortHandler) // the client sees a cut body, never a short file taken for whole
	}
}

// progressWriter is the body writer of an export (snapshot or backup), which holds one read
// transaction of the index for as long as it runs. The whole transfer may take
// Config.SnapshotTimeout, and the client must keep reading: a write that makes no progress for
// Server.stallTimeout (a minute, or SnapshotTimeout if shorter) cuts the connection, so a
// stalled client cannot hold the read transaction (which keeps a replaced index file open, and
// blocks a writer that must grow the file) for long. It also counts the lines written.
type progressWriter struct {
	w     io.Writer
	rc    *http.ResponseController
	stall time.Duration
	end   time.Time
	next  time.Time // when the deadline is pushed on again
	lines int64     // counted when count is set
	count bool
}

const (
	// defaultStallTimeout is Server.stallTimeout unless SnapshotTimeout is shorter.
	defaultStallTimeout = time.Minute
	// deadlinePush: the write deadline is moved on at most this often (it is not free).
	deadlinePush = time.Second
)

func (s *Server) newProgressWriter(c *gin.Context, countLines bool) *progressWriter {
	p := &progressWriter{w: c.Writer, rc: http.NewResponseController(c.Writer), count: countLines,
		stall: s.stallTimeout, end: time.Now().Add(s.cfg.SnapshotTimeout)}
	p.push(time.Now())
	return p
}

func (p *progressWriter) push(now time.Time) {
	d := now.Add(p.stall)
	if d.After(p.end) {
		d = p.end
	}
	_ = p.rc.SetWriteDeadline(d)
	p.next = now.Add(min(deadlinePush, p.stall/4))
}

func (p *progressWriter) Write(b []byte) (int, error) {
	if now := time.Now(); now.After(p.next) {
		p.push(now)
	}
	n, err := p.w.Write(b)
	if p.count {
		p.lines += int64(bytes.Count(b[:n], newline))
	}
	return n, err
}

var newline = []byte{'\n'}

type replicationStatus struct {
	AppliedSeq uint64            `json:"applied_seq"`
	Users      uint64            `json:"users"`
	Records    map[string]uint64 `json:"records"`
}

func (s *Server) currentReplicationStatus() replicationStatus {
	counts := s.ix.Counts()
	return replicationStatus{AppliedSeq: s.ix.AppliedSeq(), Users: counts.Users, Records: counts.Records}
}

func (s *Server) replicationStatus(c *gin.Context) {
	c.JSON(http.StatusOK, s.currentReplicationStatus())
}

func (s *Server) live(c *gin.Context) {
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

// readiness returns "" when ready, else the reason.
func (s *Server) readiness() string {
	if s.eng.Revision() == "" {
		return "no policy is compiled"
	}
	if err := s.ix.View(func(*index.ReadTx) error { return nil }); err != nil {
		return "the index is not open: " + err.Error()
	}
	if seq := s.ix.AppliedSeq(); seq < s.cfg.ReadyMinSeq {
		return "the index has applied seq " + strconv.FormatUint(seq, 10) + ", waiting for " + strconv.FormatUint(s.cfg.ReadyMinSeq, 10)
	}
	if s.cfg.Source != nil {
		return s.cfg.Source.NotReady()
	}
	return ""
}

func (s *Server) ready(c *gin.Context) {
	if reason := s.readiness(); reason != "" {
		s.writeError(c, newError(http.StatusServiceUnavailable, errcode.NotReady, "%s", reason))
		return
	}
	c.JSON(http.StatusOK, gin.H{"status": "ok"})
}

type policyStatus struct {
	Revision   string     `json:"revision"`
	LastReload *time.Time `json:"last_reload"`
	LastError  *string    `json:"last_error"`
}

type statusResponse struct {
	Version    string            `json:"version"`
	Ready      bool              `json:"ready"`
	ReadOnly   bool              `json:"read_only"`
	Policy     policyStatus      `json:"policy"`
	AppliedSeq uint64            `json:"applied_seq"`
	Index      replicationStatus `json:"index"`
	// NotReady is why /health/ready answers 503; absent when ready.
	NotReady string `json:"not_ready,omitempty"`
	// ReplicationSource is the source feeding the index (NATS), if any.
	ReplicationSource any `json:"replication_source,omitempty"`
}

func (s *Server) status(c *gin.Context) {
	ps := s.eng.Status()
	notReady := s.readiness()
	resp := statusResponse{
		Version:    s.cfg.Version,
		Ready:      notReady == "",
		NotReady:   notReady,
		ReadOnly:   s.ix.ReadOnly(),
		Policy:     policyStatus{Revision: ps.Revision},
		AppliedSeq: s.ix.AppliedSeq(),
		Index:      s.currentReplicationStatus(),
	}
	if !ps.LastReload.IsZero() {
		t := ps.LastReload.UTC()
		resp.Policy.LastReload = &t
	}
	if ps.LastError != nil {
		msg := ps.LastError.Error()
		resp.Policy.LastError = &msg
	}
	if s.cfg.Source != nil {
		resp.ReplicationSource = s.cfg.Source.Report()
	}
	c.JSON(http.StatusOK, resp)
}
