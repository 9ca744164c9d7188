// Command scale-sim is a BENCHMARK-ONLY stand-in for many Kubernetes API
// servers at once. It is not an apiserver and is never used by relayctl's
// tests (correctness tests run on real kube-apiservers, kube-env); only
// bench/kube-sim.sh starts it, to give relayctl figures for fleets far larger
// than this machine could run as real apiservers (1,000 to 10,000 clusters).
//
// One HTTPS listener (HTTP/2 offered in ALPN, as a real apiserver does) serves
// N+1 virtual clusters, each under its own path prefix: the kubeconfig it
// writes points context `mgmt` at https://127.0.0.1:PORT/c/mgmt and context
// `cluster-i` at https://127.0.0.1:PORT/c/cluster-i, each with a bearer token
// of its own that the server checks. Each virtual cluster keeps its objects in
// memory, with resourceVersion and uid, and answers only the calls relayctl
// makes:
//
//	core/v1 Secrets      LIST (labelSelector k=v[,k=v], k, !k; metadata only
//	                     when Accept asks for PartialObjectMetadataList), GET, POST,
//	                     PATCH (apply-patch, merge-patch), PUT, DELETE with
//	                     resourceVersion/uid preconditions
//	core/v1 ConfigMaps   the same verbs
//	core/v1 Namespaces   POST (409 when it exists), GET
//	coordination.k8s.io/v1 Leases  the same verbs as Secrets
//	events.k8s.io/v1 Events        POST (stored only as a count)
//
// Errors are Kubernetes Status objects (404 NotFound, 409 AlreadyExists or
// Conflict, 401, 400, 405). Writes into a namespace that was not created
// answer 404, as an apiserver does.
//
// --latency D delays every request by D before it is handled and its answer
// by D after (D = 25ms: 50 ms round trip per request; concurrent requests on
// one HTTP/2 connection overlap, as on a real link), and every new TLS
// connection by 4×D (one round trip for the TCP handshake, one for TLS 1.3).
// Bandwidth, apiserver CPU, etcd, admission, watch and the real semantics of
// server-side apply (field ownership) are not modelled; see BENCHMARKS.md.
//
// --stats ADDR serves plain HTTP for the bench script:
//
//	GET  /stats   JSON: per cluster, requests by "METHOD resource status"
//	POST /reset   zero the counters
//	POST /mutate?clusters=a,b&namespace=NS&secret=S&key=K
//	              drift: overwrite one data key of one Secret on each named
//	              cluster (as another field manager would), bumping its
//	              resourceVersion; not counted, not delayed
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "HTTPS address")
	n := flag.Int("clusters", 10, "workload clusters (contexts cluster-1..N, plus mgmt)")
	latency := flag.Duration("latency", 0, "one-way delay per request (25ms = 50 ms RTT)")
	dir := flag.String("dir", "", "directory for kubeconfig and ca.crt (required)")
	stats := flag.String("stats", "127.0.0.1:0", "plain-HTTP stats address")
	split := flag.Int("split", 0, "also write DIR/kubeconfigs/mgmt and DIR/kubeconfigs/part-J, J = 0, 1, ..., each with at most this many workload contexts (0: no)")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "scale-sim: --dir is required")
		os.Exit(2)
	}
	if err := run(*listen, *n, *latency, *dir, *stats, *split); err != nil {
		fmt.Fprintln(os.Stderr, "scale-sim:", err)
		os.Exit(1)
	}
}

