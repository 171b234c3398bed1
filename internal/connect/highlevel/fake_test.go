package highlevel

import (
	"net/http/httptest"
	"slices"
	"testing"

	"github.com/crmauthz/crmauthz/internal/connect/highlevel/hlfake"
	"github.com/crmauthz/crmauthz/internal/refmodel"
)

// fakeHL is the fake HighLevel (internal/connect/highlevel/hlfake) served over loopback.
type fakeHL struct {
	*hlfake.Fake
	srv *httptest.Server
}

func newFake(tb testing.TB) *fakeHL {
	f := &fakeHL{Fake: hlfake.New()}
	f.srv = httptest.NewServer(f.Fake)
	tb.Cleanup(f.srv.Close)
	return f
}

func (f *fakeHL) model(locations []string) *refmodel.Model { return fakeModel(f.Fake, locations) }

// model is what the index must hold for the fake's world (docs/connectors.md's rules for bad facts).
func fakeModel(f *hlfake.Fake, locations []string) *refmodel.Model {
	f.Mu.Lock()
	defer f.Mu.Unlock()
	m := refmodel.New()
	for _, u := range f.Users {
		if u.Role != "admin" && u.Role != "user" {
			continue
		}
		mu := refmodel.User{ID: u.ID, Role: u.Role, LocationIDs: slices.Compact(slices.Sorted(slices.Values(u.Locations))),
			ContactsEnabled: true, OpportunitiesEnabled: true}
		if u.AssignedDataOnly != nil {
			mu.AssignedDataOnly = *u.AssignedDataOnly
		}
		if u.ContactsEnabled != nil {
			mu.ContactsEnabled = *u.ContactsEnabled
		}
		if u.OpportunitiesEnabled != nil {
			mu.OpportunitiesEnabled = *u.OpportunitiesEnabled
		}
		m.Users[u.ID] = mu
	}
	for kind, rs := range f.Records {
		for _, r := range rs {
			if !slices.Contains(locations, r.Location) {
				continue
			}
			var fs []string
			for _, u := range r.Followers {
				if u != r.AssignedTo && !slices.Contains(fs, u) {
					fs = append(fs, u)
				}
			}
			slices.Sort(fs)
			if len(fs) > 10 {
				fs = fs[:10]
			}
			if fs == nil {
				fs = []string{}
			}
			rec := refmodel.Record{Type: kind, ID: r.ID, LocationID: r.Location, Owner: r.AssignedTo, Followers: fs}
			if kind == kindOpportunity {
				rec.ContactID = r.ContactID
			}
			m.Records[refmodel.Key{Type: kind, ID: r.ID}] = rec
		}
	}
	return m
}
