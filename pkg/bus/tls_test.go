package bus_test

import (
	"context"
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
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/gerritflow/gerritflow/pkg/bus"
	"github.com/gerritflow/gerritflow/pkg/config"
)

// pki is a certificate authority of the test, writing PEM files to dir.
type pki struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	file string // the CA certificate, PEM
}

func newPKI(t *testing.T, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &pki{t: t, dir: t.TempDir(), cert: cert, key: key}
	ca.file = ca.write("ca.pem", "CERTIFICATE", der)
	return ca
}

func (ca *pki) write(name, typ string, der []byte) string {
	ca.t.Helper()
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		ca.t.Fatal(err)
	}
	return path
}

// issue writes a certificate for subject (and, for a server, 127.0.0.1) and
// its key, and returns their paths.
func (ca *pki) issue(name string, subject pkix.Name, serverAuth bool) (certFile, keyFile string) {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if serverAuth {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	return ca.write(name+".pem", "CERTIFICATE", der), ca.write(name+"-key.pem", "PRIVATE KEY", keyDER)
}

// servicePermissions are a service user's permissions as deploy/nats has
// them, reduced to what useJetStream needs: replies only on its own inbox.
func servicePermissions(inbox string) *server.Permissions {
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: []string{"orders.>", "$JS.API.>", "$JS.ACK.>", "$JS.FC.>", "$KV.>"}},
		Subscribe: &server.SubjectPermission{Allow: []string{inbox + ".>"}},
	}
}

// worksAs connects with c, expects its inbox prefix to be inbox, does a
// service's JetStream work under name, and expects no permission violation.
func worksAs(t *testing.T, c config.NATS, inbox, name string, log *violationLog) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, err := bus.Connect(ctx, c, "test")
	if err != nil {
		t.Fatalf("Connect (%s) = %v", name, err)
	}
	if got := js.Conn().Opts.InboxPrefix; got != inbox {
		t.Errorf("inbox prefix %q; want %s from nats.inbox_prefix_env", got, inbox)
	}
	useJetStream(ctx, t, js, name)
	js.Conn().Close()
	time.Sleep(100 * time.Millisecond) // let asynchronous violations arrive
	if v := log.all(); len(v) > 0 {
		t.Errorf("permission violations:\n%s", strings.Join(v, "\n"))
	}
}

// startServer runs a JetStream nats-server with opts completed, and its
// permission violations recorded.
func startServer(t *testing.T, opts *server.Options) (*server.Server, *violationLog) {
	t.Helper()
	opts.Host, opts.Port, opts.NoLog, opts.NoSigs = "127.0.0.1", server.RANDOM_PORT, true, true
	opts.JetStream, opts.StoreDir = true, t.TempDir()
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	log := &violationLog{}
	ns.SetLoggerV2(log, false, false, false)
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns, log
}

// connectErr connects with c under a short deadline and returns the error
// (closing a connection that was made).
func connectErr(t *testing.T, c config.NATS) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	js, err := bus.Connect(ctx, c, "test")
	if err == nil {
		js.Conn().Close()
	}
	return err
}

// refusedReplies shows that js, logged in but with an inbox its user may not
// subscribe to, gets no JetStream reply.
func refusedReplies(t *testing.T, c config.NATS) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	js, err := bus.Connect(ctx, c, "test")
	if err != nil {
		t.Fatalf("Connect = %v; want a connection whose replies are refused", err)
	}
	defer js.Conn().Close()
	rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
	defer rcancel()
	if _, err := js.AccountInfo(rctx); err == nil {
		t.Error("a JetStream request got its reply on an inbox the user may not subscribe to")
	}
}

