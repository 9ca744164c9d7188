package main

// PKI helpers: PEM bundles, keys, CSRs, and the two things the management
// server signs: agent client certificates (bootstrap, renewal) and, with
// --generate-ca, the product's Option 2 self-signed hierarchy.

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// parseCertsPEM returns every CERTIFICATE block in order. Other block types
// are an error: a key or garbage in ca.crt/tls.crt is a bug worth reporting,
// where Go's AppendCertsFromPEM would skip it silently.
func parseCertsPEM(what string, data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %d is %q, want CERTIFICATE", what, len(certs)+1, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %w", what, len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no PEM certificate", what)
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, fmt.Errorf("%s: trailing data after the last PEM certificate", what)
	}
	return certs, nil
}

// rootPool loads every certificate of a ca.crt bundle: during a root rotation
// the bundle holds the old and the new root, and both must be trusted.
func rootPool(what string, data []byte) (*x509.CertPool, int, error) {
	certs, err := parseCertsPEM(what, data)
	if err != nil {
		return nil, 0, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, len(certs), nil
}

// parseKeyPEM accepts PKCS#8, PKCS#1 (RSA) and SEC 1 (EC) keys: openssl,
// cert-manager and rcgen each produce a different one.
func parseKeyPEM(what string, data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM private key", what)
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%s: PEM block is %q, want a private key", what, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	s, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: unsupported key type %T", what, key)
	}
	return s, nil
}

// generateKey makes the agent's key pair (it never leaves the agent).
func generateKey(kind string) (crypto.Signer, error) {
	switch kind {
	case "ecdsa-p256":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "ecdsa-p384":
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "rsa-2048":
		return rsa.GenerateKey(rand.Reader, 2048)
	case "rsa-3072":
		return rsa.GenerateKey(rand.Reader, 3072)
	case "rsa-4096":
		return rsa.GenerateKey(rand.Reader, 4096)
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	}
	return nil, fmt.Errorf("unknown key type %q (ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096, ed25519)", kind)
}

func keyPEM(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// makeCSR asks for the cluster's identity. The server ignores the requested
// subject and sets SAN = CN = cluster itself; the CSR proves key possession.
func makeCSR(key crypto.Signer, cluster string) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject:  pkix.Name{CommonName: cluster},
		DNSNames: []string{cluster},
	}, key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

func parseCSR(data []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("csr: want one PEM CERTIFICATE REQUEST")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("csr: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("csr: bad signature: %w", err)
	}
	return csr, nil
}

// Signer is the intermediate loaded from relay-tls-signing-secret.
type Signer struct {
	cert     *x509.Certificate
	chainPEM []byte // the Secret's tls.crt as is (may carry more than the signer)
	key      crypto.Signer
	caBundle []byte // the Secret's ca.crt
}

func loadSigner(data map[string][]byte) (*Signer, error) {
	what := signingSecret
	certs, err := parseCertsPEM(what+" tls.crt", data[keyTLSCrt])
	if err != nil {
		return nil, err
	}
	key, err := parseKeyPEM(what+" tls.key", data[keyTLSKey])
	if err != nil {
		return nil, err
	}
	c := certs[0]
	if !publicKeysEqual(c.PublicKey, key.Public()) {
		return nil, fmt.Errorf("%s: tls.key does not belong to the first certificate of tls.crt", what)
	}
	if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s: %q is not a CA certificate with keyCertSign", what, c.Subject.String())
	}
	if len(data[keyCACrt]) == 0 {
		return nil, fmt.Errorf("%s: no ca.crt", what)
	}
	if _, _, err := rootPool(what+" ca.crt", data[keyCACrt]); err != nil {
		return nil, err
	}
	return &Signer{cert: c, chainPEM: data[keyTLSCrt], key: key, caBundle: data[keyCACrt]}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	e, ok := a.(equaler)
	return ok && e.Equal(b)
}

