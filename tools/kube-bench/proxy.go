package main

// Proxies in front of kube-apiservers, for the latency and throttling
// benchmarks.
//
// L4 (default): a TCP proxy; TLS passes through untouched, so the client
// still verifies the apiserver and authenticates with its own certificate.
// --delay D delays every byte by D in each direction (D = 25ms gives a 50 ms
// round trip), and the first client bytes of a connection by one extra round
// trip, standing in for the TCP handshake that the local connect() to the
// proxy does not pay. Bandwidth is not limited.
//
// L7 (--l7, implied by --status-429-every): an HTTP reverse proxy. It
// terminates TLS with a certificate for 127.0.0.1/localhost signed by a CA
// it makes at start (the kubeconfig it writes trusts that CA instead of the
// apiserver's), and re-originates to the apiserver trusting the apiserver's
// CA and presenting the context's client certificate from the kubeconfig, so
// requests keep the context's identity. It counts requests (per context, by
// method, resource and status) and connections, and keeps a log of every
// request (time, method, URI, status, duration, client connection). With
// --status-429-every N it answers every Nth request of each context itself
// with 429 Too Many Requests, `Retry-After: S` and a Kubernetes Status body,
// and measures how long the client waited before sending the same request
// again. --delay D here delays each request and each response by D (one
// round trip per request; connection setup is not delayed).
//
// Forms:
//
//	proxy --listen 127.0.0.1:0 --upstream HOST:PORT [--delay D]            one L4 proxy; prints its address
//	proxy --kubeconfig F --out-kubeconfig OUT [--contexts a,b] [...]        one proxy per context of F,
//	      in one process; OUT reaches every context through its proxy. Prints "CONTEXT ADDR" lines,
//	      "stats ADDR" when --stats is given, then "ready".
//
// --stats ADDR serves plain HTTP: GET /stats (JSON counters per context),
// GET /log (JSON lines, one per request), POST /reset (zero both).

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

