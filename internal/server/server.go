// Package server holds the handlers and middleware of crmauthz's two HTTP
// listeners: the decision listener (--addr; its hot routes are plain net/http
// handlers ahead of Gin, fast.go) and the admin listener (--admin-addr, Gin). Every handler times the request, parses it (4xx on failure),
// evaluates or applies, writes its reply once and returns; every error goes
// through one writer and one table of statuses and codes (errors.go).
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/crmauthz/crmauthz/internal/decisionlog"
	"github.com/crmauthz/crmauthz/internal/filter"
	"github.com/crmauthz/crmauthz/internal/identity"
	"github.com/crmauthz/crmauthz/internal/index"
	"github.com/crmauthz/crmauthz/internal/jsonstr"
	"github.com/crmauthz/crmauthz/internal/metrics"
	"github.com/crmauthz/crmauthz/internal/policy"
	"github.com/crmauthz/crmauthz/internal/replication"
	"github.com/crmauthz/crmauthz/internal/server/errcode"
	"github.com/crmauthz/crmauthz/internal/server/gateway"
	"github.com/crmauthz/crmauthz/internal/tracing"
)

// Config configures New. Index, Engine, Replicator and Metrics are required.
type Config struct {
	Index      *index.Index
	Engine     *policy.Engine
	Replicator *replication.Replicator
	Metrics    *metrics.Metrics
	Logger     *slog.Logger // default: slog.Default()
	Version    string

	// Token is the replication bearer token. Empty: only loopback clients may replicate.
	Token []byte
	// MaxDecisionBytes limits decision request bodies.
	MaxDecisionBytes int64
	// MaxBatchBytes limits replication batch bodies.
	MaxBatchBytes int64
	// MaxSnapshotBytes limits snapshot bodies.
	MaxSnapshotBytes int64
	// SnapshotTimeout bounds reading or writing one snapshot.
	SnapshotTimeout time.Duration
	// ConsistencyWait is how long a decision with min_seq waits for the index.
	ConsistencyWait time.Duration
	// ReadyMinSeq: /health/ready answers 503 until the index has applied this seq.
	ReadyMinSeq uint64
	// DataPaths lists the paths (e.g. "crmauthz/decision") the Data API may
	// evaluate; only an explicit "*" allows every path, and an empty,
	// non-nil list allows none. nil: crmauthz/decision and crmauthz/allow,
	// so the Data API cannot be used to read facts (data.crmauthz.subject)
	// or other rules of the policy.
	DataPaths []string
	// Pprof serves Go's runtime profiles under /debug/pprof/ on the admin
	// listener (`serve --pprof`, pprof.go).
	Pprof bool
	// DecisionLog, if set, gets every decision of /v1/decision, each check of
	// /v1/decisions and every Data API evaluation (a sample of them, as it
	// is configured). nil: no decision log, and no cost per decision.
	DecisionLog *decisionlog.Logger
	// Identity finds the subject of the gateway endpoints' requests (forward
	// auth, Envoy ext_authz); default: the X-User-Id header.
	Identity *identity.Identifier
	// Source, if set, is the replication source that feeds the index (NATS):
	// readiness and /v1/status include it.
	Source Source
	// Tracer, if set, exports a span per decision, replication batch and
	// snapshot load (docs/operations.md, "Tracing"). nil: tracing off, at
	// the cost of a nil check per request.
	Tracer *tracing.Tracer
	// Filter translates the data filter (GET /v1/subjects/{id}/filter) to the
	// mapped tables; default: the default schema.
	Filter *filter.Translator
	// Listeners bounds the HTTP listeners that HTTPServer and Limit build
	// (the serve command sets it from its flags); New does not read it.
	Listeners ListenerConfig
}

