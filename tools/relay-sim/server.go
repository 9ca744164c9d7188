package main

// The management server role: serves the relay over TLS with
// relay-server-tls-secret (hot-reloaded, as the product documents), verifies
// agents against that Secret's ca.crt, signs agent CSRs with
// relay-tls-signing-secret after checking the identity token, and accepts a
// relay connection only from a verified client certificate whose SAN names a
// (registered) cluster.

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"
)

type serverOpts struct {
	kubeconfig, context, namespace string
	listen, status, authority      string
	requireRegistration            bool
	generateCA                     bool
	clientLifetime                 time.Duration
	poll                           time.Duration
}

// serving is what one TLS handshake uses: certificate and client-CA pool are
// swapped together so no handshake sees a new certificate with an old pool.
type serving struct {
	cert        tls.Certificate
	clientCAs   *x509.CertPool
	fingerprint [32]byte
}

type server struct {
	opts serverOpts
	kube *Kube
	rec  *Recorder

	current atomic.Pointer[serving]

	mu          sync.Mutex
	lastLoadErr string // last reported load failure, to report each only once

	regMu    sync.Mutex
	regCache map[string]regEntry
}

type regEntry struct {
	ok  bool
	err error
	at  time.Time
}

// rejection is a refusal of the agent (403) rather than a server fault (500).
type rejection struct{ msg string }

func (r rejection) Error() string { return r.msg }

func reject(format string, args ...any) error { return rejection{fmt.Sprintf(format, args...)} }

func runServer(ctx context.Context, o serverOpts) error {
	kube, err := newKube(o.kubeconfig, o.context, o.namespace)
	if err != nil {
		return err
	}
	rec := newRecorder("server", os.Stdout)
	s := &server{opts: o, kube: kube, rec: rec, regCache: map[string]regEntry{}}

	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	sl, err := listenStatus(o.status)
	if err != nil {
		return err
	}
	// First line: the bound addresses, so callers can pass port 0.
	rec.Emit(Event{Event: evListening, OK: true, Addr: ln.Addr().String(), Status: addrOf(sl)})
	serveStatus(sl, rec)

	if o.generateCA {
		if err := s.generateCA(ctx); err != nil {
			rec.Fail(evError, "", err)
			return err
		}
	}
	s.reload(ctx)
	go s.watch(ctx)

	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/bootstrap", s.handleBootstrap)
	mux.HandleFunc("POST /v1/renew", s.handleRenew)
	mux.HandleFunc("GET /v1/connect", s.handleConnect)
	hs := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(os.Stderr, "http: ", log.LstdFlags),
	}
	tl := newHandshakeListener(ln, s.tlsConfig(), s.onHandshake)
	go func() {
		<-ctx.Done()
		_ = hs.Close()
	}()
	if err := hs.Serve(tl); err != nil && !errors.Is(err, http.ErrServerClosed) && ctx.Err() == nil {
		return err
	}
	return nil
}

// tlsConfig resolves the serving state per handshake, which is what makes the
// hot reload apply to every new connection without restarting the listener.
func (s *server) tlsConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cur := s.current.Load()
			if cur == nil {
				s.mu.Lock()
				why := s.lastLoadErr
				s.mu.Unlock()
				return nil, fmt.Errorf("no serving certificate loaded from %s: %s", s.kube.secretRef(serverSecret), why)
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{cur.cert}, // whole tls.crt chain: leaf, intermediate(s)
				ClientCAs:    cur.clientCAs,
				// Bootstrap connections carry no client certificate; the mTLS
				// endpoints insist on a verified one themselves.
				ClientAuth: tls.VerifyClientCertIfGiven,
			}, nil
		},
	}
}

// watch polls the server Secret. A poll (not a watch) keeps the code short and
// bounds the reload delay by the poll interval without reconnect logic.
func (s *server) watch(ctx context.Context) {
	t := time.NewTicker(s.opts.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.reload(ctx)
		}
	}
}