func runProxy(args []string) error {
	fs := flag.NewFlagSet("proxy", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "single form: address to listen on")
	upstream := fs.String("upstream", "", "single form: apiserver HOST:PORT")
	delay := fs.Duration("delay", 0, "latency added per direction (25ms = 50 ms round trip)")
	l7 := fs.Bool("l7", false, "terminate TLS and proxy HTTP (counting); needs --kubeconfig")
	every := fs.Int("status-429-every", 0, "L7: answer every Nth request with 429")
	retryAfter := fs.Int("retry-after", 1, "L7: Retry-After seconds of a 429")
	kubeconfig := fs.String("kubeconfig", "", "kubeconfig whose contexts to front (multi form), or to take the upstream CA and client certificate from (single --l7 form)")
	kubeContext := fs.String("context", "", "single --l7 form: the context whose credentials to use upstream")
	contextsFlag := fs.String("contexts", "", "multi form: contexts to front (default: all)")
	out := fs.String("out-kubeconfig", "", "multi form: write a kubeconfig reaching every context through its proxy")
	stats := fs.String("stats", "", "address of the plain-HTTP stats endpoint (L7)")
	caOut := fs.String("ca-out", "", "single --l7 form: write the proxy's CA certificate (PEM) here, for the client to trust")
	_ = fs.Parse(args)
	if *every > 0 {
		*l7 = true
	}
	var ca *proxyCA
	if *l7 {
		var err error
		if ca, err = newProxyCA(); err != nil {
			return err
		}
	}
	reg := &registry{byName: map[string]*l7Stats{}}

	if *out == "" { // single form
		if *upstream == "" {
			return errors.New("--upstream HOST:PORT is required (or --kubeconfig F --out-kubeconfig OUT)")
		}
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			return err
		}
		if *l7 {
			if *kubeconfig == "" || *kubeContext == "" {
				return errors.New("--l7 needs --kubeconfig F --context C for the upstream CA and credentials")
			}
			raw, err := clientcmd.LoadFromFile(*kubeconfig)
			if err != nil {
				return err
			}
			up, err := upstreamTLS(raw, *kubeContext)
			if err != nil {
				return err
			}
			st := reg.add(*kubeContext)
			go serveL7(ln, *upstream, up, ca, st, *delay, *every, *retryAfter)
			if *stats != "" {
				if err := serveStats(*stats, reg); err != nil {
					return err
				}
			}
			if *caOut != "" {
				if err := os.WriteFile(*caOut, ca.certPEM, 0o644); err != nil {
					return err
				}
			}
			fmt.Printf("listening %s\n", ln.Addr())
		} else {
			go serveL4(ln, *upstream, *delay)
			fmt.Printf("listening %s\n", ln.Addr())
		}
		fmt.Println("ready")
		waitForSignal()
		return nil
	}

	// Multi form.
	raw, err := clientcmd.LoadFromFile(*kubeconfig)
	if err != nil {
		return err
	}
	names := splitList(*contextsFlag)
	if len(names) == 0 {
		for n := range raw.Contexts {
			names = append(names, n)
		}
		sort.Strings(names)
	}
	rewritten := raw.DeepCopy()
	for _, name := range names {
		kctx, ok := raw.Contexts[name]
		if !ok {
			return fmt.Errorf("context %q is not in %s", name, *kubeconfig)
		}
		cluster, ok := raw.Clusters[kctx.Cluster]
		if !ok {
			return fmt.Errorf("context %q names cluster %q, which is not in %s", name, kctx.Cluster, *kubeconfig)
		}
		u, err := url.Parse(cluster.Server)
		if err != nil {
			return fmt.Errorf("context %q: server %q: %w", name, cluster.Server, err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		entry := cluster.DeepCopy()
		entry.Server = "https://" + ln.Addr().String()
		if *l7 {
			up, err := upstreamTLS(raw, name)
			if err != nil {
				return err
			}
			go serveL7(ln, u.Host, up, ca, reg.add(name), *delay, *every, *retryAfter)
			entry.CertificateAuthority = ""
			entry.CertificateAuthorityData = ca.certPEM
		} else {
			go serveL4(ln, u.Host, *delay)
		}
		clusterName := "kube-bench-proxy-" + name
		rewritten.Clusters[clusterName] = entry
		rewritten.Contexts[name].Cluster = clusterName
		fmt.Printf("%s %s\n", name, ln.Addr())
	}
	if err := clientcmd.WriteToFile(*rewritten, *out); err != nil {
		return err
	}
	if *stats != "" {
		if err := serveStats(*stats, reg); err != nil {
			return err
		}
	}
	fmt.Println("ready")
	waitForSignal()
	return nil
}

func waitForSignal() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	<-ch
}

// ---- L4 ----

func serveL4(ln net.Listener, upstream string, delay time.Duration) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func(client net.Conn) {
			accepted := time.Now()
			server, err := net.Dial("tcp", upstream)
			if err != nil {
				client.Close()
				return
			}
			var wg sync.WaitGroup
			wg.Add(2)
			// The client's first bytes go out one round trip after the
			// connect (the TCP handshake a real network would take).
			go func() { defer wg.Done(); delayedCopy(server, client, delay, accepted.Add(2*delay)) }()
			go func() { defer wg.Done(); delayedCopy(client, server, delay, time.Time{}) }()
			wg.Wait()
			client.Close()
			server.Close()
		}(c)
	}
}

// delayedCopy copies src to dst, each chunk delivered `delay` after it was
// read (and not before notBefore+delay), in order.
func delayedCopy(dst, src net.Conn, delay time.Duration, notBefore time.Time) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	ch := make(chan chunk, 256)
	go func() {
		defer close(ch)
		for {
			buf := make([]byte, 32<<10)
			n, err := src.Read(buf)
			if n > 0 {
				at := time.Now()
				if at.Before(notBefore) {
					at = notBefore
				}
				ch <- chunk{buf[:n], at.Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	failed := false
	for c := range ch {
		if failed {
			continue // drain so the reader ends
		}
		if w := time.Until(c.at); w > 0 {
			time.Sleep(w)
		}
		if _, err := dst.Write(c.b); err != nil {
			failed = true
			src.Close()
		}
	}
	if tc, ok := dst.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	} else {
		dst.Close()
	}
}

// ---- L7 ----

type proxyCA struct {
	certPEM []byte
	leaf    tls.Certificate
}

// newProxyCA makes a CA and a serving certificate for 127.0.0.1/localhost.
func newProxyCA() (*proxyCA, error) {
	caKey, caCert, err := makeCert(nil, nil, "kube-bench-proxy-ca", true, nil, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "kube-bench-proxy"},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	return &proxyCA{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw}),
		leaf:    tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
	}, nil
}