func run(listen string, n int, latency time.Duration, dir, statsAddr string, split int) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	cert, caPEM, err := selfSigned()
	if err != nil {
		return err
	}
	caPath := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(caPath, caPEM, 0o600); err != nil {
		return err
	}
	sim := &sim{clusters: map[string]*cluster{}, tokens: map[string]string{}, latency: latency}
	names := []string{"mgmt"}
	for i := 1; i <= n; i++ {
		names = append(names, "cluster-"+strconv.Itoa(i))
	}
	for _, name := range names {
		sim.clusters[name] = newCluster()
		sim.tokens[name] = token()
	}

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	tlsConf := &tls.Config{
		Certificates: []tls.Certificate{cert},
		NextProtos:   []string{"h2", "http/1.1"},
		MinVersion:   tls.VersionTLS12,
		// Called once per handshake, on the ClientHello: stands in for the
		// TCP and TLS round trips a new connection costs over a WAN.
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			atomic.AddInt64(&sim.handshakes, 1)
			if latency > 0 {
				time.Sleep(4 * latency)
			}
			return nil, nil
		},
	}
	srv := &http.Server{Handler: sim, TLSConfig: tlsConf, ErrorLog: nil}
	go func() { _ = srv.ServeTLS(ln, "", "") }()

	sl, err := net.Listen("tcp", statsAddr)
	if err != nil {
		return err
	}
	go func() { _ = http.Serve(sl, sim.statsHandler()) }()

	base := "https://" + ln.Addr().String()
	if err := writeKubeconfig(filepath.Join(dir, "kubeconfig"), base, caPath, names, sim.tokens); err != nil {
		return err
	}
	if split > 0 {
		// One file with ~10,000 contexts exceeds what kube's kubeconfig
		// parser accepts (see BENCHMARKS.md); smaller files each do.
		kd := filepath.Join(dir, "kubeconfigs")
		if err := os.MkdirAll(kd, 0o700); err != nil {
			return err
		}
		if err := writeKubeconfig(filepath.Join(kd, "mgmt"), base, caPath, names[:1], sim.tokens); err != nil {
			return err
		}
		for j, start := 0, 1; start < len(names); j, start = j+1, start+split {
			end := min(start+split, len(names))
			if err := writeKubeconfig(filepath.Join(kd, "part-"+strconv.Itoa(j)), base, caPath, names[start:end], sim.tokens); err != nil {
				return err
			}
		}
	}
	fmt.Printf("listen %s\nstats %s\nkubeconfig %s\nready\n", ln.Addr(), sl.Addr(), filepath.Join(dir, "kubeconfig"))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	return nil
}