// TestConnectTLS: nats.ca_file makes bus.Connect trust a private CA, over
// tls:// and over a nats:// URL the server upgrades; without it the server's
// certificate is refused.
func TestConnectTLS(t *testing.T) {
	ca := newPKI(t, "gerritflow test CA")
	certFile, keyFile := ca.issue("server", pkix.Name{CommonName: "nats"}, true)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	ns, _ := startServer(t, &server.Options{TLS: true, TLSConfig: tc, TLSTimeout: 5})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	port := ":" + strings.TrimPrefix(ns.Addr().String(), "127.0.0.1:")
	for i, url := range []string{"tls://127.0.0.1" + port, "nats://127.0.0.1" + port} {
		js, err := bus.Connect(ctx, config.NATS{URL: url, CAFile: ca.file}, "test")
		if err != nil {
			t.Fatalf("Connect(%s, ca_file) = %v", url, err)
		}
		if !js.Conn().TLSRequired() {
			t.Errorf("%s: connection is not TLS", url)
		}
		if _, err := js.Conn().TLSConnectionState(); err != nil {
			t.Errorf("%s: no TLS state: %v", url, err)
		}
		useJetStream(ctx, t, js, "tls"+string(rune('a'+i)))
		js.Conn().Close()
	}

	if err := connectErr(t, config.NATS{URL: "tls://127.0.0.1" + port}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Connect without ca_file = %v; want the server's certificate refused", err)
	}
	other := newPKI(t, "another CA")
	if err := connectErr(t, config.NATS{URL: "tls://127.0.0.1" + port, CAFile: other.file}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("Connect trusting another CA = %v; want the server's certificate refused", err)
	}
	if err := connectErr(t, config.NATS{URL: "tls://127.0.0.1" + port, CAFile: filepath.Join(t.TempDir(), "missing.pem")}); err == nil || !strings.Contains(err.Error(), "missing.pem") {
		t.Errorf("Connect with a missing ca_file = %v; want an error naming the file", err)
	}
}

// TestConnectClientCertificate: with verify_and_map the client certificate
// is the identity (users named by the certificate's subject, no password),
// as docs/deploy.md describes. The service presents nats.cert_file and
// nats.key_file, takes its inbox prefix from nats.inbox_prefix_env (one
// shared file, one variable per pod), and does all its JetStream work within
// its permissions; without a certificate, with one of another CA, or without
// its inbox prefix it is refused.
func TestConnectClientCertificate(t *testing.T) {
	ca := newPKI(t, "gerritflow test CA")
	certFile, keyFile := ca.issue("server", pkix.Name{CommonName: "nats"}, true)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: certFile, KeyFile: keyFile, CaFile: ca.file, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	ns, log := startServer(t, &server.Options{
		TLS: true, TLSVerify: true, TLSMap: true, TLSConfig: tc, TLSTimeout: 5,
		Users: []*server.User{{Username: "CN=parser,O=gerritflow", Permissions: servicePermissions("_INBOX_parser")}},
	})
	url := "tls://" + ns.Addr().String()
	parserCert, parserKey := ca.issue("parser", pkix.Name{CommonName: "parser", Organization: []string{"gerritflow"}}, false)
	t.Setenv("GF_TEST_NATS_INBOX", "_INBOX_parser")
	parser := config.NATS{URL: url, CAFile: ca.file, CertFile: parserCert, KeyFile: parserKey, InboxPrefixEnv: "GF_TEST_NATS_INBOX"}

	worksAs(t, parser, "_INBOX_parser", "cert", log)

	t.Run("without its inbox prefix", func(t *testing.T) {
		c := parser
		c.InboxPrefixEnv = ""
		refusedReplies(t, c)
	})
	t.Run("without a certificate", func(t *testing.T) {
		if err := connectErr(t, config.NATS{URL: url, CAFile: ca.file, InboxPrefix: "_INBOX_parser"}); err == nil {
			t.Error("Connect without a client certificate succeeded")
		}
	})
	t.Run("a certificate of another CA", func(t *testing.T) {
		other := newPKI(t, "another CA")
		c, k := other.issue("parser", pkix.Name{CommonName: "parser", Organization: []string{"gerritflow"}}, false)
		if err := connectErr(t, config.NATS{URL: url, CAFile: ca.file, CertFile: c, KeyFile: k, InboxPrefix: "_INBOX_parser"}); err == nil {
			t.Error("Connect with a certificate of another CA succeeded")
		}
	})
	t.Run("a certificate of no user", func(t *testing.T) {
		c, k := ca.issue("voter", pkix.Name{CommonName: "voter", Organization: []string{"gerritflow"}}, false)
		err := connectErr(t, config.NATS{URL: url, CAFile: ca.file, CertFile: c, KeyFile: k, InboxPrefix: "_INBOX_voter"})
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("Connect as a subject with no user = %v; want an authorization error", err)
		}
	})
}

