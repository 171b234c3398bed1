// Package highlevel is `crmauthz connect highlevel` (docs/highlevel.md): it keeps a crmauthz
// index in step with a HighLevel account. It reads users, contacts and opportunities from
// HighLevel's API v2, takes signed webhooks, and writes the replication events of
// docs/reference.md to one sink (internal/connect/sink), keeping its state in a bbolt file under
// the state dir so that a SIGKILL at any moment loses nothing.
//
// The writer is one critical section (Connector.mu): it turns source objects into facts,
// compares them with its copy of what it last wrote, records the events in an outbox in the
// same bbolt transaction as the new copy, and then writes the outbox to the sink. A restart
// resumes from the outbox: events the sink already has (seq <= its head) are dropped, the rest
// are written again.
package highlevel

import (
	"context"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/crmauthz/crmauthz/internal/connect/sink"
)

// Config configures a Connector. DefaultConfig has the defaults of the command's flags.
type Config struct {
	APIURL      string   // --api-url
	TokenFile   string   // --token-file (one token for all locations)
	TokenDir    string   // --token-dir (a file per location id)
	CompanyID   string   // --company-id ("": learned from the locations, docs/highlevel.md)
	LocationIDs []string // --location-ids (required)

	WebhookPublicKey ed25519.PublicKey // --webhook-public-key-file (default: HighLevel's key)
	WebhookLegacyKey *rsa.PublicKey    // --webhook-legacy-key-file (default: HighLevel's key)
	LegacyRSA        bool              // --webhook-legacy-rsa
	MaxWebhookAge    time.Duration     // a webhook's timestamp older than this is stale
	MaxWebhookSkew   time.Duration     // ... or further ahead than this
	RetryAfter       time.Duration     // the Retry-After of a 429 when backed up
	MaxPending       int               // --max-pending

	ReconcileInterval  time.Duration // --reconcile-interval
	DailyRequestBudget int           // --daily-request-budget, per resource
	RateLimit          int           // requests per RateWindow per resource (HighLevel: 100)
	RateWindow         time.Duration // (HighLevel: 10 s)
	PageSize           int           // records per page of a listing (at most 100)
	MaxAttempts        int           // attempts of one API request or sink write; 0: forever

	// WebhookAddr and AdminAddr are the listeners of WebhookHandler and AdminHandler, which the
	// command binds (--webhook-addr, --admin-addr); New does not read them.
	WebhookAddr, AdminAddr string

	StateDir string
	Sink     sink.Sink
	Logger   *slog.Logger
	HTTP     *http.Client
	Now      func() time.Time

	// SkipReconcileAtStart leaves out the reconcile at start once the first copy is written:
	// only for tests that must see webhook work alone.
	SkipReconcileAtStart bool
}

// DefaultConfig returns the defaults of docs/highlevel.md, with HighLevel's published keys.
func DefaultConfig() Config {
	ek, err := ParseEd25519PublicKey([]byte(defaultWebhookPublicKeyPEM))
	if err != nil {
		panic("built-in Ed25519 key: " + err.Error())
	}
	rk, err := ParseRSAPublicKey([]byte(defaultWebhookLegacyKeyPEM))
	if err != nil {
		panic("built-in RSA key: " + err.Error())
	}
	return Config{
		APIURL:             "https://services.leadconnectorhq.com",
		WebhookPublicKey:   ek,
		WebhookLegacyKey:   rk,
		LegacyRSA:          true,
		MaxWebhookAge:      5 * time.Minute,
		MaxWebhookSkew:     time.Minute,
		RetryAfter:         60 * time.Second,
		MaxPending:         10_000,
		ReconcileInterval:  15 * time.Minute,
		DailyRequestBudget: 200_000,
		RateLimit:          100,
		RateWindow:         10 * time.Second,
		PageSize:           100,
		StateDir:           "./highlevel-state",
		WebhookAddr:        "127.0.0.1:8380",
		AdminAddr:          "127.0.0.1:8383",
	}
}

