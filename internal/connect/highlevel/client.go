package highlevel

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// APIVersion is the Version header of HighLevel's API v2 (docs/highlevel.md).
const APIVersion = "2021-07-28"

// maxResponseBytes bounds one API reply.
const maxResponseBytes = 32 << 20

// errNotFound is a 404 from the API: the object is gone.
var errNotFound = errors.New("not found")

// apiError is a final (not retried) answer of the API.
type apiError struct {
	status int
	body   string
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

// tokens reads the bearer tokens: one file for all locations, or one file per location id in a
// directory. A file is re-read when its size or modification time changes.
type tokens struct {
	file, dir string
	mu        sync.Mutex
	cache     map[string]cachedToken
}

type cachedToken struct {
	mod   time.Time
	size  int64
	token string
}

func (t *tokens) get(location string) (string, error) {
	path := t.file
	if path == "" {
		if location == "" || strings.ContainsAny(location, `/\`) || location == "." || location == ".." {
			return "", fmt.Errorf("no token for location %q", location)
		}
		path = filepath.Join(t.dir, location)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c, ok := t.cache[path]; ok && c.mod.Equal(fi.ModTime()) && c.size == fi.Size() {
		return c.token, nil
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	tok := strings.TrimSpace(string(raw))
	if tok == "" || strings.ContainsAny(tok, " \r\n\t") {
		return "", fmt.Errorf("token file %s: empty or not one token", path)
	}
	if t.cache == nil {
		t.cache = map[string]cachedToken{}
	}
	t.cache[path] = cachedToken{mod: fi.ModTime(), size: fi.Size(), token: tok}
	return tok, nil
}

// client calls HighLevel's API v2, within the limits, retrying 429 and 5xx.
type client struct {
	base        *url.URL
	http        *http.Client
	tokens      *tokens
	lim         *limiter
	company     atomic.Pointer[string] // the companyId sent with user searches (configured or learned)
	pageSize    int
	maxAttempts int  // 0: retry forever
	shared      bool // one token for several locations (an agency token): one budget, the company's
	m           *metrics
	now         func() time.Time
}

// call sends one request for location (its token and its rate-limit resource; "" is the
// company) and decodes a 200 into out. 404 is errNotFound. 429, 5xx and network errors are
// retried with backoff and jitter (a 429 after its Retry-After) up to maxAttempts.
func (c *client) call(ctx context.Context, location, resource, method, path string, q url.Values, body any, out any) error {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + path
	u.RawQuery = q.Encode()
	var payload []byte
	if body != nil {
		var err error
		if payload, err = json.Marshal(body); err != nil {
			return err
		}
	}
	res := location
	if res == "" || c.shared {
		res = "company" // one company per connector (docs/highlevel.md, "The company")
	}
	backoff := 250 * time.Millisecond
	for attempt := 1; ; attempt++ {
		tok, err := c.tokens.get(location)
		if err != nil {
			c.m.sourceErrors.WithLabelValues("token").Inc()
			return err
		}
		if err := c.lim.wait(ctx, res); err != nil {
			return err
		}
		req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(payload))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Version", APIVersion)
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := c.http.Do(req)
		var retryAfter time.Duration
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			c.m.sourceRequests.WithLabelValues(resource, "error").Inc()
			c.m.sourceErrors.WithLabelValues("network").Inc()
		} else {
			raw, rerr := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
			resp.Body.Close()
			c.m.sourceRequests.WithLabelValues(resource, strconv.Itoa(resp.StatusCode)).Inc()
			c.honourHeaders(res, resp.Header)
			switch {
			case rerr != nil:
				c.m.sourceErrors.WithLabelValues("network").Inc()
			case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusCreated:
				if len(raw) > maxResponseBytes {
					c.m.sourceErrors.WithLabelValues("decode").Inc()
					return fmt.Errorf("%s %s: reply over %d bytes", method, path, maxResponseBytes)
				}
				if err := json.Unmarshal(raw, out); err != nil {
					c.m.sourceErrors.WithLabelValues("decode").Inc()
					return fmt.Errorf("%s %s: decoding the reply: %w", method, path, err)
				}
				return nil
			case resp.StatusCode == http.StatusNotFound:
				return errNotFound
			case resp.StatusCode == http.StatusTooManyRequests:
				c.m.sourceErrors.WithLabelValues("rate_limited").Inc()
				if s, err := strconv.Atoi(strings.TrimSpace(resp.Header.Get("Retry-After"))); err == nil && s >= 0 && s <= 3600 {
					retryAfter = time.Duration(s) * time.Second
				}
			case resp.StatusCode >= 500:
				c.m.sourceErrors.WithLabelValues("server").Inc()
			default:
				c.m.sourceErrors.WithLabelValues("client").Inc()
				return &apiError{status: resp.StatusCode, body: trim(string(raw), 300)}
			}
		}
		if c.maxAttempts > 0 && attempt >= c.maxAttempts {
			if err == nil {
				err = fmt.Errorf("HTTP %d", resp.StatusCode)
			}
			return fmt.Errorf("%s %s: giving up after %d attempts: %w", method, path, attempt, err)
		}
		wait := backoff/2 + rand.N(backoff/2+1) // jitter
		if retryAfter > wait {
			wait = retryAfter
			c.lim.pause(res, retryAfter)
		}
		backoff = min(backoff*2, 30*time.Second)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// honourHeaders pauses a resource whose burst or daily allowance the API says is used up.
func (c *client) honourHeaders(res string, h http.Header) {
	if v := h.Get("X-RateLimit-Remaining"); strings.TrimSpace(v) == "0" {
		ms, err := strconv.Atoi(strings.TrimSpace(h.Get("X-RateLimit-Interval-Milliseconds")))
		if err != nil || ms <= 0 || ms > 3_600_000 {
			ms = 10_000
		}
		c.lim.pause(res, time.Duration(ms)*time.Millisecond)
	}
	if v := h.Get("X-RateLimit-Daily-Remaining"); strings.TrimSpace(v) == "0" {
		c.lim.exhaustDay(res)
	}
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// companyID is the company of the connector's locations, "" while it is not known.
func (c *client) companyID() string {
	if p := c.company.Load(); p != nil {
		return *p
	}
	return ""
}

// locationCompany reads a location's companyId (GET /locations/{locationId}).
func (c *client) locationCompany(ctx context.Context, location string) (string, error) {
	var reply struct {
		Location *struct {
			CompanyID string `json:"companyId"`
		} `json:"location"`
	}
	err := c.call(ctx, location, "locations", http.MethodGet, "/locations/"+url.PathEscape(location), nil, nil, &reply)
	switch {
	case errors.Is(err, errNotFound):
		return "", errors.New("HTTP 404: no such location")
	case err != nil:
		return "", err
	case reply.Location == nil || !validID(reply.Location.CompanyID):
		c.m.sourceErrors.WithLabelValues("decode").Inc()
		return "", errors.New("the reply has no location.companyId")
	}
	return reply.Location.CompanyID, nil
}

// listUsers pages through GET /users/search for one location, with the company's id, which the
// API requires: without it the listing is refused, never sent.
func (c *client) listUsers(ctx context.Context, location string, each func(hlUser) error) error {
	co := c.companyID()
	if co == "" {
		return fmt.Errorf("users of %s: the company of the locations is not known yet (GET /locations/%s): not listing users without companyId", location, location)
	}
	for skip := 0; ; {
		q := url.Values{"companyId": {co}, "locationId": {location}, "skip": {strconv.Itoa(skip)}, "limit": {strconv.Itoa(c.pageSize)}}
		var page struct {
			Users []hlUser `json:"users"`
			Count *int     `json:"count"`
		}
		if err := c.call(ctx, location, "users", http.MethodGet, "/users/search", q, nil, &page); err != nil {
			return fmt.Errorf("users of %s: %w", location, err)
		}
		for _, u := range page.Users {
			if err := each(u); err != nil {
				return err
			}
		}
		skip += len(page.Users)
		if len(page.Users) < c.pageSize || (page.Count != nil && skip >= *page.Count) {
			return nil
		}
	}
}

// getUser reads one user (GET /users/{userId}); errNotFound when gone.
func (c *client) getUser(ctx context.Context, location, id string) (hlUser, error) {
	var u hlUser
	err := c.call(ctx, location, "users", http.MethodGet, "/users/"+url.PathEscape(id), nil, nil, &u)
	return u, err
}

type contactSearch struct {
	LocationID  string          `json:"locationId"`
	PageLimit   int             `json:"pageLimit"`
	SearchAfter json.RawMessage `json:"searchAfter,omitempty"`
	Filters     []searchFilter  `json:"filters,omitempty"`
}

type searchFilter struct {
	Field    string `json:"field"`
	Operator string `json:"operator"`
	Value    string `json:"value"`
}

type contactPage struct {
	Contacts []hlRecord `json:"contacts"`
	Total    *int       `json:"total"`
	Count    *int       `json:"count"`
}

// listContacts pages through POST /contacts/search with searchAfter.
func (c *client) listContacts(ctx context.Context, location string, each func([]hlRecord) error) error {
	var after json.RawMessage
	for seen := 0; ; {
		var page contactPage
		body := contactSearch{LocationID: location, PageLimit: c.pageSize, SearchAfter: after}
		if err := c.call(ctx, location, "contacts", http.MethodPost, "/contacts/search", nil, body, &page); err != nil {
			return fmt.Errorf("contacts of %s: %w", location, err)
		}
		if err := each(page.Contacts); err != nil {
			return err
		}
		seen += len(page.Contacts)
		total := page.Total
		if total == nil {
			total = page.Count
		}
		if len(page.Contacts) < c.pageSize || (total != nil && seen >= *total) {
			return nil
		}
		after = page.Contacts[len(page.Contacts)-1].SearchAfter
		if len(after) == 0 || string(after) == "null" {
			return fmt.Errorf("contacts of %s: a full page whose last contact has no searchAfter", location)
		}
	}
}

// getContact reads one contact by id through the search endpoint; errNotFound when gone.
func (c *client) getContact(ctx context.Context, location, id string) (hlRecord, error) {
	var page contactPage
	body := contactSearch{LocationID: location, PageLimit: 1, Filters: []searchFilter{{Field: "id", Operator: "eq", Value: id}}}
	if err := c.call(ctx, location, "contacts", http.MethodPost, "/contacts/search", nil, body, &page); err != nil {
		return hlRecord{}, err
	}
	for _, r := range page.Contacts {
		if r.ID == id {
			return r, nil
		}
	}
	return hlRecord{}, errNotFound
}

type opportunityPage struct {
	Opportunities []hlRecord `json:"opportunities"`
	Meta          struct {
		Total        *int            `json:"total"`
		StartAfter   json.RawMessage `json:"startAfter"`
		StartAfterID string          `json:"startAfterId"`
	} `json:"meta"`
}

// listOpportunities pages through GET /opportunities/search with startAfter/startAfterId.
func (c *client) listOpportunities(ctx context.Context, location string, each func([]hlRecord) error) error {
	q := url.Values{"location_id": {location}, "limit": {strconv.Itoa(c.pageSize)}}
	for seen := 0; ; {
		var page opportunityPage
		if err := c.call(ctx, location, "opportunities", http.MethodGet, "/opportunities/search", q, nil, &page); err != nil {
			return fmt.Errorf("opportunities of %s: %w", location, err)
		}
		if err := each(page.Opportunities); err != nil {
			return err
		}
		seen += len(page.Opportunities)
		if len(page.Opportunities) < c.pageSize || (page.Meta.Total != nil && seen >= *page.Meta.Total) {
			return nil
		}
		if page.Meta.StartAfterID == "" {
			return fmt.Errorf("opportunities of %s: a full page without meta.startAfterId", location)
		}
		q.Set("startAfterId", page.Meta.StartAfterID)
		q.Set("startAfter", strings.Trim(string(page.Meta.StartAfter), `"`))
	}
}

// getOpportunity reads one opportunity (the search endpoint with &id=); errNotFound when gone.
func (c *client) getOpportunity(ctx context.Context, location, id string) (hlRecord, error) {
	q := url.Values{"location_id": {location}, "id": {id}, "limit": {"1"}}
	var page opportunityPage
	if err := c.call(ctx, location, "opportunities", http.MethodGet, "/opportunities/search", q, nil, &page); err != nil {
		return hlRecord{}, err
	}
	for _, r := range page.Opportunities {
		if r.ID == id {
			return r, nil
		}
	}
	return hlRecord{}, errNotFound
}
