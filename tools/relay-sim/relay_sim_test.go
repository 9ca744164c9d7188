package main

// Unit tests of the pure parts (PKI and event counting). The Kubernetes and
// TLS paths are exercised against real apiservers by the Rust e2e tests.

import (
	"bytes"
	"crypto/x509"
	"io"
	"strings"
	"testing"
	"time"
)

func TestSignClientFollowsTheProductProfile(t *testing.T) {
	g, err := generateHierarchy(defaultAuthority)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := loadSigner(map[string][]byte{keyTLSCrt: g.signingPEM, keyTLSKey: g.signingKeyPEM, keyCACrt: g.rootPEM})
	if err != nil {
		t.Fatal(err)
	}
	key, _ := generateKey("ecdsa-p256")
	csrPEM, _ := makeCSR(key, "someone-else") // the server ignores the requested names
	csr, err := parseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	// 100 years: must be clamped to the signer's notAfter.
	leaf, err := signer.signClient(csr, "cluster-1", 100*365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.Subject.CommonName != "cluster-1" || len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "cluster-1" {
		t.Errorf("identity: CN %q SANs %q", leaf.Subject.CommonName, leaf.DNSNames)
	}
	if leaf.IsCA || len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Errorf("profile: IsCA %v EKU %v", leaf.IsCA, leaf.ExtKeyUsage)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature|x509.KeyUsageKeyEncipherment {
		t.Errorf("key usage %v", leaf.KeyUsage)
	}
	if !leaf.NotAfter.Equal(signer.cert.NotAfter) {
		t.Errorf("notAfter %v not clamped to the signer's %v", leaf.NotAfter, signer.cert.NotAfter)
	}
	if !bytes.Equal(leaf.AuthorityKeyId, signer.cert.SubjectKeyId) || leaf.SerialNumber.BitLen() < 64 {
		t.Errorf("AKI %x serial %v", leaf.AuthorityKeyId, leaf.SerialNumber)
	}
	pool, n, err := rootPool("ca.crt", g.rootPEM)
	if err != nil || n != 1 {
		t.Fatal(n, err)
	}
	inter := x509.NewCertPool()
	inter.AddCert(signer.cert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("leaf does not verify: %v", err)
	}
}

func TestRootPoolLoadsEveryCertificateOfABundle(t *testing.T) {
	a, _ := generateHierarchy(defaultAuthority)
	b, _ := generateHierarchy(defaultAuthority)
	_, n, err := rootPool("ca.crt", append(append([]byte{}, a.rootPEM...), b.rootPEM...))
	if err != nil || n != 2 {
		t.Fatalf("got %d roots, %v", n, err)
	}
	if _, _, err := rootPool("ca.crt", append(append([]byte{}, a.rootPEM...), a.signingKeyPEM...)); err == nil || !strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Errorf("a key in ca.crt should be an error, got %v", err)
	}
	if _, _, err := rootPool("ca.crt", nil); err == nil {
		t.Error("an empty ca.crt should be an error")
	}
}

func TestStatusSinceCountsOnlyLaterEvents(t *testing.T) {
	r := newRecorder("server", io.Discard)
	r.Emit(Event{Event: evHandshake, Cluster: "cluster-1", OK: false, Error: "x509: boom"})
	time.Sleep(2 * time.Millisecond)
	since := time.Now()
	time.Sleep(2 * time.Millisecond)
	r.Emit(Event{Event: evHandshake, Cluster: "cluster-1", OK: true})
	r.Emit(Event{Event: evConnect, Cluster: "cluster-1", OK: true})

	all := r.Report(time.Time{})
	if c := all.Clusters["cluster-1"]; c.HandshakesFailed != 1 || c.HandshakesOK != 1 || c.LastError != "x509: boom" {
		t.Errorf("lifetime counts: %+v", c)
	}
	later := r.Report(since)
	if c := later.Clusters["cluster-1"]; c.HandshakesFailed != 0 || c.HandshakesOK != 1 || c.ConnectsOK != 1 || c.LastOK == "" {
		t.Errorf("since counts: %+v", c)
	}
	if later.Total.HandshakesFailed != 0 || later.Truncated {
		t.Errorf("total %+v truncated %v", later.Total, later.Truncated)
	}
}

func TestRandomTokenIsAlphanumeric(t *testing.T) {
	tok, err := randomToken(16)
	if err != nil || len(tok) != 16 {
		t.Fatal(tok, err)
	}
	for _, c := range tok {
		if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", c) {
			t.Fatalf("token %q has %q", tok, c)
		}
	}
}
