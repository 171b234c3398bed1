package highlevel

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// WebhookPath is where HighLevel posts webhooks (docs/highlevel.md, "Webhooks").
const WebhookPath = "/v1/highlevel/webhooks"

// maxWebhookBytes bounds a webhook body.
const maxWebhookBytes = 1 << 20

// webhookTypes are the webhook types the connector uses, and what each means for its object.
var webhookTypes = map[string]workItem{
	"ContactCreate":                  {Op: "refresh", Kind: kindContact},
	"ContactUpdate":                  {Op: "refresh", Kind: kindContact},
	"ContactTagUpdate":               {Op: "refresh", Kind: kindContact},
	"ContactDndUpdate":               {Op: "refresh", Kind: kindContact},
	"ContactDelete":                  {Op: "delete", Kind: kindContact},
	"OpportunityCreate":              {Op: "refresh", Kind: kindOpportunity},
	"OpportunityUpdate":              {Op: "refresh", Kind: kindOpportunity},
	"OpportunityAssignedToUpdate":    {Op: "refresh", Kind: kindOpportunity},
	"OpportunityStatusUpdate":        {Op: "refresh", Kind: kindOpportunity},
	"OpportunityStageUpdate":         {Op: "refresh", Kind: kindOpportunity},
	"OpportunityMonetaryValueUpdate": {Op: "refresh", Kind: kindOpportunity},
	"OpportunityDelete":              {Op: "delete", Kind: kindOpportunity},
	"UserCreate":                     {Op: "refresh", Kind: kindUser},
	"UserUpdate":                     {Op: "refresh", Kind: kindUser},
	"UserDelete":                     {Op: "delete", Kind: kindUser},
}

type webhookBody struct {
	Type       *string `json:"type"`
	WebhookID  *string `json:"webhookId"`
	Timestamp  *string `json:"timestamp"`
	LocationID *string `json:"locationId"`
	CompanyID  *string `json:"companyId"`
	ID         *string `json:"id"`
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, errCode, msg string) {
	writeJSON(w, code, map[string]any{"error": map[string]string{"code": errCode, "message": msg}})
}

// WebhookHandler serves POST /v1/highlevel/webhooks (docs/highlevel.md, "Webhooks").
func (c *Connector) WebhookHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(WebhookPath, c.serveWebhook)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "not_found", "the only route here is POST "+WebhookPath)
	})
	return mux
}

func (c *Connector) serveWebhook(w http.ResponseWriter, r *http.Request) {
	result, code := c.webhook(w, r)
	c.m.webhooks.WithLabelValues(result).Inc()
	if code >= 500 {
		c.log.Error("webhook", "result", result, "status", code)
	}
}

