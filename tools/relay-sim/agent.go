package main

// The agent role: bootstraps a client certificate with the identity token when
// it has none, then opens a fresh mTLS relay connection every interval,
// renews before expiry, and re-bootstraps when its client Secret disappears.

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

type agentOpts struct {
	kubeconfig, context, namespace string
	cluster, server, authority     string
	status, reload, key            string
	interval                       time.Duration
	graceRatio                     float64
}

// creds is what the agent works with; in the restart profile it is read once.
type creds struct {
	roots     *x509.CertPool
	rootsFrom string // which Secret's ca.crt verifies the server
	token     string
	client    *tls.Certificate // nil: no client certificate, bootstrap

	// fingerprints of what was read, to report changes as reload events
	rootsFP, tokenFP, clientFP [32]byte
}

type agent struct {
	opts   agentOpts
	kube   *Kube
	rec    *Recorder
	cur    *creds
	loaded bool // restart profile: set once a usable set was read
}

func runAgent(ctx context.Context, o agentOpts) error {
	if o.reload != "connect" && o.reload != "restart" {
		return fmt.Errorf("--reload: want connect or restart, got %q", o.reload)
	}
	if o.graceRatio <= 0 || o.graceRatio >= 1 {
		return fmt.Errorf("--grace-ratio: want a number between 0 and 1, got %v", o.graceRatio)
	}
	if _, err := generateKey(o.key); err != nil {
		return fmt.Errorf("--key: %w", err)
	}
	kube, err := newKube(o.kubeconfig, o.context, o.namespace)
	if err != nil {
		return err
	}
	rec := newRecorder("agent", os.Stdout)
	sl, err := listenStatus(o.status)
	if err != nil {
		return err
	}
	rec.Emit(Event{Event: evListening, Cluster: o.cluster, OK: true, Status: addrOf(sl)})
	serveStatus(sl, rec)

	a := &agent{opts: o, kube: kube, rec: rec}
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for {
		a.tick(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// tick is one relay connection attempt, preceded by a bootstrap or renewal
// when needed.
func (a *agent) tick(ctx context.Context) {
	// connect profile: every tick sees what others changed. restart profile:
	// read until one usable set was found (a crash-looping pod does the same),
	// then never again.
	if a.opts.reload == "connect" || !a.loaded {
		c, err := a.read(ctx)
		if err != nil {
			a.rec.Fail(evError, a.opts.cluster, err)
			return
		}
		a.noteChanges(c)
		a.cur, a.loaded = c, true
	}
	if a.cur.client == nil {
		if !a.bootstrap(ctx) {
			return
		}
	}
	a.maybeRenew(ctx)
	a.connect(ctx)
}

// read loads the three Secrets of the agent's own cluster.
func (a *agent) read(ctx context.Context) (*creds, error) {
	k := a.kube
	c := &creds{}

	clientData, clientFound, err := k.getSecret(ctx, clientSecret)
	if err != nil {
		return nil, err
	}
	if clientFound && len(clientData[keyTLSCrt]) > 0 && len(clientData[keyTLSKey]) > 0 {
		cert, err := tls.X509KeyPair(clientData[keyTLSCrt], clientData[keyTLSKey])
		if err != nil {
			return nil, fmt.Errorf("secret %s tls.crt/tls.key: %w", k.secretRef(clientSecret), err)
		}
		if _, err := parseCertsPEM(k.secretRef(clientSecret)+" tls.crt", clientData[keyTLSCrt]); err != nil {
			return nil, err
		}
		c.client = &cert
		c.clientFP = fingerprint(clientData[keyTLSCrt], clientData[keyTLSKey], clientData[keyCACrt])
	}

	rootData, rootFound, err := k.getSecret(ctx, rootSecret)
	if err != nil {
		return nil, err
	}
	var bundle []byte
	switch {
	case rootFound && len(rootData[keyCACrt]) > 0:
		bundle, c.rootsFrom = rootData[keyCACrt], k.secretRef(rootSecret)+" ca.crt"
	case c.client != nil && len(clientData[keyCACrt]) > 0:
		// Option 4 (client certificate supplied, no root Secret): the client
		// Secret's ca.crt verifies the server. Our choice; unconfirmed.
		bundle, c.rootsFrom = clientData[keyCACrt], k.secretRef(clientSecret)+" ca.crt"
	case !rootFound:
		return nil, fmt.Errorf("secret %s not found (its ca.crt verifies the management server)", k.secretRef(rootSecret))
	default:
		return nil, fmt.Errorf("no ca.crt in secret %s (it verifies the management server)", k.secretRef(rootSecret))
	}
	if c.roots, _, err = rootPool(c.rootsFrom, bundle); err != nil {
		return nil, err
	}
	c.rootsFP = fingerprint(bundle)

	tokenData, _, err := k.getSecret(ctx, tokenSecret)
	if err != nil {
		return nil, err
	}
	c.token = string(tokenData[keyToken])
	c.tokenFP = fingerprint(tokenData[keyToken])
	if c.client == nil && c.token == "" {
		// The product's fatal message (solo-io/gloo-mesh#1339).
		return nil, fmt.Errorf("no token data found in secret %s with key %s", k.secretRef(tokenSecret), keyToken)
	}
	return c, nil
}

func fingerprint(parts ...[]byte) [32]byte {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
		h.Write([]byte{0})
	}
	var fp [32]byte
	copy(fp[:], h.Sum(nil))
	return fp
}

// noteChanges reports a first read, and in the connect profile every change
// made by others, as a reload event.
func (a *agent) noteChanges(c *creds) {
	if a.cur == nil {
		a.rec.Emit(Event{Event: evReload, Cluster: a.opts.cluster, OK: true, Detail: "initial load; server verified with " + c.rootsFrom})
		return
	}
	var changed []string
	if c.rootsFP != a.cur.rootsFP {
		changed = append(changed, "root bundle ("+c.rootsFrom+")")
	}
	if c.tokenFP != a.cur.tokenFP {
		changed = append(changed, tokenSecret)
	}
	switch {
	case c.clientFP == a.cur.clientFP:
	case c.client == nil:
		changed = append(changed, clientSecret+" (deleted or without tls.crt/tls.key)")
	default:
		changed = append(changed, clientSecret)
	}
	if len(changed) > 0 {
		a.rec.Emit(Event{Event: evReload, Cluster: a.opts.cluster, OK: true, Detail: "changed: " + strings.Join(changed, ", ")})
	}
}

// bootstrap gets a first client certificate with the token. The key is made
// here and only its CSR leaves the cluster.
func (a *agent) bootstrap(ctx context.Context) bool {
	key, err := generateKey(a.opts.key)
	if err != nil {
		a.rec.Fail(evBootstrap, a.opts.cluster, err)
		return false
	}
	csr, err := makeCSR(key, a.opts.cluster)
	if err != nil {
		a.rec.Fail(evBootstrap, a.opts.cluster, err)
		return false
	}
	req := bootstrapRequest{Cluster: a.opts.cluster, Token: a.cur.token, CSR: string(csr)}
	cert, existed, err := a.obtain(ctx, "/v1/bootstrap", nil, req, key)
	if err != nil {
		a.rec.Fail(evBootstrap, a.opts.cluster, err)
		return false
	}
	a.cur.client = cert
	detail := describe(cert.Leaf) + "; wrote " + a.kube.secretRef(clientSecret)
	if existed {
		detail += " (updated)"
	}
	a.rec.Emit(Event{Event: evBootstrap, Cluster: a.opts.cluster, OK: true, Detail: detail})
	return true
}

// maybeRenew renews over mTLS once less than grace-ratio of the certificate's
// lifetime is left (clientTlsSecretRotationGracePeriodRatio in the product).
func (a *agent) maybeRenew(ctx context.Context) {
	leaf := a.cur.client.Leaf
	total := leaf.NotAfter.Sub(leaf.NotBefore)
	if time.Until(leaf.NotAfter) >= time.Duration(a.opts.graceRatio*float64(total)) {
		return
	}
	key, err := generateKey(a.opts.key)
	if err != nil {
		a.rec.Fail(evRenewal, a.opts.cluster, err)
		return
	}
	csr, err := makeCSR(key, a.opts.cluster)
	if err != nil {
		a.rec.Fail(evRenewal, a.opts.cluster, err)
		return
	}
	cert, existed, err := a.obtain(ctx, "/v1/renew", a.cur.client, renewRequest{CSR: string(csr)}, key)
	if err != nil {
		a.rec.Fail(evRenewal, a.opts.cluster, err)
		return
	}
	a.cur.client = cert
	detail := describe(cert.Leaf)
	if !existed {
		// Only the restart profile gets here: it noticed through its own write
		// that someone deleted the Secret; it still holds a valid identity, so
		// it recreates the Secret instead of bootstrapping again.
		detail += "; " + a.kube.secretRef(clientSecret) + " was gone, recreated it"
	}
	a.rec.Emit(Event{Event: evRenewal, Cluster: a.opts.cluster, OK: true, Detail: detail})
}

// obtain posts a CSR, checks the answer matches the key and stores
// relay-client-tls-secret (the agent owns it: create or update).
func (a *agent) obtain(ctx context.Context, path string, cert *tls.Certificate, body any, key crypto.Signer) (*tls.Certificate, bool, error) {
	code, resp, err := a.roundTrip(ctx, http.MethodPost, path, cert, body)
	if err != nil {
		return nil, false, err
	}
	if code != http.StatusOK {
		return nil, false, serverRefusal(code, resp)
	}
	var cr certResponse
	if err := json.Unmarshal(resp, &cr); err != nil {
		return nil, false, fmt.Errorf("%s: bad response: %w", path, err)
	}
	kp, err := keyPEM(key)
	if err != nil {
		return nil, false, err
	}
	issued, err := tls.X509KeyPair([]byte(cr.Certificate), kp)
	if err != nil {
		return nil, false, fmt.Errorf("%s: issued certificate: %w", path, err)
	}
	data := map[string][]byte{keyTLSCrt: []byte(cr.Certificate), keyTLSKey: kp, keyCACrt: []byte(cr.CABundle)}
	existed, err := a.kube.updateSecret(ctx, clientSecret, data, false)
	if err != nil {
		return nil, false, fmt.Errorf("certificate issued but not stored: %w", err)
	}
	if a.opts.reload == "connect" {
		// Our own write is not a change by others.
		a.cur.clientFP = fingerprint(data[keyTLSCrt], data[keyTLSKey], data[keyCACrt])
	}
	return &issued, existed, nil
}

// connect is the relay connection: a fresh TLS connection each time, so every
// tick is a real handshake with the current trust material.
func (a *agent) connect(ctx context.Context) {
	code, body, err := a.roundTrip(ctx, http.MethodGet, "/v1/connect", a.cur.client, nil)
	if err == nil && code != http.StatusOK {
		err = serverRefusal(code, body)
	}
	if err != nil {
		a.rec.Fail(evConnect, a.opts.cluster, err)
		return
	}
	a.rec.Emit(Event{Event: evConnect, Cluster: a.opts.cluster, OK: true})
}

func serverRefusal(code int, body []byte) error {
	var e errorResponse
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return fmt.Errorf("server refused (%d): %s", code, e.Error)
	}
	return fmt.Errorf("server refused (%d): %s", code, strings.TrimSpace(string(body)))
}

// roundTrip dials, handshakes and sends one HTTP/1.1 request on a connection
// used once. The handshake event is emitted here: with TLS 1.3 a server that
// rejects our certificate says so only after the client finished, as an alert
// on the first read, which also counts as a failed handshake.
func (a *agent) roundTrip(ctx context.Context, method, path string, cert *tls.Certificate, body any) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(ctx, "tcp", a.opts.server)
	if err != nil {
		return 0, nil, err
	}
	defer raw.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = raw.SetDeadline(dl)
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    a.cur.roots,
		ServerName: a.opts.authority, // SNI and the name the server cert must cover
	}
	// A stock Go client (tls.Config.Certificates) silently sends no
	// certificate when its chain names none of the CAs the server asks for,
	// and the server then only sees "no client certificate". We always send
	// ours (leaf and intermediates), so the server reports Go's real
	// verification error, and note what a stock client would have done.
	var note string
	if cert != nil {
		cfg.GetClientCertificate = func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if err := cri.SupportsCertificate(cert); err != nil {
				note = "; a stock Go client would not send this certificate: " + err.Error()
			}
			return cert, nil
		}
	}
	tc := tls.Client(raw, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		a.rec.Emit(Event{Event: evHandshake, Cluster: a.opts.cluster, Error: err.Error(), Detail: strings.TrimPrefix(note, "; ")})
		return 0, nil, err
	}

	var rd io.Reader = http.NoBody
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "https://"+a.opts.authority+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Close = true
	req.Header.Set("X-Cluster-Id", a.opts.cluster)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	err = req.Write(tc)
	var resp *http.Response
	if err == nil {
		resp, err = http.ReadResponse(bufio.NewReader(tc), req)
	}
	if err != nil {
		if isRemoteAlert(err) {
			a.rec.Emit(Event{Event: evHandshake, Cluster: a.opts.cluster, Error: err.Error(), Detail: strings.TrimPrefix(note, "; ")})
		}
		return 0, nil, err
	}
	defer resp.Body.Close()
	cs := tc.ConnectionState()
	a.rec.Emit(Event{Event: evHandshake, Cluster: a.opts.cluster, OK: true,
		Detail: fmt.Sprintf("%s, server %s%s", tls.VersionName(cs.Version), describe(cs.PeerCertificates[0]), note)})
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, err
	}
	return resp.StatusCode, b, nil
}

// isRemoteAlert: crypto/tls reports an alert from the peer as a net.OpError
// with Op "remote error" (e.g. "remote error: tls: unknown certificate authority").
func isRemoteAlert(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "remote error"
}