// ListenerConfig bounds the decision and admin listeners
// (docs/operations.md "Bounds").
type ListenerConfig struct {
	// Addr, AdminAddr and GRPCAddr are the listen addresses of the decision
	// API, the admin API and Envoy's ext_authz gRPC service ("": off).
	Addr, AdminAddr, GRPCAddr string
	// ReadHeaderTimeout is the time a client has to send its headers;
	// ReadTimeout to send a whole request (snapshot uploads extend theirs).
	ReadHeaderTimeout, ReadTimeout time.Duration
	// WriteTimeout and IdleTimeout of each connection.
	WriteTimeout, IdleTimeout time.Duration
	// MaxHeaderBytes limits the request headers.
	MaxHeaderBytes int
	// BodyTimeout is Limits.BodyTimeout of both listeners.
	BodyTimeout time.Duration
	// MaxInFlight and AdminMaxInFlight are Limits.MaxInFlight of the
	// decision and the admin listener (0: no limit).
	MaxInFlight, AdminMaxInFlight int
	// ShutdownTimeout is the time in-flight requests get on SIGTERM.
	ShutdownTimeout time.Duration
}

// DefaultConfig returns the defaults: New fills them in for zero fields, and
// the serve command's flags show them (cmd/crmauthz).
func DefaultConfig() Config {
	return Config{
		MaxDecisionBytes: gateway.DefaultConfig().MaxDecisionBytes, // one limit for every decision body
		MaxBatchBytes:    16 << 20,
		MaxSnapshotBytes: 8 << 30,
		SnapshotTimeout:  15 * time.Minute,
		ConsistencyWait:  200 * time.Millisecond,
		DataPaths:        []string{"crmauthz/decision", "crmauthz/allow"},
		Listeners: ListenerConfig{
			Addr:              "127.0.0.1:8181",
			AdminAddr:         "127.0.0.1:8282",
			ReadHeaderTimeout: 5 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       120 * time.Second,
			MaxHeaderBytes:    64 << 10,
			BodyTimeout:       5 * time.Second,
			MaxInFlight:       1024,
			AdminMaxInFlight:  64,
			ShutdownTimeout:   15 * time.Second,
		},
	}
}

// Server serves the decision and admin listeners.
type Server struct {
	cfg  Config
	ix   *index.Index
	eng  *policy.Engine
	repl *replication.Replicator
	m    *metrics.Metrics
	dlog *decisionlog.Logger // nil when off
	tr   *tracing.Tracer     // nil when off
	log  *slog.Logger
	ids  *idGen
	// dataPaths is the Data API's allowlist; dataAll (an explicit "*")
	// allows every path. Never "nil means all": an empty list is none.
	dataPaths map[string]bool
	dataAll   bool
	filter    *filter.Translator
	gw        *gateway.Gateway // the gateway endpoints (internal/server/gateway)
	routes    leanRoutes       // the lean handlers' metrics (fast.go)
	bufs      replyBufs        // the buffers replies are built in (fast.go)
	// stallTimeout cuts an export whose client stops reading (admin.go, progressWriter).
	stallTimeout time.Duration
	// epoch is the server's start, with its monotonic reading: clock.
	epoch time.Time
}