// webhook answers one webhook and returns its result label and status.
func (c *Connector) webhook(w http.ResponseWriter, r *http.Request) (string, int) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "webhooks are POSTed")
		return "invalid_webhook", http.StatusMethodNotAllowed
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxWebhookBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusBadRequest, "invalid_webhook", "the body is over 1 MiB")
			return "invalid_webhook", http.StatusBadRequest
		}
		writeError(w, http.StatusBadRequest, "invalid_webhook", "reading the body: "+err.Error())
		return "invalid_webhook", http.StatusBadRequest
	}
	if msg := c.verify(r.Header, raw); msg != "" {
		writeError(w, http.StatusUnauthorized, "invalid_signature", msg)
		return "invalid_signature", http.StatusUnauthorized
	}
	var b webhookBody
	if err := json.Unmarshal(raw, &b); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_webhook", "the body is not a JSON object: "+err.Error())
		return "invalid_webhook", http.StatusBadRequest
	}
	var missing []string
	for _, f := range []struct {
		name string
		v    *string
	}{{"type", b.Type}, {"webhookId", b.WebhookID}, {"timestamp", b.Timestamp}} {
		if f.v == nil || *f.v == "" {
			missing = append(missing, f.name)
		}
	}
	loc, company := deref(b.LocationID), deref(b.CompanyID)
	if loc == "" && company == "" {
		missing = append(missing, "locationId (or companyId)")
	}
	if b.WebhookID != nil && len(*b.WebhookID) > 512 {
		missing = append(missing, "webhookId (over 512 bytes)")
	}
	if len(missing) > 0 {
		writeError(w, http.StatusBadRequest, "invalid_webhook", "missing, empty or invalid: "+strings.Join(missing, ", "))
		return "invalid_webhook", http.StatusBadRequest
	}
	ts, err := time.Parse(time.RFC3339, *b.Timestamp)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_webhook", "timestamp is not RFC 3339: "+*b.Timestamp)
		return "invalid_webhook", http.StatusBadRequest
	}
	now := c.cfg.Now()
	if age := now.Sub(ts); age > c.cfg.MaxWebhookAge || -age > c.cfg.MaxWebhookSkew {
		writeError(w, http.StatusBadRequest, "stale_webhook", "timestamp "+*b.Timestamp+" is more than "+
			c.cfg.MaxWebhookAge.String()+" old or "+c.cfg.MaxWebhookSkew.String()+" ahead")
		return "stale_webhook", http.StatusBadRequest
	}
	item, used := webhookTypes[*b.Type]
	ours := c.api.companyID() // "" until learned: then the refresh checks the webhook's
	switch {
	case !used:
		writeJSON(w, http.StatusOK, map[string]bool{"ignored": true})
		return "ignored", http.StatusOK
	case loc != "" && !slices.Contains(c.cfg.LocationIDs, loc):
		writeJSON(w, http.StatusOK, map[string]bool{"ignored": true})
		return "ignored", http.StatusOK
	case loc == "" && (item.Kind != kindUser || ours != "" && company != ours):
		writeJSON(w, http.StatusOK, map[string]bool{"ignored": true})
		return "ignored", http.StatusOK
	}
	if id := deref(b.ID); !validID(id) {
		writeError(w, http.StatusBadRequest, "invalid_webhook", "id is missing or not a valid id")
		return "invalid_webhook", http.StatusBadRequest
	}
	item.ID, item.Location = *b.ID, loc
	if loc == "" && ours == "" {
		item.Company = company // checked by the refresh, once the company is learned
	}
	res, pending, err := c.st.enqueue(*b.WebhookID, item, now, c.cfg.MaxPending)
	if err != nil {
		c.log.Error("webhook: state", "err", err, "webhook_id", *b.WebhookID)
		writeError(w, http.StatusInternalServerError, "internal_error", "the work could not be stored")
		return "error", http.StatusInternalServerError
	}
	switch res {
	case duplicate:
		writeJSON(w, http.StatusOK, map[string]bool{"duplicate": true})
		return "duplicate", http.StatusOK
	case backedUp:
		w.Header().Set("Retry-After", strconv.Itoa(int(c.cfg.RetryAfter/time.Second)))
		writeError(w, http.StatusTooManyRequests, "backed_up", strconv.FormatUint(pending, 10)+" refreshes are waiting (--max-pending)")
		return "backed_up", http.StatusTooManyRequests
	}
	c.m.pending.Set(float64(pending))
	c.log.Debug("webhook accepted", "type", *b.Type, "location", loc, "kind", item.Kind, "id", item.ID, "webhook_id", *b.WebhookID)
	c.kick()
	writeJSON(w, http.StatusOK, map[string]bool{"accepted": true})
	return "accepted", http.StatusOK
}

// verify checks the body's signature; it returns "" when good, else what is wrong.
func (c *Connector) verify(h http.Header, body []byte) string {
	if sig := h.Get("X-GHL-Signature"); sig != "" {
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(sig))
		if err != nil || len(raw) != ed25519.SignatureSize {
			return "X-GHL-Signature is not a base64 Ed25519 signature"
		}
		if !ed25519.Verify(c.cfg.WebhookPublicKey, body, raw) {
			return "X-GHL-Signature does not match the body"
		}
		return ""
	}
	sig := h.Get("X-WH-Signature")
	if sig == "" {
		return "no X-GHL-Signature header"
	}
	if !c.cfg.LegacyRSA || c.cfg.WebhookLegacyKey == nil {
		return "X-WH-Signature (RSA) is not accepted here (--webhook-legacy-rsa=false): X-GHL-Signature is required"
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(sig))
	if err != nil {
		return "X-WH-Signature is not base64"
	}
	sum := sha256.Sum256(body)
	if rsa.VerifyPKCS1v15(c.cfg.WebhookLegacyKey, crypto.SHA256, sum[:], raw) != nil {
		return "X-WH-Signature does not match the body"
	}
	return ""
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// validID is what the index takes as an id (docs/design.md): non-empty, at most 512 bytes, no NUL.
func validID(s string) bool {
	return s != "" && len(s) <= 512 && !strings.ContainsRune(s, 0) && strings.ToValidUTF8(s, "\uFFFD") == s
}