// upstreamTLS is the client side towards the apiserver of `context`: its CA
// and the context's client certificate.
func upstreamTLS(raw *clientcmdapi.Config, context string) (*tls.Config, error) {
	cfg, err := restConfig(raw, context)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	caData := cfg.TLSClientConfig.CAData
	if len(caData) == 0 && cfg.TLSClientConfig.CAFile != "" {
		if caData, err = os.ReadFile(cfg.TLSClientConfig.CAFile); err != nil {
			return nil, err
		}
	}
	if !pool.AppendCertsFromPEM(caData) {
		return nil, fmt.Errorf("context %q: no CA certificate in the kubeconfig", context)
	}
	out := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	certData, keyData := cfg.TLSClientConfig.CertData, cfg.TLSClientConfig.KeyData
	if len(certData) == 0 && cfg.TLSClientConfig.CertFile != "" {
		certData, _ = os.ReadFile(cfg.TLSClientConfig.CertFile)
		keyData, _ = os.ReadFile(cfg.TLSClientConfig.KeyFile)
	}
	if len(certData) > 0 {
		pair, err := tls.X509KeyPair(certData, keyData)
		if err != nil {
			return nil, fmt.Errorf("context %q: client certificate: %w", context, err)
		}
		out.Certificates = []tls.Certificate{pair}
	}
	if cfg.BearerToken != "" {
		return nil, fmt.Errorf("context %q: bearer tokens are not forwarded by this proxy; use client certificates", context)
	}
	return out, nil
}

// l7Stats is one context's counters and request log.
type l7Stats struct {
	mu        sync.Mutex
	name      string
	n         int            // requests since start (for --status-429-every)
	Requests  int            `json:"requests"`
	Conns     int            `json:"connections"`
	By        map[string]int `json:"by"`
	Throttled int            `json:"throttled"`
	// Milliseconds between a 429 and the same request sent again.
	RetryGapsMs []float64 `json:"retry_gaps_ms"`
	pending     map[string]time.Time
	log         []logLine
}

type logLine struct {
	T        float64 `json:"t_ms"` // since the last reset
	Context  string  `json:"context"`
	Method   string  `json:"method"`
	URI      string  `json:"uri"`
	Code     int     `json:"code"`
	DurMs    float64 `json:"dur_ms"`
	Conn     string  `json:"conn"`
	Proto    string  `json:"proto"`
	Throttle bool    `json:"throttled,omitempty"`
}

type registry struct {
	mu     sync.Mutex
	epoch  time.Time
	byName map[string]*l7Stats
	order  []string
}

func (r *registry) add(name string) *l7Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.epoch.IsZero() {
		r.epoch = time.Now()
	}
	s := &l7Stats{name: name, By: map[string]int{}, pending: map[string]time.Time{}}
	r.byName[name] = s
	r.order = append(r.order, name)
	return s
}

var reg0 *registry // the registry serveL7 logs against (one per process)