// New checks cfg, fills its defaults and returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Index == nil || cfg.Engine == nil || cfg.Replicator == nil || cfg.Metrics == nil {
		return nil, errors.New("server: Index, Engine, Replicator and Metrics are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	d := DefaultConfig()
	if cfg.MaxDecisionBytes <= 0 {
		cfg.MaxDecisionBytes = d.MaxDecisionBytes
	}
	if cfg.MaxBatchBytes <= 0 {
		cfg.MaxBatchBytes = d.MaxBatchBytes
	}
	if cfg.MaxSnapshotBytes <= 0 {
		cfg.MaxSnapshotBytes = d.MaxSnapshotBytes
	}
	if cfg.SnapshotTimeout <= 0 {
		cfg.SnapshotTimeout = d.SnapshotTimeout
	}
	if cfg.ConsistencyWait <= 0 {
		cfg.ConsistencyWait = d.ConsistencyWait
	}
	if cfg.DataPaths == nil {
		cfg.DataPaths = d.DataPaths
	}
	if cfg.Identity == nil {
		id, err := identity.New(identity.Config{})
		if err != nil {
			return nil, err
		}
		cfg.Identity = id
	}
	ids, err := newIDGen()
	if err != nil {
		return nil, err
	}
	if cfg.Filter == nil {
		tr, err := filter.New(filter.DefaultConfig())
		if err != nil {
			return nil, err
		}
		cfg.Filter = tr
	}
	gin.SetMode(gin.ReleaseMode)
	s := &Server{filter: cfg.Filter, cfg: cfg, ix: cfg.Index, eng: cfg.Engine, repl: cfg.Replicator, m: cfg.Metrics, log: cfg.Logger, ids: ids,
		dlog: cfg.DecisionLog, tr: cfg.Tracer, dataPaths: map[string]bool{}, routes: newLeanRoutes(cfg.Metrics),
		stallTimeout: min(defaultStallTimeout, cfg.SnapshotTimeout), epoch: time.Now()}
	for _, p := range cfg.DataPaths {
		p = strings.Trim(strings.TrimSpace(p), "/")
		switch p {
		case "*":
			s.dataAll = true
		case "": // no path: allows nothing
		default:
			s.dataPaths[p] = true
		}
	}
	s.gw, err = gateway.New(gateway.Config{Decide: s.decideHTTP, NextID: ids.next, ActionLabel: actionLabel, Actions: knownActions, SpanType: spanType,
		WriteAllow: s.writeAllow, Identity: cfg.Identity, Metrics: cfg.Metrics, DecisionLog: cfg.DecisionLog, Tracer: cfg.Tracer,
		Logger: cfg.Logger, MaxDecisionBytes: cfg.MaxDecisionBytes})
	if err != nil {
		return nil, err
	}
	s.updateIndexMetrics()
	cfg.Metrics.DecisionCache(cfg.Engine.CacheStats)
	cfg.Metrics.PolicyLimits(func() (timeouts, builtins uint64) {
		st := cfg.Engine.LimitStats()
		return st.Timeouts, st.Builtins
	})
	cfg.Metrics.Ready(func() bool { return s.readiness() == "" })
	cfg.Metrics.DataDir(cfg.Index.Path())
	cfg.Metrics.IndexMerges(cfg.Index.MergeStats)
	return s, nil
}

// HTTPServer returns an http.Server for h with the default timeouts and
// header limit (DefaultConfig().Listeners). Handlers that stream (snapshots)
// extend their own deadlines.
func HTTPServer(addr string, h http.Handler) *http.Server {
	return DefaultConfig().Listeners.HTTPServer(addr, h)
}

// HTTPServer returns an http.Server for h with l's timeouts and header limit.
func (l ListenerConfig) HTTPServer(addr string, h http.Handler) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           h,
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}

func (s *Server) newEngine(listener string) *gin.Engine {
	r := gin.New()
	r.HandleMethodNotAllowed = true
	r.ContextWithFallback = true
	r.Use(s.recovery(), s.countRequests(listener))
	r.NoRoute(func(c *gin.Context) {
		s.writeError(c, newError(http.StatusNotFound, errcode.NotFound, "no route %s %s", c.Request.Method, c.Request.URL.Path))
	})
	r.NoMethod(func(c *gin.Context) {
		s.writeError(c, newError(http.StatusMethodNotAllowed, errcode.MethodNotAllowed, "%s is not allowed on %s", c.Request.Method, c.Request.URL.Path))
	})
	return r
}

// DecisionHandler serves the decision listener (--addr).
func (s *Server) DecisionHandler() http.Handler {
	r := s.newEngine("decision")
	// POST /v1/decision and /v1/decisions never reach Gin (decisionMux,
	// fast.go); their routes stay in its tree for its 405s and redirects.
	r.POST(routeDecision, gin.WrapF(s.serveDecision))
	r.POST(routeDecisions, gin.WrapF(s.serveDecisions))
	r.POST("/v1/data/*path", s.postData)
	r.POST("/v1/compile/*path", s.postCompile)       // OPA's Compile API (compile.go)
	r.GET("/v1/subjects/*rest", s.getSubjectRecords) // /v1/subjects/{id}/records (subjects.go) and /filter (filter.go)
	// The gateway endpoints do not reach Gin either (but for methods its
	// Any does not route, which it answers 405).
	r.Any(gateway.ForwardAuthPath, func(c *gin.Context) { s.gw.ForwardAuth(c.Writer, c.Request) })
	r.Any(routeExtAuthz, func(c *gin.Context) { s.gw.ExtAuthzHTTP(c.Writer, c.Request) })
	return &decisionMux{s: s, gin: r}
}