// reload installs the Secret's content when it changed. Bad or missing content
// is reported once and the previous certificate stays in service.
func (s *server) reload(ctx context.Context) {
	ref := s.kube.secretRef(serverSecret)
	data, found, err := s.kube.getSecret(ctx, serverSecret)
	if err != nil {
		s.loadFailed(err)
		return
	}
	if !found {
		if s.current.Load() != nil {
			s.loadFailed(fmt.Errorf("secret %s was deleted; keeping the previous certificate", ref))
		} else {
			s.loadFailed(fmt.Errorf("secret %s not found", ref))
		}
		return
	}
	h := sha256.New()
	for _, k := range []string{keyTLSCrt, keyTLSKey, keyCACrt} {
		h.Write(data[k])
		h.Write([]byte{0})
	}
	var fp [32]byte
	copy(fp[:], h.Sum(nil))
	if cur := s.current.Load(); cur != nil && cur.fingerprint == fp {
		s.clearLoadErr()
		return
	}
	cert, err := tls.X509KeyPair(data[keyTLSCrt], data[keyTLSKey])
	if err != nil {
		s.loadFailed(fmt.Errorf("%s tls.crt/tls.key: %w", ref, err))
		return
	}
	if _, err := parseCertsPEM(ref+" tls.crt", data[keyTLSCrt]); err != nil {
		s.loadFailed(err)
		return
	}
	pool, roots, err := rootPool(ref+" ca.crt", data[keyCACrt])
	if err != nil {
		s.loadFailed(err)
		return
	}
	first := s.current.Load() == nil
	s.current.Store(&serving{cert: cert, clientCAs: pool, fingerprint: fp})
	s.clearLoadErr()
	detail := fmt.Sprintf("tls.crt: %d certificates, leaf %s; ca.crt: %d roots", len(cert.Certificate), describe(cert.Leaf), roots)
	if first {
		detail = "initial load; " + detail
	}
	s.rec.Emit(Event{Event: evReload, OK: true, Detail: detail})
}

func (s *server) loadFailed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err.Error() == s.lastLoadErr {
		return
	}
	s.lastLoadErr = err.Error()
	s.rec.Fail(evReload, "", err)
}

func (s *server) clearLoadErr() {
	s.mu.Lock()
	s.lastLoadErr = ""
	s.mu.Unlock()
}

// onHandshake turns every server-side TLS handshake into an event, with Go's
// error text when verification of a client certificate failed.
func (s *server) onHandshake(c *tls.Conn, err error) {
	remote := c.RemoteAddr().String()
	if err != nil {
		cluster := ""
		var cve *tls.CertificateVerificationError
		if errors.As(err, &cve) && len(cve.UnverifiedCertificates) > 0 {
			cluster = certName(cve.UnverifiedCertificates[0])
		}
		s.rec.Emit(Event{Event: evHandshake, Cluster: cluster, OK: false, Error: err.Error(), Remote: remote})
		return
	}
	cs := c.ConnectionState()
	cluster, detail := "", "no client certificate"
	if len(cs.VerifiedChains) > 0 {
		cluster = certName(cs.PeerCertificates[0])
		detail = "client certificate verified"
	}
	s.rec.Emit(Event{Event: evHandshake, Cluster: cluster, OK: true, Remote: remote, Detail: detail + ", " + tls.VersionName(cs.Version)})
}

// certName is the best guess at whom a certificate names, for attribution only.
func certName(c *x509.Certificate) string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	return c.Subject.CommonName
}

// identity is the cluster a verified client certificate names. The product
// takes identity from the DNS SAN; CN = SAN is what relayctl writes, so a
// difference is reported. X-Cluster-Id models the agent's x-cluster-id
// header: when present it must agree with the SAN (our choice; unconfirmed).
func (s *server) identity(r *http.Request) (string, error) {
	if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
		return "", reject("no verified client certificate: this endpoint needs mTLS")
	}
	leaf := r.TLS.PeerCertificates[0]
	if len(leaf.DNSNames) != 1 {
		return "", reject("client certificate has %d DNS SANs %q, want exactly one naming the cluster", len(leaf.DNSNames), leaf.DNSNames)
	}
	san := leaf.DNSNames[0]
	if leaf.Subject.CommonName != san {
		return san, reject("client certificate CN %q does not equal its DNS SAN %q", leaf.Subject.CommonName, san)
	}
	if want := r.Header.Get("X-Cluster-Id"); want != "" && want != san {
		return san, reject("client certificate SAN %q does not name cluster %q", san, want)
	}
	return san, s.accept(r.Context(), san)
}

// accept checks that a cluster name may join: a DNS-1123 label and, with
// --require-registration, a KubernetesCluster of that name on mgmt.
func (s *server) accept(ctx context.Context, cluster string) error {
	if errs := validation.IsDNS1123Label(cluster); len(errs) > 0 {
		return reject("cluster name %q is not a DNS-1123 label: %s", cluster, strings.Join(errs, "; "))
	}
	if !s.opts.requireRegistration {
		return nil
	}
	ok, err := s.registered(ctx, cluster)
	if err != nil {
		return err
	}
	if !ok {
		return reject("unregistered cluster %q: no KubernetesCluster %s/%s on the management cluster", cluster, s.opts.namespace, cluster)
	}
	return nil
}

