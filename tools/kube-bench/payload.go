package main

// The Secrets the ceiling writes: exactly those relayctl writes for the
// `managed` example in token mode. mgmt: root, signing, server and token
// Secrets plus the inventory; each workload: the root bundle (`ca.crt`) and
// the token. Read from a relayctl directory-backend state (--payloads: the
// very bytes, labels and annotations relayctl wrote), or generated with the
// same shapes (P-256 root and intermediate, a server leaf + chain, a 64-hex
// token) when no state is given.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

const (
	rootSecret    = "relay-root-tls-secret"
	signingSecret = "relay-tls-signing-secret"
	serverSecret  = "relay-server-tls-secret"
	tokenSecret   = "relay-identity-token-secret"

	labelInstance  = "relayctl.dev/instance"
	labelManagedBy = "app.kubernetes.io/managed-by"
)

func inventorySecret(instance string) string { return "relayctl-" + instance + "-inventory" }

// Payloads are the Secrets to write, namespace-free.
type Payloads struct {
	// Mgmt's relay Secrets in relayctl's write order (root, signing, server, token).
	Mgmt []*corev1.Secret
	// Mgmt's inventory, written last.
	Inventory *corev1.Secret
	// What every workload gets (root bundle, token), in write order.
	Workload []*corev1.Secret
}

// loadPayloads reads a relayctl directory-backend state: STATE/mgmt/<ns>/*.yaml
// and STATE/cluster-1/<ns>/*.yaml (every workload gets the same data in
// token mode).
func loadPayloads(state, stateNamespace, instance string) (*Payloads, error) {
	read := func(cluster, name string) (*corev1.Secret, error) {
		path := filepath.Join(state, cluster, stateNamespace, name+".yaml")
		raw, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var s corev1.Secret
		if err := yaml.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return clean(&s), nil
	}
	p := &Payloads{}
	for _, name := range []string{rootSecret, signingSecret, serverSecret, tokenSecret} {
		s, err := read("mgmt", name)
		if err != nil {
			return nil, err
		}
		p.Mgmt = append(p.Mgmt, s)
	}
	inv, err := read("mgmt", inventorySecret(instance))
	if err != nil {
		return nil, err
	}
	p.Inventory = inv
	for _, name := range []string{rootSecret, tokenSecret} {
		s, err := read("cluster-1", name)
		if err != nil {
			return nil, err
		}
		p.Workload = append(p.Workload, s)
	}
	return p, nil
}

// clean keeps what a create sends: name, labels, annotations, type, data.
func clean(s *corev1.Secret) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        s.Name,
			Labels:      s.Labels,
			Annotations: s.Annotations,
		},
		Type: s.Type,
		Data: s.Data,
	}
}

// generatePayloads makes Secrets of the same shape and size as relayctl's.
func generatePayloads(instance string, workloads []string) (*Payloads, error) {
	rootKey, rootCert, err := makeCert(nil, nil, "relay-root-ca", true, nil, 87600*time.Hour)
	if err != nil {
		return nil, err
	}
	intKey, intCert, err := makeCert(rootKey, rootCert, "relay-intermediate-ca", true, nil, 43800*time.Hour)
	if err != nil {
		return nil, err
	}
	srvKey, srvCert, err := makeCert(intKey, intCert, "gloo-mesh-mgmt-server.gloo-mesh", false,
		[]string{"gloo-mesh-mgmt-server.gloo-mesh", "*.gloo-mesh"}, 8760*time.Hour)
	if err != nil {
		return nil, err
	}
	certPEM := func(c *x509.Certificate) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	keyPEM := func(k *ecdsa.PrivateKey) []byte {
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	token := []byte(hex.EncodeToString(tok))
	root := certPEM(rootCert)
	labels := map[string]string{labelManagedBy: "relayctl", labelInstance: instance}
	// relayctl's provenance annotations are ~6 entries of ~60 bytes.
	annotations := map[string]string{
		"relayctl.dev/config-digest":    "sha256:" + hex.EncodeToString(make([]byte, 32)),
		"relayctl.dev/source":           "examples/clusters/managed",
		"relayctl.dev/applied-at":       time.Now().UTC().Format(time.RFC3339),
		"relayctl.dev/cert-sha256":      hex.EncodeToString(make([]byte, 32)),
		"relayctl.dev/cert-not-after":   time.Now().Add(8760 * time.Hour).UTC().Format(time.RFC3339),
		"relayctl.dev/relayctl-version": "0.1.0",
	}
	mk := func(name string, data map[string][]byte) *corev1.Secret {
		return &corev1.Secret{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations},
			Type:       corev1.SecretTypeOpaque,
			Data:       data,
		}
	}
	chain := append(certPEM(srvCert), certPEM(intCert)...)
	inv, _ := json.Marshal(map[string]any{"clusters": workloads})
	return &Payloads{
		Mgmt: []*corev1.Secret{
			mk(rootSecret, map[string][]byte{"ca.crt": root, "tls.crt": root, "tls.key": keyPEM(rootKey)}),
			mk(signingSecret, map[string][]byte{"ca.crt": root, "tls.crt": certPEM(intCert), "tls.key": keyPEM(intKey)}),
			mk(serverSecret, map[string][]byte{"ca.crt": root, "tls.crt": chain, "tls.key": keyPEM(srvKey)}),
			mk(tokenSecret, map[string][]byte{"token": token}),
		},
		Inventory: mk(inventorySecret(instance), map[string][]byte{"inventory.json": inv}),
		Workload: []*corev1.Secret{
			mk(rootSecret, map[string][]byte{"ca.crt": root}),
			mk(tokenSecret, map[string][]byte{"token": token}),
		},
	}, nil
}

// makeCert issues a P-256 certificate, self-signed when parent is nil.
func makeCert(parentKey *ecdsa.PrivateKey, parent *x509.Certificate, cn string, isCA bool, dns []string, validity time.Duration) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		BasicConstraintsValid: true,
		IsCA:                  isCA,
		DNSNames:              dns,
	}
	if isCA {
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	} else {
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	signer, issuer := key, tmpl
	if parent != nil {
		signer, issuer = parentKey, parent
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, issuer, &key.PublicKey, signer)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}