// NewGRPC returns the gRPC server of Envoy's ext_authz listener (--grpc-addr).
func (s *Server) NewGRPC() *gateway.GRPC { return s.gw.NewGRPC() }

// decideHTTP evaluates data.crmauthz.http_decision in one read transaction
// of the index: the gateways' Decide.
// The results share one variable, so that the closure moves one, not
// three, to the heap.
func (s *Server) decideHTTP(ctx context.Context, in policy.HTTPInput) (policy.HTTPDecision, string, uint64, error) {
	var r struct {
		d   policy.HTTPDecision
		rev string
		seq uint64
	}
	err := s.ix.View(func(tx *index.ReadTx) error {
		r.seq = tx.AppliedSeq()
		var err error
		r.d, r.rev, err = s.eng.DecideHTTP(ctx, tx, in)
		return err
	})
	return r.d, r.rev, r.seq, err
}

// writeAllow writes the gateways' 200 reply: the reply of /v1/decision.
func (s *Server) writeAllow(w http.ResponseWriter, reason, id, revision string, seq uint64) {
	bp := s.bufs.get()
	defer s.bufs.put(bp)
	b := appendReplyHead(*bp, true, reason)
	b = jsonstr.Append(b, id)
	b = appendReplyTail(b, revision, seq)
	*bp = b
	rp := reply{w: w}
	rp.ok(b)
}

// AdminHandler serves the admin listener (--admin-addr).
func (s *Server) AdminHandler() http.Handler {
	r := s.newEngine("admin")
	r.GET("/health/live", s.live)
	r.GET("/health/ready", s.ready)
	r.GET("/v1/status", s.status)
	mh := s.m.Handler()
	r.GET("/metrics", func(c *gin.Context) { mh.ServeHTTP(c.Writer, c.Request) })
	g := r.Group("/v1/replication", s.requireReplicationAuth)
	g.POST("/events", s.postEvents)
	g.PUT("/snapshot", s.putSnapshot)
	g.GET("/snapshot", s.getSnapshot)
	g.GET("/status", s.replicationStatus)
	g.GET("/backup", s.getBackup)
	if s.cfg.Pprof {
		s.mountPprof(r)
	}
	return r
}

// recovery turns a panic into the 500 error body (on the decision listener a deny), or, once
// part of the reply is sent, into a cut connection (onPanic).
func (s *Server) recovery() gin.HandlerFunc {
	return func(c *gin.Context) {
		defer func() {
			if v := recover(); v != nil {
				s.onPanic(v, c.Writer, c.Request, c.Writer.Written())
				c.Abort()
			}
		}()
		c.Next()
	}
}

// countRequests counts every request by route template (never the raw path,
// whose cardinality the client controls).
func (s *Server) countRequests(listener string) gin.HandlerFunc {
	return func(c *gin.Context) {
		c.Next()
		route := c.FullPath()
		if route == "" {
			route = "unmatched"
		}
		s.m.HTTPRequest(listener, route, c.Writer.Status())
	}
}

// IsLoopbackAddr tells whether addr ("host:port") is on this host: a loopback
// IP or "localhost". For a request it is given the connection's own address
// (RemoteAddr), never X-Forwarded-For (which a client can set); cmd also asks
// it about a listen address.
func IsLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (s *Server) updateIndexMetrics() {
	c := s.ix.Counts()
	s.m.IndexState(s.ix.AppliedSeq(), c.Users, c.Records)
}

// clock is the monotonic clock's time since the server's start: a lean
// handler's duration is the difference of two readings. One clock read
// each, where time.Now reads the wall clock as well (BENCHMARKS.md
// "Session 8: the CPU per decision over HTTP").
func (s *Server) clock() time.Duration { return time.Since(s.epoch) }

// noDuration is the start of a lean handler that observes no duration
// (finish).
const noDuration time.Duration = -1

// idGen makes decision ids: a random per-process prefix and a counter, unique
// without a system call per decision.
type idGen struct {
	prefix string
	n      atomic.Uint64
}

func newIDGen() (*idGen, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	return &idGen{prefix: hex.EncodeToString(b[:]) + "-"}, nil
}

func (g *idGen) next() string {
	return g.prefix + strconv.FormatUint(g.n.Add(1), 16)
}