func (c *Config) check() error {
	var errs []error
	u, err := url.Parse(c.APIURL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.RawQuery != "" {
		errs = append(errs, fmt.Errorf("api url %q: want http(s)://host[/path]", c.APIURL))
	}
	if (c.TokenFile == "") == (c.TokenDir == "") {
		errs = append(errs, errors.New("exactly one of token file and token dir"))
	}
	if len(c.LocationIDs) == 0 {
		errs = append(errs, errors.New("no location ids"))
	}
	seen := map[string]bool{}
	for _, l := range c.LocationIDs {
		if !validID(l) || seen[l] {
			errs = append(errs, fmt.Errorf("location id %q: empty, invalid or repeated", l))
		}
		seen[l] = true
	}
	if len(c.WebhookPublicKey) != ed25519.PublicKeySize {
		errs = append(errs, errors.New("no Ed25519 webhook key"))
	}
	if c.LegacyRSA && c.WebhookLegacyKey == nil {
		errs = append(errs, errors.New("legacy RSA signatures enabled without an RSA key"))
	}
	if c.MaxPending < 1 || c.ReconcileInterval < time.Second || c.RateLimit < 1 || c.RateWindow <= 0 ||
		c.PageSize < 1 || c.PageSize > 100 || c.DailyRequestBudget < 0 || c.MaxWebhookAge <= 0 || c.MaxWebhookSkew < 0 || c.MaxAttempts < 0 {
		errs = append(errs, errors.New("max pending ≥ 1, reconcile interval ≥ 1s, rate limit ≥ 1, page size 1..100, budgets ≥ 0"))
	}
	if c.StateDir == "" {
		errs = append(errs, errors.New("no state dir"))
	}
	if c.Sink == nil {
		errs = append(errs, errors.New("no sink"))
	}
	return errors.Join(errs...)
}

// Connector is one running HighLevel connector.
type Connector struct {
	cfg  Config
	st   *state
	api  *client
	m    *metrics
	log  *slog.Logger
	wake chan struct{}

	mu        sync.Mutex // the writer: commit and flush
	headKnown bool       // the sink's head was read since the last failed write

	companyMu      sync.Mutex  // learnCompany
	companyChecked atomic.Bool // every location's company is known and agrees

	ready   atomic.Bool
	lastErr atomic.Pointer[string]
}

// New opens the state dir and checks the configuration.
func New(cfg Config) (*Connector, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 60 * time.Second}
	}
	if cfg.RetryAfter < time.Second {
		cfg.RetryAfter = time.Second
	}
	if err := cfg.check(); err != nil {
		return nil, err
	}
	base, _ := url.Parse(cfg.APIURL)
	st, err := openState(cfg.StateDir)
	if err != nil {
		return nil, err
	}
	m := newMetrics()
	c := &Connector{cfg: cfg, st: st, m: m, log: cfg.Logger.With("connector", "highlevel"), wake: make(chan struct{}, 1)}
	c.api = &client{base: base, http: cfg.HTTP, tokens: &tokens{file: cfg.TokenFile, dir: cfg.TokenDir},
		lim:      newLimiter(cfg.RateLimit, cfg.RateWindow, cfg.DailyRequestBudget, cfg.Now),
		pageSize: cfg.PageSize, maxAttempts: cfg.MaxAttempts, m: m, now: cfg.Now,
		shared: cfg.TokenFile != "" && len(cfg.LocationIDs) > 1}
	if err := c.loadCompany(); err != nil {
		st.Close()
		return nil, err
	}
	m.pending.Set(float64(st.pending()))
	return c, nil
}

// Close closes the state file.
func (c *Connector) Close() error { return c.st.Close() }

func (c *Connector) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Ready reports whether the first full sync reached the sink.
func (c *Connector) Ready() bool { return c.ready.Load() }

// AdminHandler serves /health/live, /health/ready and /metrics.
func (c *Connector) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health/live", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "live"})
	})
	mux.HandleFunc("GET /health/ready", func(w http.ResponseWriter, _ *http.Request) {
		if c.ready.Load() {
			writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
			return
		}
		msg := "the first full sync has not reached the sink yet"
		if e := c.lastErr.Load(); e != nil {
			msg += ": " + *e
		}
		writeError(w, http.StatusServiceUnavailable, "not_ready", msg)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(c.m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "routes: /health/live, /health/ready, /metrics")
	})
	return mux
}

