// Package natstest runs a real NATS server with JetStream inside a test
// process (the nats-server module, listening on loopback), for the tests of
// the NATS replication source and of the crmauthz binary. Only tests import
// it, so the server is never linked into crmauthz itself. NATSTEST_LOG=1
// in the environment shows the server's log (on stderr), for debugging.
package natstest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
)

// Options configure Start. The zero value is a JetStream server without
// authentication on a free loopback port, storing in a temporary directory.
type Options struct {
	// StoreDir holds the JetStream files; default a new t.TempDir().
	StoreDir string
	// Port to listen on; 0 picks a free one.
	Port int
	// Token, or User and Password, require that authentication.
	Token          string
	User, Password string
	// TLS, when set, makes the server require TLS with these files; with
	// TLS.Verify the clients must present a certificate signed by TLS.CA.
	TLS *TLSFiles
	// Trust, when set, runs the server in operator (JWT) mode: only users
	// of Trust's account, with a credentials file, may connect.
	Trust *Trust
}

// Trust is an operator and one account with JetStream, for credentials
// files (decentralized JWT authentication).
type Trust struct {
	operator          *jwt.OperatorClaims
	accountPub        string
	accountJWT        string
	accountKP         nkeys.KeyPair
	systemPub, sysJWT string // the system account JetStream needs
}

// NewTrust makes an operator and an account signed by it.
func NewTrust(tb testing.TB) *Trust {
	tb.Helper()
	okp, err := nkeys.CreateOperator()
	if err != nil {
		tb.Fatal(err)
	}
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	oc.Name = "test-operator"
	ojwt, err := oc.Encode(okp)
	if err != nil {
		tb.Fatal(err)
	}
	operator, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		tb.Fatal(err)
	}
	akp, err := nkeys.CreateAccount()
	if err != nil {
		tb.Fatal(err)
	}
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Name = "crm"
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ajwt, err := ac.Encode(okp)
	if err != nil {
		tb.Fatal(err)
	}
	skp, err := nkeys.CreateAccount()
	if err != nil {
		tb.Fatal(err)
	}
	spub, _ := skp.PublicKey()
	sc := jwt.NewAccountClaims(spub)
	sc.Name = "SYS"
	sjwt, err := sc.Encode(okp)
	if err != nil {
		tb.Fatal(err)
	}
	return &Trust{operator: operator, accountPub: apub, accountJWT: ajwt, accountKP: akp, systemPub: spub, sysJWT: sjwt}
}

// CredsFile writes a credentials file of a new user of the account.
func (tr *Trust) CredsFile(tb testing.TB, name string) string {
	tb.Helper()
	ukp, err := nkeys.CreateUser()
	if err != nil {
		tb.Fatal(err)
	}
	upub, _ := ukp.PublicKey()
	uc := jwt.NewUserClaims(upub)
	uc.Name = name
	ujwt, err := uc.Encode(tr.accountKP)
	if err != nil {
		tb.Fatal(err)
	}
	seed, err := ukp.Seed()
	if err != nil {
		tb.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		tb.Fatal(err)
	}
	file := filepath.Join(tb.TempDir(), name+".creds")
	if err := os.WriteFile(file, creds, 0o600); err != nil {
		tb.Fatal(err)
	}
	return file
}

// Server is one running nats-server.
type Server struct {
	tb   testing.TB
	opts Options
	ns   *server.Server
}

// Start runs a server and stops it when the test ends.
func Start(tb testing.TB, o Options) *Server {
	tb.Helper()
	if o.StoreDir == "" {
		o.StoreDir = tb.TempDir()
	}
	s := &Server{tb: tb, opts: o}
	s.start()
	tb.Cleanup(s.Shutdown)
	return s
}

func (s *Server) start() {
	s.tb.Helper()
	port := s.opts.Port
	if port == 0 {
		port = -1 // a random free port
	}
	so := &server.Options{
		Host:               "127.0.0.1",
		Port:               port,
		JetStream:          true,
		StoreDir:           s.opts.StoreDir,
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  2 << 30,
		NoLog:              os.Getenv("NATSTEST_LOG") == "",
		NoSigs:             true,
		Authorization:      s.opts.Token,
		Username:           s.opts.User,
		Password:           s.opts.Password,
	}
	if tr := s.opts.Trust; tr != nil {
		res := &server.MemAccResolver{}
		for pub, j := range map[string]string{tr.accountPub: tr.accountJWT, tr.systemPub: tr.sysJWT} {
			if err := res.Store(pub, j); err != nil {
				s.tb.Fatal(err)
			}
		}
		so.TrustedOperators = []*jwt.OperatorClaims{tr.operator}
		so.AccountResolver = res
		so.SystemAccount = tr.systemPub
	}
	if f := s.opts.TLS; f != nil {
		cfg, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: f.ServerCert, KeyFile: f.ServerKey, CaFile: f.CA, Verify: f.Verify,
		})
		if err != nil {
			s.tb.Fatalf("natstest: TLS config: %v", err)
		}
		so.TLSConfig = cfg
		so.TLS = true
		so.TLSVerify = f.Verify
		so.TLSTimeout = 5
	}
	ns, err := server.NewServer(so)
	if err != nil {
		s.tb.Fatalf("natstest: %v", err)
	}
	if !so.NoLog {
		ns.ConfigureLogger()
	}
	ns.Start()
	if !ns.ReadyForConnections(20 * time.Second) {
		ns.Shutdown()
		s.tb.Fatal("natstest: the NATS server did not become ready in 20s")
	}
	s.ns = ns
	// Keep the port for Restart: clients reconnect to the same URL.
	_, p, _ := net.SplitHostPort(ns.Addr().String())
	s.opts.Port, _ = strconv.Atoi(p)
}

// URL is the nats:// URL clients connect to.
func (s *Server) URL() string {
	return "nats://127.0.0.1:" + strconv.Itoa(s.opts.Port)
}

// Shutdown stops the server (idempotent).
func (s *Server) Shutdown() {
	if s.ns == nil {
		return
	}
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	s.ns = nil
}

// Restart stops the server and starts it again on the same port with the
// same JetStream directory: streams and their messages survive.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Shutdown()
	s.start()
}

// TLSFiles are PEM files of a test CA, a server certificate for 127.0.0.1
// and a client certificate, all signed by the CA.
type TLSFiles struct {
	CA                    string
	ServerCert, ServerKey string
	ClientCert, ClientKey string
	// Verify makes the server require client certificates (mutual TLS).
	Verify bool
}

// NewTLSFiles writes a fresh CA and certificates into a temporary directory.
func NewTLSFiles(tb testing.TB) *TLSFiles {
	tb.Helper()
	dir := tb.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "crmauthz test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		tb.Fatal(err)
	}
	f := &TLSFiles{CA: filepath.Join(dir, "ca.pem")}
	writePEM(tb, f.CA, "CERTIFICATE", caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (certFile, keyFile string) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			DNSNames:     []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			tb.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(key)
		if err != nil {
			tb.Fatal(err)
		}
		certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		writePEM(tb, certFile, "CERTIFICATE", der)
		writePEM(tb, keyFile, "EC PRIVATE KEY", kder)
		return certFile, keyFile
	}
	f.ServerCert, f.ServerKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	f.ClientCert, f.ClientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return f
}

func writePEM(tb testing.TB, file, typ string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// JetStream connects a JetStream client to url (a Server's URL) until tb ends.
func JetStream(tb testing.TB, url string, opts ...nats.Option) jetstream.JetStream {
	tb.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	return js
}