// registered reads the KubernetesCluster, cached for 100 ms so a fleet of
// agents at 200 ms intervals does not multiply apiserver reads.
func (s *server) registered(ctx context.Context, cluster string) (bool, error) {
	s.regMu.Lock()
	e, hit := s.regCache[cluster]
	s.regMu.Unlock()
	if hit && time.Since(e.at) < 100*time.Millisecond {
		return e.ok, e.err
	}
	ok, err := s.kube.clusterRegistered(ctx, cluster)
	s.regMu.Lock()
	s.regCache[cluster] = regEntry{ok: ok, err: err, at: time.Now()}
	s.regMu.Unlock()
	return ok, err
}

func (s *server) handleConnect(w http.ResponseWriter, r *http.Request) {
	cluster, err := s.identity(r)
	if err != nil {
		s.refuse(w, evConnect, cluster, err)
		return
	}
	s.rec.Emit(Event{Event: evConnect, Cluster: cluster, OK: true, Remote: r.RemoteAddr})
	writeJSON(w, http.StatusOK, map[string]string{"cluster": cluster})
}

// Wire types of the bootstrap and renewal endpoints.
type bootstrapRequest struct {
	Cluster string `json:"cluster"`
	Token   string `json:"token"`
	CSR     string `json:"csr"`
}

type renewRequest struct {
	CSR string `json:"csr"`
}

type certResponse struct {
	Cluster     string `json:"cluster"`
	Certificate string `json:"certificate"` // leaf, then the signing Secret's tls.crt
	CABundle    string `json:"caBundle"`    // the signing Secret's ca.crt
}

type errorResponse struct {
	Error string `json:"error"`
}

func (s *server) handleBootstrap(w http.ResponseWriter, r *http.Request) {
	var req bootstrapRequest
	if err := readJSON(r, &req); err != nil {
		s.refuse(w, evBootstrap, "", badRequest{err})
		return
	}
	if err := s.checkToken(r.Context(), req.Token); err != nil {
		s.refuse(w, evBootstrap, req.Cluster, err)
		return
	}
	if err := s.accept(r.Context(), req.Cluster); err != nil {
		s.refuse(w, evBootstrap, req.Cluster, err)
		return
	}
	s.issue(w, r, evBootstrap, req.Cluster, req.CSR)
}

func (s *server) handleRenew(w http.ResponseWriter, r *http.Request) {
	cluster, err := s.identity(r)
	if err != nil {
		s.refuse(w, evRenewal, cluster, err)
		return
	}
	var req renewRequest
	if err := readJSON(r, &req); err != nil {
		s.refuse(w, evRenewal, cluster, badRequest{err})
		return
	}
	s.issue(w, r, evRenewal, cluster, req.CSR)
}

// issue signs the CSR with the signing Secret as it is now (read per request,
// so a replaced intermediate signs from the next request on).
func (s *server) issue(w http.ResponseWriter, r *http.Request, kind, cluster, csrPEM string) {
	csr, err := parseCSR([]byte(csrPEM))
	if err != nil {
		s.refuse(w, kind, cluster, badRequest{err})
		return
	}
	data, found, err := s.kube.getSecret(r.Context(), signingSecret)
	if err == nil && !found {
		err = fmt.Errorf("secret %s not found: cannot sign client certificates", s.kube.secretRef(signingSecret))
	}
	if err != nil {
		s.refuse(w, kind, cluster, err)
		return
	}
	signer, err := loadSigner(data)
	if err != nil {
		s.refuse(w, kind, cluster, err)
		return
	}
	leaf, err := signer.signClient(csr, cluster, s.opts.clientLifetime)
	if err != nil {
		s.refuse(w, kind, cluster, err)
		return
	}
	chain := append(certPEM(leaf), signer.chainPEM...)
	s.rec.Emit(Event{Event: kind, Cluster: cluster, OK: true, Remote: r.RemoteAddr, Detail: describe(leaf)})
	writeJSON(w, http.StatusOK, certResponse{Cluster: cluster, Certificate: string(chain), CABundle: string(signer.caBundle)})
}

