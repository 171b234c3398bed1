// Command highlevel-fake is a fake HighLevel account for trying `crmauthz connect highlevel`
// without one (README, "Following a HighLevel account"). It serves the API v2 endpoints the
// connector reads over a small demo world (internal/connect/highlevel/hlfake), writes a token per
// location and the public half of a webhook signing key it generates into -dir, and has three
// demo routes that change the world the way a HighLevel user would:
//
//	POST /demo/assign?type=contact&id=c-2&user=u-gina   new owner, and a signed ContactUpdate webhook
//	POST /demo/follow?type=contact&id=c-2&user=u-gina   a new follower, no webhook (as HighLevel)
//	POST /demo/delete?type=contact&id=c-2               gone, and a signed ContactDelete webhook
//
//	cd tools && go run ./highlevel-fake -dir ../data/highlevel-fake
package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/crmauthz/crmauthz/internal/connect/highlevel/hlfake"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8390", "listen address (API v2 and /demo/)")
	dir := flag.String("dir", "./data/highlevel-fake", "where to write tokens/<location> and webhook-public.pem")
	webhook := flag.String("webhook", "http://127.0.0.1:8380/v1/highlevel/webhooks", "the connector's webhook URL")
	flag.Parse()
	if err := run(*addr, *dir, *webhook); err != nil {
		log.Fatal(err)
	}
}

func run(addr, dir, webhook string) error {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "tokens"), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "webhook-public.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
		return err
	}
	f := hlfake.New()
	for _, loc := range []string{"loc-1", "loc-2"} {
		f.Locations[loc] = &hlfake.Location{ID: loc, CompanyID: f.Company, Name: "Demo " + loc}
		b := make([]byte, 16)
		rand.Read(b)
		tok := "demo-" + hex.EncodeToString(b)
		f.Tokens[tok] = loc
		if err := os.WriteFile(filepath.Join(dir, "tokens", loc), []byte(tok+"\n"), 0o600); err != nil {
			return err
		}
	}
	world(f)
	d := &demo{f: f, key: priv, webhook: webhook}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /demo/{what}", d.serve)
	mux.Handle("/", f)
	log.Printf("fake HighLevel on http://%s; tokens and webhook-public.pem in %s; webhooks to %s", addr, dir, webhook)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second}
	return srv.ListenAndServe()
}

// world is the demo world: as examples/demo.ndjson's loc-1, smaller.
func world(f *hlfake.Fake) {
	yes, no := true, false
	for _, u := range []*hlfake.User{
		{ID: "u-bob", Role: "user", Locations: []string{"loc-1"}, AssignedDataOnly: &yes},
		{ID: "u-carol", Role: "user", Locations: []string{"loc-1"}, AssignedDataOnly: &yes},
		{ID: "u-gina", Role: "user", Locations: []string{"loc-1"}, AssignedDataOnly: &yes},
		{ID: "u-alice", Role: "user", Locations: []string{"loc-1"}, AssignedDataOnly: &no},
		{ID: "u-erin", Role: "user", Locations: []string{"loc-2"}, AssignedDataOnly: &yes},
		{ID: "u-admin", Role: "admin", Locations: []string{"loc-1", "loc-2"}},
	} {
		f.Users[u.ID] = u
	}
	for _, r := range []*hlfake.Record{
		{Kind: hlfake.KindContact, ID: "c-1", Location: "loc-1", AssignedTo: "u-bob", Followers: []string{"u-carol"}},
		{Kind: hlfake.KindContact, ID: "c-2", Location: "loc-1"},
		{Kind: hlfake.KindContact, ID: "c-3", Location: "loc-2", AssignedTo: "u-erin"},
		{Kind: hlfake.KindOpportunity, ID: "o-1", Location: "loc-1", AssignedTo: "u-bob", ContactID: "c-1"},
	} {
		f.Records[r.Kind][r.ID] = r
	}
}

type demo struct {
	f       *hlfake.Fake
	key     ed25519.PrivateKey
	webhook string
}

func (d *demo) serve(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	kind, id, user := q.Get("type"), q.Get("id"), q.Get("user")
	if kind != hlfake.KindContact && kind != hlfake.KindOpportunity {
		http.Error(w, "type=contact or type=opportunity", http.StatusBadRequest)
		return
	}
	var loc, typ string
	var found bool
	d.f.Set(func(f *hlfake.Fake) {
		rec, ok := f.Records[kind][id]
		if !ok {
			return
		}
		found, loc = true, rec.Location
		switch r.PathValue("what") {
		case "assign":
			rec.AssignedTo = user
			typ = map[string]string{hlfake.KindContact: "ContactUpdate", hlfake.KindOpportunity: "OpportunityAssignedToUpdate"}[kind]
		case "follow":
			if !slices.Contains(rec.Followers, user) {
				rec.Followers = append(rec.Followers, user)
			}
		case "delete":
			delete(f.Records[kind], id)
			typ = map[string]string{hlfake.KindContact: "ContactDelete", hlfake.KindOpportunity: "OpportunityDelete"}[kind]
		}
	})
	if !found {
		http.Error(w, "no such record", http.StatusNotFound)
		return
	}
	if typ == "" {
		fmt.Fprintln(w, "changed; no webhook (HighLevel sends none for followers): the next reconcile brings it")
		return
	}
	fmt.Fprintln(w, d.send(typ, loc, id))
}

// send posts a signed webhook to the connector and says what it answered.
func (d *demo) send(typ, loc, id string) string {
	b := make([]byte, 8)
	rand.Read(b)
	body, _ := json.Marshal(map[string]any{"type": typ, "locationId": loc, "id": id, "webhookId": hex.EncodeToString(b),
		"timestamp": time.Now().UTC().Format(time.RFC3339)})
	req, err := http.NewRequest(http.MethodPost, d.webhook, bytes.NewReader(body))
	if err != nil {
		return err.Error()
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-GHL-Signature", base64.StdEncoding.EncodeToString(ed25519.Sign(d.key, body)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "webhook: " + err.Error()
	}
	defer resp.Body.Close()
	reply, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return fmt.Sprintf("webhook %s: %d %s", typ, resp.StatusCode, bytes.TrimSpace(reply))
}
