package highlevel

import (
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// errCompanyMismatch: the locations are not all in the company of --company-id, or not all in
// one company. Retrying cannot mend it: Run stops with it.
var errCompanyMismatch = errors.New("one connector follows the locations of one company")

// The company (docs/highlevel.md, "The company"): HighLevel's users search requires the
// companyId of the locations. The connector reads each location's companyId once with
// GET /locations/{locationId} and keeps it in the state dir; --company-id, when given, must
// agree with every location's.

// storedCompanies returns the companyId of each location learned before.
func (s *state) storedCompanies() (map[string]string, error) {
	out := map[string]string{}
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bCompany).ForEach(func(k, v []byte) error {
			out[string(k)] = string(v)
			return nil
		})
	})
	return out, err
}

func (s *state) storeCompany(location, company string) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bCompany).Put([]byte(location), []byte(company)) })
}

// agreedCompany checks the companies known of locations (some may be unknown yet) against the
// configured one and each other, and returns the company ("" if none is known and none is
// configured).
func agreedCompany(configured string, locations []string, known map[string]string) (string, error) {
	co, from := configured, ""
	for _, loc := range locations {
		k, ok := known[loc]
		switch {
		case !ok || k == co:
		case co == "":
			co, from = k, loc
		case from == "":
			return "", fmt.Errorf("location %s belongs to company %s, not to the configured company %s (--company-id): %w", loc, k, co, errCompanyMismatch)
		default:
			return "", fmt.Errorf("location %s belongs to company %s, location %s to company %s: %w", loc, k, from, co, errCompanyMismatch)
		}
	}
	return co, nil
}

// loadCompany sets the company from the configuration and the state dir, at New: a location
// known to be in another company is an error at start.
func (c *Connector) loadCompany() error {
	known, err := c.st.storedCompanies()
	if err != nil {
		return fmt.Errorf("state: companies: %w", err)
	}
	co, err := agreedCompany(c.cfg.CompanyID, c.cfg.LocationIDs, known)
	if err != nil {
		return err
	}
	if co != "" {
		c.api.company.Store(&co)
	}
	complete := true
	for _, loc := range c.cfg.LocationIDs {
		_, ok := known[loc]
		complete = complete && ok
	}
	c.companyChecked.Store(complete)
	return nil
}

// learnCompany reads the companyId of each location not known yet (GET /locations/{locationId},
// once: the answer is kept in the state dir) and checks that they agree, with each other and
// with the configured company. Until it succeeds no users are listed.
func (c *Connector) learnCompany(ctx context.Context) error {
	if c.companyChecked.Load() {
		return nil
	}
	c.companyMu.Lock()
	defer c.companyMu.Unlock()
	if c.companyChecked.Load() {
		return nil
	}
	known, err := c.st.storedCompanies()
	if err != nil {
		return fmt.Errorf("state: companies: %w", err)
	}
	for _, loc := range c.cfg.LocationIDs {
		if _, ok := known[loc]; ok {
			continue
		}
		co, err := c.api.locationCompany(ctx, loc)
		if err != nil {
			return fmt.Errorf("the company of location %s (GET /locations/%s; the token needs the locations.readonly scope): %w", loc, loc, err)
		}
		if err := c.st.storeCompany(loc, co); err != nil {
			return fmt.Errorf("state: company of %s: %w", loc, err)
		}
		known[loc] = co
		c.log.Info("learned the company of a location", "location", loc, "company", co)
	}
	co, err := agreedCompany(c.cfg.CompanyID, c.cfg.LocationIDs, known)
	if err != nil {
		return err
	}
	c.api.company.Store(&co)
	c.companyChecked.Store(true)
	return nil
}

// companySuspect says why a users search of a location may have gone out with a company that is
// no longer the location's: HighLevel answered it with an error (a 4xx other than 404 and 429),
// or it listed no users. "" when nothing suggests it. HighLevel's reference does not say what a
// search with another company's id answers (docs/highlevel.md), so both are taken as a hint.
func companySuspect(err error, listed int) string {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		return fmt.Sprintf("the users search was answered HTTP %d", ae.status)
	case err == nil && listed == 0:
		return "the users search listed no users"
	}
	return ""
}

// relearnCompany looks the company of loc up again (why: the hint, companySuspect), unless
// asked holds loc: each location is asked at most once per reconcile. When the location's
// company changed, it is stored, counted (anomaly company_changed) and logged, the other
// locations stored under its old company are asked too (once each), and the companies must
// agree again, as at the start (errCompanyMismatch otherwise, kept in the state dir). changed
// tells whether the company sent with users searches changed: the caller then lists again.
func (c *Connector) relearnCompany(ctx context.Context, loc, why string, asked map[string]bool) (changed bool, err error) {
	if asked[loc] {
		return false, nil
	}
	c.companyMu.Lock()
	defer c.companyMu.Unlock()
	known, err := c.st.storedCompanies()
	if err != nil {
		return false, fmt.Errorf("state: companies: %w", err)
	}
	before, old := c.api.companyID(), known[loc]
	moved, err := c.lookAgain(ctx, loc, why, known, asked)
	if err != nil || !moved {
		return false, err
	}
	for _, other := range c.cfg.LocationIDs {
		if other == loc || asked[other] || known[other] != old {
			continue
		}
		if _, err := c.lookAgain(ctx, other, "location "+loc+" moved from company "+old, known, asked); err != nil {
			return false, err
		}
	}
	co, err := agreedCompany(c.cfg.CompanyID, c.cfg.LocationIDs, known)
	if err != nil {
		c.companyChecked.Store(false)
		return false, err
	}
	c.api.company.Store(&co)
	return co != before, nil
}

// lookAgain asks for loc's company, records that it was asked, and stores and reports it when
// it is not the one known; moved tells that.
func (c *Connector) lookAgain(ctx context.Context, loc, why string, known map[string]string, asked map[string]bool) (moved bool, err error) {
	asked[loc] = true
	co, err := c.api.locationCompany(ctx, loc)
	if err != nil {
		return false, fmt.Errorf("looking the company of location %s up again (GET /locations/%s, because %s): %w", loc, loc, why, err)
	}
	old := known[loc]
	c.log.Info("looked the company of a location up again", "location", loc, "because", why, "company", co, "was", old)
	if co == old {
		return false, nil
	}
	if err := c.st.storeCompany(loc, co); err != nil {
		return false, fmt.Errorf("state: company of %s: %w", loc, err)
	}
	known[loc] = co
	c.anomalyAt(loc, anomalyCompanyChanged, "location", loc, fmt.Sprintf("its company is %s, no longer %s", co, old))
	return true, nil
}