// checkToken compares in constant time. Hashing first makes the comparison
// independent of the lengths too.
func (s *server) checkToken(ctx context.Context, presented string) error {
	data, found, err := s.kube.getSecret(ctx, tokenSecret)
	if err != nil {
		return err
	}
	want := data[keyToken]
	if !found || len(want) == 0 {
		return fmt.Errorf("no token data found in secret %s with key %s", s.kube.secretRef(tokenSecret), keyToken)
	}
	if presented == "" {
		return reject("no identity token presented")
	}
	a, b := sha256.Sum256([]byte(presented)), sha256.Sum256(want)
	if subtle.ConstantTimeCompare(a[:], b[:]) != 1 {
		return reject("identity token mismatch: the token presented does not equal %s on the management cluster", s.kube.secretRef(tokenSecret))
	}
	return nil
}

type badRequest struct{ error }

// refuse answers a failed request and records it. Server-side faults (missing
// CRD, unreadable Secrets) are also an error event, so they stand out from
// refusals of a misconfigured agent.
func (s *server) refuse(w http.ResponseWriter, kind, cluster string, err error) {
	code := http.StatusInternalServerError
	var rj rejection
	var br badRequest
	switch {
	case errors.As(err, &rj):
		code = http.StatusForbidden
	case errors.As(err, &br):
		code = http.StatusBadRequest
	default:
		s.rec.Fail(evError, cluster, err)
	}
	s.rec.Emit(Event{Event: kind, Cluster: cluster, OK: false, Error: err.Error()})
	writeJSON(w, code, errorResponse{Error: err.Error()})
}

func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("request body: %w", err)
	}
	return nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// generateCA plays the product's Option 2: when mgmt has no root Secret,
// generate the hierarchy and the token and create the four mgmt Secrets,
// never overwriting one that exists.
func (s *server) generateCA(ctx context.Context) error {
	_, found, err := s.kube.getSecret(ctx, rootSecret)
	if err != nil {
		return err
	}
	if found {
		log.Printf("--generate-ca: %s exists; generating nothing", s.kube.secretRef(rootSecret))
		return nil
	}
	if err := s.kube.ensureNamespace(ctx); err != nil {
		return err
	}
	g, err := generateHierarchy(s.opts.authority)
	if err != nil {
		return err
	}
	secrets := []struct {
		name string
		data map[string][]byte
	}{
		{rootSecret, map[string][]byte{keyCACrt: g.rootPEM, keyTLSKey: g.rootKeyPEM}},
		{signingSecret, map[string][]byte{keyTLSCrt: g.signingPEM, keyTLSKey: g.signingKeyPEM, keyCACrt: g.rootPEM}},
		{serverSecret, map[string][]byte{keyTLSCrt: g.serverChainPEM, keyTLSKey: g.serverKey, keyCACrt: g.rootPEM}},
		{tokenSecret, map[string][]byte{keyToken: []byte(g.token)}},
	}
	for _, sec := range secrets {
		created, err := s.kube.createSecret(ctx, sec.name, sec.data)
		if err != nil {
			return err
		}
		verb := "created"
		if !created {
			verb = "exists, left alone"
		}
		log.Printf("--generate-ca: %s %s", s.kube.secretRef(sec.name), verb)
	}
	return nil
}

// handshakeListener performs the TLS handshake itself, one goroutine per
// connection, so every handshake (failed ones included) becomes an event with
// Go's error text; http.Server then gets an already handshaken *tls.Conn.
type handshakeListener struct {
	net.Listener
	cfg         *tls.Config
	onHandshake func(*tls.Conn, error)
	conns       chan net.Conn
	done        chan struct{}
	err         error
}

func newHandshakeListener(l net.Listener, cfg *tls.Config, on func(*tls.Conn, error)) *handshakeListener {
	h := &handshakeListener{Listener: l, cfg: cfg, onHandshake: on, conns: make(chan net.Conn), done: make(chan struct{})}
	go h.acceptLoop()
	return h
}

func (h *handshakeListener) acceptLoop() {
	for {
		c, err := h.Listener.Accept()
		if err != nil {
			h.err = err
			close(h.done)
			return
		}
		go h.handshake(c)
	}
}

func (h *handshakeListener) handshake(c net.Conn) {
	tc := tls.Server(c, h.cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err := tc.HandshakeContext(ctx)
	cancel()
	h.onHandshake(tc, err)
	if err != nil {
		_ = tc.Close()
		return
	}
	select {
	case h.conns <- tc:
	case <-h.done:
		_ = tc.Close()
	}
}

func (h *handshakeListener) Accept() (net.Conn, error) {
	select {
	case c := <-h.conns:
		return c, nil
	case <-h.done:
		return nil, h.err
	}
}