func serveL7(ln net.Listener, upstream string, up *tls.Config, ca *proxyCA, st *l7Stats, delay time.Duration, every, retryAfter int) {
	target := &url.URL{Scheme: "https", Host: upstream}
	transport := &http.Transport{
		TLSClientConfig:     up,
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 256,
		IdleConnTimeout:     90 * time.Second,
	}
	rp := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport:     transport,
		FlushInterval: -1,
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		began := time.Now()
		key := r.Method + " " + r.URL.RequestURI()
		st.mu.Lock()
		st.n++
		throttle := every > 0 && st.n%every == 0
		if t, ok := st.pending[key]; ok {
			st.RetryGapsMs = append(st.RetryGapsMs, float64(began.Sub(t).Microseconds())/1000)
			delete(st.pending, key)
		}
		st.mu.Unlock()
		rec := &statusRecorder{ResponseWriter: w, code: 200, delay: delay}
		if throttle {
			rec.Header().Set("Content-Type", "application/json")
			rec.Header().Set("Retry-After", strconv.Itoa(retryAfter))
			rec.WriteHeader(http.StatusTooManyRequests)
			body, _ := json.Marshal(map[string]any{
				"kind": "Status", "apiVersion": "v1", "metadata": map[string]any{},
				"status": "Failure", "message": "Too many requests, please try again later. (kube-bench proxy)",
				"reason": "TooManyRequests", "details": map[string]any{"retryAfterSeconds": retryAfter}, "code": 429,
			})
			_, _ = rec.Write(body)
		} else {
			if delay > 0 {
				time.Sleep(delay)
			}
			rp.ServeHTTP(rec, r)
		}
		done := time.Now()
		st.mu.Lock()
		st.Requests++
		st.By[r.Method+" "+resourceOf(r.URL.Path)+" "+strconv.Itoa(rec.code)]++
		if throttle {
			st.Throttled++
			st.pending[key] = done
		}
		if reg0 != nil {
			reg0.mu.Lock()
			epoch := reg0.epoch
			reg0.mu.Unlock()
			st.log = append(st.log, logLine{
				T: float64(began.Sub(epoch).Microseconds()) / 1000, Context: st.name, Method: r.Method,
				URI: r.URL.RequestURI(), Code: rec.code, DurMs: float64(done.Sub(began).Microseconds()) / 1000,
				Conn: r.RemoteAddr, Proto: r.Proto, Throttle: throttle,
			})
		}
		st.mu.Unlock()
	})
	srv := &http.Server{
		Handler:   handler,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{ca.leaf}},
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				st.mu.Lock()
				st.Conns++
				st.mu.Unlock()
			}
		},
		ErrorLog: nil,
	}
	_ = srv.ServeTLS(ln, "", "")
}

type statusRecorder struct {
	http.ResponseWriter
	code    int
	delay   time.Duration
	written bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.written {
		s.written = true
		s.code = code
		if s.delay > 0 {
			time.Sleep(s.delay)
		}
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if !s.written {
		s.WriteHeader(http.StatusOK)
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func serveStats(addr string, reg *registry) error {
	reg0 = reg
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Printf("stats %s\n", ln.Addr())
	mux := http.NewServeMux()
	mux.HandleFunc("/stats", func(w http.ResponseWriter, _ *http.Request) {
		reg.mu.Lock()
		order := append([]string(nil), reg.order...)
		reg.mu.Unlock()
		out := map[string]any{}
		for _, n := range order {
			s := reg.byName[n]
			s.mu.Lock()
			raw, _ := json.Marshal(s)
			s.mu.Unlock()
			out[n] = json.RawMessage(raw)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	mux.HandleFunc("/log", func(w http.ResponseWriter, _ *http.Request) {
		reg.mu.Lock()
		order := append([]string(nil), reg.order...)
		reg.mu.Unlock()
		var all []logLine
		for _, n := range order {
			s := reg.byName[n]
			s.mu.Lock()
			all = append(all, s.log...)
			s.mu.Unlock()
		}
		sort.Slice(all, func(i, j int) bool { return all[i].T < all[j].T })
		enc := json.NewEncoder(w)
		for _, l := range all {
			_ = enc.Encode(l)
		}
	})
	mux.HandleFunc("/reset", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST", http.StatusMethodNotAllowed)
			return
		}
		reg.mu.Lock()
		reg.epoch = time.Now()
		for _, s := range reg.byName {
			s.mu.Lock()
			s.n, s.Requests, s.Conns, s.Throttled = 0, 0, 0, 0
			s.By = map[string]int{}
			s.RetryGapsMs = nil
			s.pending = map[string]time.Time{}
			s.log = nil
			s.mu.Unlock()
		}
		reg.mu.Unlock()
		_, _ = io.WriteString(w, "ok\n")
	})
	go func() { _ = http.Serve(ln, mux) }()
	return nil
}