// writeKubeconfig writes one cluster, user and context per virtual cluster,
// compactly (10,000 contexts must stay well under relayctl's 4 MiB limit on
// a kubeconfig): the CA is referenced by path, not inlined.
func writeKubeconfig(path, base, caPath string, names []string, tokens map[string]string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Config\ncurrent-context: %s\nclusters:\n", names[0])
	for _, n := range names {
		fmt.Fprintf(&b, "- name: %s\n  cluster:\n    server: %s/c/%s\n    certificate-authority: %s\n", n, base, n, caPath)
	}
	b.WriteString("users:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "- name: %s\n  user:\n    token: %s\n", n, tokens[n])
	}
	b.WriteString("contexts:\n")
	for _, n := range names {
		fmt.Fprintf(&b, "- name: %s\n  context:\n    cluster: %s\n    user: %s\n", n, n, n)
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

func token() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// selfSigned makes a CA (written to the kubeconfig's certificate-authority)
// and a serving certificate for 127.0.0.1/localhost signed by it (rustls
// refuses a CA certificate used as the server's own).
func selfSigned() (tls.Certificate, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "scale-sim CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "scale-sim"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(48 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	return tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}, caPEM, nil
}

// ---- state ----

type sim struct {
	clusters   map[string]*cluster // fixed after start
	tokens     map[string]string
	latency    time.Duration
	handshakes int64
	uidSeq     int64
}

type cluster struct {
	mu         sync.Mutex
	rv         int64
	namespaces map[string]bool
	objects    map[string]map[string]obj // resource -> "ns/name" -> object
	events     int64
	counts     map[string]int64 // "METHOD resource status"
}

type obj = map[string]any

func newCluster() *cluster {
	return &cluster{
		namespaces: map[string]bool{"default": true, "kube-system": true},
		objects:    map[string]map[string]obj{},
		counts:     map[string]int64{},
	}
}

// kinds the simulator knows: resource -> (apiVersion, kind, namespaced).
var kinds = map[string]struct {
	apiVersion, kind string
}{
	"secrets":    {"v1", "Secret"},
	"configmaps": {"v1", "ConfigMap"},
	"namespaces": {"v1", "Namespace"},
	"leases":     {"coordination.k8s.io/v1", "Lease"},
	"events":     {"events.k8s.io/v1", "Event"},
}

// ---- HTTP ----

type route struct {
	cluster, resource, namespace, name string
}

// parse splits /c/CLUSTER/api/v1/[namespaces/NS/]RESOURCE[/NAME] and
// /c/CLUSTER/apis/GROUP/VERSION/namespaces/NS/RESOURCE[/NAME].
func parse(path string) (route, bool) {
	p := strings.Split(strings.Trim(path, "/"), "/")
	if len(p) < 4 || p[0] != "c" {
		return route{}, false
	}
	r := route{cluster: p[1]}
	rest := p[2:]
	switch {
	case rest[0] == "api" && len(rest) >= 3 && rest[1] == "v1":
		rest = rest[2:]
	case rest[0] == "apis" && len(rest) >= 4:
		rest = rest[3:]
	default:
		return route{}, false
	}
	if len(rest) >= 3 && rest[0] == "namespaces" {
		r.namespace, r.resource = rest[1], rest[2]
		if len(rest) == 4 {
			r.name = rest[3]
		} else if len(rest) != 3 {
			return route{}, false
		}
	} else if rest[0] == "namespaces" && len(rest) <= 2 {
		r.resource = "namespaces"
		if len(rest) == 2 {
			r.name = rest[1]
		}
	} else {
		return route{}, false
	}
	if _, ok := kinds[r.resource]; !ok {
		return route{}, false
	}
	return r, true
}

func (s *sim) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if s.latency > 0 {
		time.Sleep(s.latency)
	}
	code, out := s.handle(req)
	if s.latency > 0 {
		time.Sleep(s.latency)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(out)
}

// handle answers one request, encoding the answer while the cluster is
// locked (answers share maps with the store).
func (s *sim) handle(req *http.Request) (int, []byte) {
	r, ok := parse(req.URL.Path)
	c := s.clusters[r.cluster]
	if !ok || c == nil {
		code, st := status(404, "NotFound", "the server could not find the requested resource ("+req.URL.Path+")", "", "")
		out, _ := json.Marshal(st)
		return code, out
	}
	body, err := io.ReadAll(io.LimitReader(req.Body, 8<<20))
	if err != nil {
		code, st := status(400, "BadRequest", err.Error(), "", "")
		out, _ := json.Marshal(st)
		return code, out
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var code int
	var out any
	if req.Header.Get("Authorization") != "Bearer "+s.tokens[r.cluster] {
		code, out = status(401, "Unauthorized", "Unauthorized", "", "")
	} else {
		code, out = s.serve(c, r, req, body)
	}
	key := req.Method + " " + r.resource
	if r.name == "" && req.Method == "GET" {
		key = "LIST " + r.resource
	}
	c.counts[key+" "+strconv.Itoa(code)]++
	encoded, _ := json.Marshal(out)
	return code, encoded
}

func (s *sim) serve(c *cluster, r route, req *http.Request, body []byte) (int, any) {
	meta := kinds[r.resource]
	store := c.objects[r.resource]
	if store == nil {
		store = map[string]obj{}
		c.objects[r.resource] = store
	}
	key := r.namespace + "/" + r.name
	nsMissing := r.resource != "namespaces" && !c.namespaces[r.namespace]
	switch {
	case req.Method == "GET" && r.name == "":
		sel := parseSelector(req.URL.Query().Get("labelSelector"))
		items := []any{}
		keys := make([]string, 0, len(store))
		for k := range store {
			if strings.HasPrefix(k, r.namespace+"/") {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		metadataOnly := strings.Contains(req.Header.Get("Accept"), "as=PartialObjectMetadataList")
		for _, k := range keys {
			if !sel.matches(store[k]) {
				continue
			}
			if metadataOnly {
				items = append(items, obj{"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
					"metadata": store[k]["metadata"]})
			} else {
				items = append(items, store[k])
			}
		}
		listMeta := obj{"resourceVersion": strconv.FormatInt(c.rv, 10)}
		if metadataOnly {
			return 200, obj{"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
				"metadata": listMeta, "items": items}
		}
		return 200, obj{"apiVersion": meta.apiVersion, "kind": meta.kind + "List",
			"metadata": listMeta, "items": items}
	case req.Method == "GET":
		if r.resource == "namespaces" {
			if !c.namespaces[r.name] {
				return notFound(r)
			}
			return 200, obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": r.name}}
		}
		o, ok := store[key]
		if !ok {
			return notFound(r)
		}
		return 200, o
	case req.Method == "POST" && r.name == "":
		var o obj
		if err := json.Unmarshal(body, &o); err != nil {
			return status(400, "BadRequest", "invalid JSON body: "+err.Error(), "", "")
		}
		md, _ := o["metadata"].(map[string]any)
		if md == nil {
			md = obj{}
			o["metadata"] = md
		}
		name, _ := md["name"].(string)
		if name == "" {
			if gen, _ := md["generateName"].(string); gen != "" {
				name = gen + token()[:5]
				md["name"] = name
			}
		}
		if name == "" {
			return status(422, "Invalid", "metadata.name: Required value", "", r.resource)
		}
		if r.resource == "namespaces" {
			if c.namespaces[name] {
				return status(409, "AlreadyExists", fmt.Sprintf("namespaces %q already exists", name), name, r.resource)
			}
			c.namespaces[name] = true
			c.rv++
			return 201, obj{"apiVersion": "v1", "kind": "Namespace", "metadata": obj{"name": name,
				"uid": s.uid(), "resourceVersion": strconv.FormatInt(c.rv, 10)}}
		}
		if nsMissing {
			return status(404, "NotFound", fmt.Sprintf("namespaces %q not found", r.namespace), r.namespace, "namespaces")
		}
		if r.resource == "events" {
			c.events++
			c.rv++
			s.stamp(c, o, meta.apiVersion, meta.kind, r.namespace, nil)
			return 201, o
		}
		k := r.namespace + "/" + name
		if _, ok := store[k]; ok {
			return status(409, "AlreadyExists", fmt.Sprintf("%s %q already exists", r.resource, name), name, r.resource)
		}
		s.stamp(c, o, meta.apiVersion, meta.kind, r.namespace, nil)
		store[k] = o
		return 201, o
	case req.Method == "PUT" && r.name != "":
		var o obj
		if err := json.Unmarshal(body, &o); err != nil {
			return status(400, "BadRequest", "invalid JSON body: "+err.Error(), "", "")
		}
		old, ok := store[key]
		if !ok {
			return notFound(r)
		}
		if code, st := preconditions(r, old, metaOf(o)); code != 0 {
			return code, st
		}
		s.stamp(c, o, meta.apiVersion, meta.kind, r.namespace, old)
		store[key] = o
		return 200, o
	case req.Method == "PATCH" && r.name != "":
		var patch obj
		if err := json.Unmarshal(body, &patch); err != nil {
			return status(400, "BadRequest", "the simulator takes JSON patch bodies only: "+err.Error(), "", "")
		}
		old, ok := store[key]
		ct := req.Header.Get("Content-Type")
		switch {
		case strings.HasPrefix(ct, "application/apply-patch"):
			if !ok {
				if nsMissing {
					return status(404, "NotFound", fmt.Sprintf("namespaces %q not found", r.namespace), r.namespace, "namespaces")
				}
				// Server-side apply creates what does not exist.
				o := clean(patch)
				metaOf(o)["name"] = r.name
				s.stamp(c, o, meta.apiVersion, meta.kind, r.namespace, nil)
				store[key] = o
				return 201, o
			}
			if code, st := preconditions(r, old, metaOf(patch)); code != 0 {
				return code, st
			}
			// Simplified apply: the applied fields win, fields the patch does
			// not name are kept (no field ownership is tracked).
			next := mergePatch(deepCopy(old), clean(patch))
			if reflect.DeepEqual(next, old) {
				return 200, old
			}
			s.stamp(c, next, meta.apiVersion, meta.kind, r.namespace, old)
			store[key] = next
			return 200, next
		case strings.HasPrefix(ct, "application/merge-patch+json"), strings.HasPrefix(ct, "application/strategic-merge-patch+json"):
			if !ok {
				return notFound(r)
			}
			if code, st := preconditions(r, old, metaOf(patch)); code != 0 {
				return code, st
			}
			next := mergePatch(deepCopy(old), clean(patch))
			if reflect.DeepEqual(next, old) {
				return 200, old
			}
			s.stamp(c, next, meta.apiVersion, meta.kind, r.namespace, old)
			store[key] = next
			return 200, next
		default:
			return status(415, "UnsupportedMediaType", "unsupported patch type "+ct, "", "")
		}
	case req.Method == "DELETE" && r.name != "":
		old, ok := store[key]
		if !ok {
			return notFound(r)
		}
		var opts struct {
			Preconditions struct {
				ResourceVersion *string `json:"resourceVersion"`
				UID             *string `json:"uid"`
			} `json:"preconditions"`
		}
		if len(body) > 0 {
			_ = json.Unmarshal(body, &opts)
		}
		md := metaOf(old)
		if p := opts.Preconditions.UID; p != nil && *p != md["uid"] {
			return conflict(r, "Precondition failed: UID in precondition: "+*p+", UID in object meta: "+fmt.Sprint(md["uid"]))
		}
		if p := opts.Preconditions.ResourceVersion; p != nil && *p != md["resourceVersion"] {
			return conflict(r, "Precondition failed: ResourceVersion in precondition: "+*p+", ResourceVersion in object meta: "+fmt.Sprint(md["resourceVersion"]))
		}
		delete(store, key)
		c.rv++
		return 200, obj{"apiVersion": "v1", "kind": "Status", "metadata": obj{}, "status": "Success",
			"details": obj{"name": r.name, "kind": r.resource, "uid": md["uid"]}}
	}
	return status(405, "MethodNotAllowed", req.Method+" is not supported here by the simulator", "", "")
}

// stamp sets apiVersion, kind, namespace, uid, resourceVersion and
// creationTimestamp (uid and creation time kept from old, if any).
func (s *sim) stamp(c *cluster, o obj, apiVersion, kind, ns string, old obj) {
	c.rv++
	o["apiVersion"], o["kind"] = apiVersion, kind
	md := metaOf(o)
	md["namespace"] = ns
	if old != nil {
		om := metaOf(old)
		md["uid"], md["creationTimestamp"] = om["uid"], om["creationTimestamp"]
	} else {
		md["uid"] = s.uid()
		md["creationTimestamp"] = time.Now().UTC().Format(time.RFC3339)
	}
	md["resourceVersion"] = strconv.FormatInt(c.rv, 10)
}

func (s *sim) uid() string {
	n := atomic.AddInt64(&s.uidSeq, 1)
	return fmt.Sprintf("5ca1e000-0000-4000-8000-%012x", n)
}

// preconditions: a resourceVersion or uid named in the request's metadata
// must match the stored object (409 Conflict otherwise).
func preconditions(r route, old, md obj) (int, any) {
	om := metaOf(old)
	if v, ok := md["uid"].(string); ok && v != "" && v != om["uid"] {
		return conflict(r, "Precondition failed: UID in precondition: "+v+", UID in object meta: "+fmt.Sprint(om["uid"]))
	}
	if v, ok := md["resourceVersion"].(string); ok && v != "" && v != om["resourceVersion"] {
		return conflict(r, "the object has been modified; please apply your changes to the latest version and try again")
	}
	return 0, nil
}

// clean drops what a client may send but the server owns.
func clean(o obj) obj {
	md := metaOf(o)
	delete(md, "resourceVersion")
	delete(md, "uid")
	delete(md, "managedFields")
	delete(md, "creationTimestamp")
	return o
}

func metaOf(o obj) obj {
	md, _ := o["metadata"].(map[string]any)
	if md == nil {
		md = obj{}
		o["metadata"] = md
	}
	return md
}

// mergePatch applies an RFC 7386 JSON merge patch.
func mergePatch(target, patch obj) obj {
	for k, v := range patch {
		if v == nil {
			delete(target, k)
			continue
		}
		if pm, ok := v.(map[string]any); ok {
			tm, _ := target[k].(map[string]any)
			if tm == nil {
				tm = obj{}
			}
			target[k] = mergePatch(tm, pm)
			continue
		}
		target[k] = v
	}
	return target
}

func deepCopy(o obj) obj {
	b, _ := json.Marshal(o)
	var out obj
	_ = json.Unmarshal(b, &out)
	return out
}

func status(code int, reason, message, name, kind string) (int, any) {
	st := obj{"apiVersion": "v1", "kind": "Status", "metadata": obj{}, "status": "Failure",
		"message": message, "reason": reason, "code": code}
	if name != "" || kind != "" {
		st["details"] = obj{"name": name, "kind": kind}
	}
	return code, st
}

func notFound(r route) (int, any) {
	return status(404, "NotFound", fmt.Sprintf("%s %q not found", r.resource, r.name), r.name, r.resource)
}

func conflict(r route, msg string) (int, any) {
	return status(409, "Conflict", fmt.Sprintf("Operation cannot be fulfilled on %s %q: %s", r.resource, r.name, msg), r.name, r.resource)
}

// ---- label selectors: equality (k=v, k==v, k!=v) and existence (k, !k) ----

type requirement struct {
	key, value string
	op         string // "=", "!=", "exists", "!exists"
}

type selector []requirement

func parseSelector(s string) selector {
	var out selector
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		switch {
		case part == "":
		case strings.Contains(part, "!="):
			kv := strings.SplitN(part, "!=", 2)
			out = append(out, requirement{strings.TrimSpace(kv[0]), strings.TrimSpace(kv[1]), "!="})
		case strings.Contains(part, "=="):
			kv := strings.SplitN(part, "==", 2)
			out = append(out, requirement{strings.TrimSpace(kv[0]), strings.TrimSpace(kv[1]), "="})
		case strings.Contains(part, "="):
			kv := strings.SplitN(part, "=", 2)
			out = append(out, requirement{strings.TrimSpace(kv[0]), strings.TrimSpace(kv[1]), "="})
		case strings.HasPrefix(part, "!"):
			out = append(out, requirement{key: part[1:], op: "!exists"})
		default:
			out = append(out, requirement{key: part, op: "exists"})
		}
	}
	return out
}

func (sel selector) matches(o obj) bool {
	labels, _ := metaOf(o)["labels"].(map[string]any)
	for _, r := range sel {
		v, has := labels[r.key].(string)
		switch r.op {
		case "=":
			if !has || v != r.value {
				return false
			}
		case "!=":
			if has && v == r.value {
				return false
			}
		case "exists":
			if !has {
				return false
			}
		case "!exists":
			if has {
				return false
			}
		}
	}
	return true
}

// ---- stats ----

func (s *sim) statsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/stats", func(w http.ResponseWriter, _ *http.Request) {
		type per struct {
			Requests int64            `json:"requests"`
			By       map[string]int64 `json:"by"`
			Objects  int              `json:"objects"`
			Events   int64            `json:"events"`
		}
		out := map[string]any{}
		clusters := map[string]per{}
		for name, c := range s.clusters {
			c.mu.Lock()
			p := per{By: map[string]int64{}, Events: c.events}
			for k, v := range c.counts {
				p.By[k] = v
				p.Requests += v
			}
			for _, st := range c.objects {
				p.Objects += len(st)
			}
			c.mu.Unlock()
			clusters[name] = p
		}
		out["clusters"] = clusters
		out["handshakes"] = atomic.LoadInt64(&s.handshakes)
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("/reset", func(w http.ResponseWriter, _ *http.Request) {
		for _, c := range s.clusters {
			c.mu.Lock()
			c.counts = map[string]int64{}
			c.mu.Unlock()
		}
		atomic.StoreInt64(&s.handshakes, 0)
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/mutate", func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		ns, secret, key := q.Get("namespace"), q.Get("secret"), q.Get("key")
		if secret == "" {
			secret = "relay-identity-token-secret"
		}
		if key == "" {
			key = "token"
		}
		changed := 0
		for _, name := range strings.Split(q.Get("clusters"), ",") {
			c := s.clusters[name]
			if c == nil {
				continue
			}
			c.mu.Lock()
			if o, ok := c.objects["secrets"][ns+"/"+secret]; ok {
				data, _ := o["data"].(map[string]any)
				if data == nil {
					data = obj{}
					o["data"] = data
				}
				data[key] = base64.StdEncoding.EncodeToString([]byte(fmt.Sprintf("drift-%d-%s", time.Now().UnixNano(), name)))
				c.rv++
				metaOf(o)["resourceVersion"] = strconv.FormatInt(c.rv, 10)
				changed++
			}
			c.mu.Unlock()
		}
		fmt.Fprintf(w, "mutated %d\n", changed)
	})
	return mux
}