// signClient issues an agent client certificate: SAN DNS = CN = cluster, EKU
// clientAuth, never outliving the signer (DESIGN.md §1).
func (s *Signer) signClient(csr *x509.CertificateRequest, cluster string, lifetime time.Duration) (*x509.Certificate, error) {
	now := time.Now()
	notAfter := now.Add(lifetime)
	if notAfter.After(s.cert.NotAfter) {
		notAfter = s.cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("%s: the signing certificate expired at %s", signingSecret, s.cert.NotAfter.Format(time.RFC3339))
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cluster},
		DNSNames:              []string{cluster},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          subjectKeyID(csr.PublicKey),
		AuthorityKeyId:        s.cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.cert, csr.PublicKey, s.key)
	if err != nil {
		return nil, fmt.Errorf("sign client certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

func randomSerial() (*big.Int, error) {
	for {
		n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
		if err != nil {
			return nil, err
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// subjectKeyID is RFC 5280's method 1: SHA-1 of the subjectPublicKey bits.
func subjectKeyID(pub crypto.PublicKey) []byte {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:]
}

// describe is a one-line summary for event details.
func describe(c *x509.Certificate) string {
	return fmt.Sprintf("subject=%q serial=%s notAfter=%s issuer=%q", c.Subject.CommonName, hex.EncodeToString(c.SerialNumber.Bytes()), c.NotAfter.UTC().Format(time.RFC3339), c.Issuer.CommonName)
}

// Generated is the Option 2 hierarchy --generate-ca writes.
type Generated struct {
	rootPEM, rootKeyPEM       []byte
	signingPEM, signingKeyPEM []byte
	serverChainPEM, serverKey []byte
	token                     string
}

// generateHierarchy plays the product's install-time generation: a root, an
// intermediate that signs agent CSRs, a server certificate for the authority
// and a 16-character alphanumeric token (the product's key type and validity
// are unconfirmed; ECDSA P-256 keeps start-up fast).
func generateHierarchy(authority string) (*Generated, error) {
	now := time.Now()
	mk := func(tmpl *x509.Certificate, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, crypto.Signer, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		serial, err := randomSerial()
		if err != nil {
			return nil, nil, err
		}
		tmpl.SerialNumber = serial
		tmpl.NotBefore = now.Add(-time.Minute)
		tmpl.BasicConstraintsValid = true
		tmpl.SubjectKeyId = subjectKeyID(key.Public())
		if parent == nil {
			parent, parentKey = tmpl, key
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
		if err != nil {
			return nil, nil, err
		}
		c, err := x509.ParseCertificate(der)
		return c, key, err
	}
	root, rootKey, err := mk(&x509.Certificate{
		Subject:  pkix.Name{CommonName: "relay-root-ca", Organization: []string{"relay-sim"}},
		NotAfter: now.AddDate(10, 0, 0),
		IsCA:     true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}, nil, nil)
	if err != nil {
		return nil, err
	}
	signing, signingKey, err := mk(&x509.Certificate{
		Subject:        pkix.Name{CommonName: "relay-signing-ca", Organization: []string{"relay-sim"}},
		NotAfter:       now.AddDate(5, 0, 0),
		IsCA:           true,
		MaxPathLen:     0,
		MaxPathLenZero: true,
		KeyUsage:       x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}, root, rootKey)
	if err != nil {
		return nil, err
	}
	server, serverKey, err := mk(&x509.Certificate{
		Subject:     pkix.Name{CommonName: authority},
		DNSNames:    []string{authority},
		NotAfter:    now.AddDate(1, 0, 0),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}, signing, signingKey)
	if err != nil {
		return nil, err
	}
	g := &Generated{rootPEM: certPEM(root), signingPEM: certPEM(signing)}
	g.serverChainPEM = append(certPEM(server), certPEM(signing)...)
	if g.rootKeyPEM, err = keyPEM(rootKey); err != nil {
		return nil, err
	}
	if g.signingKeyPEM, err = keyPEM(signingKey); err != nil {
		return nil, err
	}
	if g.serverKey, err = keyPEM(serverKey); err != nil {
		return nil, err
	}
	if g.token, err = randomToken(16); err != nil {
		return nil, err
	}
	return g, nil
}

// randomToken draws n characters from [A-Za-z0-9] without modulo bias.
func randomToken(n int) (string, error) {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	out := make([]byte, 0, n)
	buf := make([]byte, 1)
	for len(out) < n {
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		if int(buf[0]) < 256-256%len(alphabet) {
			out = append(out, alphabet[int(buf[0])%len(alphabet)])
		}
	}
	return string(out), nil
}