// Sync runs one full reconcile of every location (the first copy as a snapshot) and writes it
// to the sink, with the webhook work already waiting in the state dir.
func (c *Connector) Sync(ctx context.Context) error {
	did, err := c.firstCopy(ctx)
	if err != nil {
		return err
	}
	if !did {
		if err := c.reconcileAll(ctx, false); err != nil {
			return err
		}
	}
	return c.drainWork(ctx)
}

// Run writes the first copy if needed, then serves the webhook work and reconciles at start
// and every ReconcileInterval until ctx is done. Errors of one round are logged and retried;
// Run returns ctx's error, or an error that retrying cannot mend (the sink has events this
// connector did not write; the locations are no longer in one company).
func (c *Connector) Run(ctx context.Context) error {
	backoff := time.Second
	var did bool
	for {
		var err error
		if did, err = c.firstCopy(ctx); err == nil {
			break
		}
		if ctx.Err() != nil || errors.Is(err, errForeignWriter) || errors.Is(err, errCompanyMismatch) {
			return err
		}
		c.fail("first sync", err)
		if !sleep(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(2*backoff, time.Minute)
	}
	wctx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	errc := make(chan error, 1)
	go func() { errc <- c.workLoop(wctx) }()
	reconcile := make(chan struct{}, 1)
	if !did && !c.cfg.SkipReconcileAtStart {
		reconcile <- struct{}{}
	} else {
		c.ready.Store(true)
	}
	t := time.NewTicker(c.cfg.ReconcileInterval)
	defer t.Stop()
	prune := time.NewTicker(time.Hour)
	defer prune.Stop()
	for {
		doReconcile := false
		select {
		case <-ctx.Done():
			<-errc
			return ctx.Err()
		case err := <-errc:
			return err
		case <-t.C:
			doReconcile = true
		case <-reconcile:
			doReconcile = true
		case <-prune.C:
			if n, err := c.st.pruneDedupe(c.cfg.Now().Add(-25 * time.Hour)); err != nil {
				c.fail("pruning webhook ids", err)
			} else if n > 0 {
				c.log.Info("forgot old webhook ids", "count", n)
			}
		}
		if !doReconcile {
			continue
		}
		if err := c.reconcileOnce(ctx); err != nil {
			stopWork()
			<-errc
			return err
		}
	}
}

// reconcileOnce reconciles; an error is logged and left to the next round, but for a company
// mismatch (a location moved to another company, docs/highlevel.md "The company"), which it
// returns: Run stops with it.
func (c *Connector) reconcileOnce(ctx context.Context) error {
	err := c.reconcileAll(ctx, false)
	if err == nil || ctx.Err() != nil {
		return nil
	}
	if errors.Is(err, errCompanyMismatch) {
		return err
	}
	c.fail("reconcile", err)
	return nil
}

// firstCopy resumes the outbox, and writes the first copy as a snapshot if it is not written
// yet (did reports that it was written now). Either way the company is known once it returns nil.
func (c *Connector) firstCopy(ctx context.Context) (did bool, err error) {
	if c.snapshotDone() {
		if err := c.resume(ctx); err != nil {
			return false, err
		}
		return false, c.learnCompany(ctx)
	}
	return true, c.reconcileAll(ctx, true)
}

// workLoop serves the webhook work until ctx is done.
func (c *Connector) workLoop(ctx context.Context) error {
	backoff := time.Second
	for {
		err := c.drainWork(ctx)
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.Is(err, errForeignWriter):
			return err
		case err != nil:
			c.fail("webhook work", err)
			if !sleep(ctx, backoff) {
				return ctx.Err()
			}
			backoff = min(2*backoff, time.Minute)
			continue
		}
		backoff = time.Second
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.wake:
		case <-time.After(5 * time.Second):
		}
	}
}

func (c *Connector) fail(what string, err error) {
	msg := what + ": " + err.Error()
	c.lastErr.Store(&msg)
	c.log.Error(what, "err", err)
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