// TestConnectCredsFile: in operator (JWT) mode a service logs in with
// nats.creds, a .creds file holding its user JWT and NKey seed; the
// permissions live in the JWT. With nats.inbox_prefix_env naming its inbox
// it does all its JetStream work; a user JWT of an account the operator did
// not sign is refused, and a missing file is named.
func TestConnectCredsFile(t *testing.T) {
	operator, _ := nkeys.CreateOperator()
	opPub, _ := operator.PublicKey()
	oc := jwt.NewOperatorClaims(opPub)
	oc.Name = "gerritflow-test"
	opJWT, err := oc.Encode(operator)
	if err != nil {
		t.Fatal(err)
	}
	if oc, err = jwt.DecodeOperatorClaims(opJWT); err != nil {
		t.Fatal(err)
	}

	// account signs a new account with signer; the system account has no JetStream.
	account := func(signer nkeys.KeyPair, name string) (nkeys.KeyPair, string, string) {
		kp, _ := nkeys.CreateAccount()
		pub, _ := kp.PublicKey()
		ac := jwt.NewAccountClaims(pub)
		ac.Name = name
		if name != "SYS" {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		token, err := ac.Encode(signer)
		if err != nil {
			t.Fatal(err)
		}
		return kp, pub, token
	}
	accKP, accPub, accJWT := account(operator, "GERRITFLOW")
	_, sysPub, sysJWT := account(operator, "SYS")
	resolver := &server.MemAccResolver{}
	for pub, token := range map[string]string{accPub: accJWT, sysPub: sysJWT} {
		if err := resolver.Store(pub, token); err != nil {
			t.Fatal(err)
		}
	}
	ns, log := startServer(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{oc}, AccountResolver: resolver, SystemAccount: sysPub})

	creds := func(acc nkeys.KeyPair, name, inbox string) string {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		uc := jwt.NewUserClaims(pub)
		uc.Name = name
		perms := servicePermissions(inbox)
		uc.Pub.Allow.Add(perms.Publish.Allow...)
		uc.Sub.Allow.Add(perms.Subscribe.Allow...)
		token, err := uc.Encode(acc)
		if err != nil {
			t.Fatal(err)
		}
		data, err := jwt.FormatUserConfig(token, seed)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), name+".creds")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	t.Setenv("GF_TEST_NATS_INBOX", "_INBOX_trigger")
	trigger := config.NATS{URL: ns.ClientURL(), Creds: creds(accKP, "trigger", "_INBOX_trigger"), InboxPrefixEnv: "GF_TEST_NATS_INBOX"}

	worksAs(t, trigger, "_INBOX_trigger", "creds", log)

	t.Run("without its inbox prefix", func(t *testing.T) {
		c := trigger
		c.InboxPrefixEnv = ""
		refusedReplies(t, c)
	})
	t.Run("an account the operator did not sign", func(t *testing.T) {
		rogueOperator, _ := nkeys.CreateOperator()
		rogue, _, _ := account(rogueOperator, "GERRITFLOW")
		err := connectErr(t, config.NATS{URL: ns.ClientURL(), Creds: creds(rogue, "rogue", "_INBOX_rogue"), InboxPrefix: "_INBOX_rogue"})
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
			t.Errorf("Connect with a rogue account's user = %v; want an authorization error", err)
		}
	})
	t.Run("a missing file", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "missing.creds")
		if err := connectErr(t, config.NATS{URL: ns.ClientURL(), Creds: missing}); err == nil || !strings.Contains(err.Error(), "missing.creds") {
			t.Errorf("Connect with a missing .creds = %v; want an error naming the file", err)
		}
	})
}
