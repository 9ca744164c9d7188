package main

// The ceiling: the least a raw client must do to write, list or repair
// relayctl's Secrets, with client-go (v0.36.3) and nothing else.
//
//   - One client (one rest.Config, one HTTP/2 connection) per cluster, no
//     client-side rate limit (QPS < 0), JSON like relayctl.
//   - create: mgmt first, one write at a time as relayctl does (POST the
//     namespace, 409 tolerated, then root, signing, server, token), then the
//     workloads at most --parallelism at a time (POST namespace, root
//     bundle, token), then mgmt's inventory. With --observe, first one
//     label-scoped LIST per cluster (what any tool that must not overwrite
//     needs), all clusters at most --parallelism at a time.
//   - list: one label-scoped LIST per cluster (what a converged plan needs),
//     all clusters (mgmt included, as relayctl observes them together) at
//     most --parallelism at a time.
//   - update: the drift repair: one LIST per cluster as in `list`, then for
//     every workload whose token differs from mgmt's, one server-side apply
//     of the token Secret carrying the observed resourceVersion (relayctl's
//     own write for an update), at most --parallelism at a time.
//   - none: build the clients and send nothing (start-up cost only).
//   - --lock: around the op, create a coordination.k8s.io Lease on mgmt
//     and delete it at the end (2 requests), the safety relayctl's apply
//     pays for (relayctl also reads the Lease first).
//
// Every request is counted per cluster (method, resource, status) in a
// RoundTripper wrapper, new connections through httptrace.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Counter counts one cluster's requests.
type Counter struct {
	mu    sync.Mutex
	Total int            `json:"requests"`
	Conns int            `json:"connections"`
	By    map[string]int `json:"by"`
}

func (c *Counter) add(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Total++
	if c.By == nil {
		c.By = map[string]int{}
	}
	c.By[key]++
}

func (c *Counter) conn() {
	c.mu.Lock()
	c.Conns++
	c.mu.Unlock()
}

type countingRT struct {
	next http.RoundTripper
	c    *Counter
}

func (t *countingRT) RoundTrip(r *http.Request) (*http.Response, error) {
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) {
		if !i.Reused {
			t.c.conn()
		}
	}}
	r = r.WithContext(httptrace.WithClientTrace(r.Context(), trace))
	resp, err := t.next.RoundTrip(r)
	code := "error"
	if err == nil {
		code = strconv.Itoa(resp.StatusCode)
	}
	t.c.add(r.Method + " " + resourceOf(r.URL.Path) + " " + code)
	return resp, err
}

// resourceOf names the resource of an API path: /api/v1/namespaces/NS/secrets/X
// is "secrets", /api/v1/namespaces/X is "namespaces", /apis/G/V/namespaces/NS/leases/X
// is "leases".
func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	start := 2 // api/v1
	if len(parts) > 0 && parts[0] == "apis" {
		start = 3 // apis/group/version
	}
	rest := parts
	if len(parts) >= start {
		rest = parts[start:]
	}
	if len(rest) >= 3 && rest[0] == "namespaces" {
		return rest[2]
	}
	if len(rest) >= 1 {
		return rest[0]
	}
	return path
}

// Cluster is one context's client and counter.
type Cluster struct {
	Name    string
	Client  kubernetes.Interface
	Counter *Counter
}

// clients builds one client per context from one kubeconfig.
func clients(kubeconfig string, contexts []string, userAgent string) ([]*Cluster, error) {
	raw, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		return nil, err
	}
	var out []*Cluster
	for _, name := range contexts {
		cfg, err := restConfig(raw, name)
		if err != nil {
			return nil, err
		}
		c := &Counter{}
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return &countingRT{next: rt, c: c} }
		cfg.QPS = -1 // no client-side rate limiter: a ceiling
		cfg.UserAgent = userAgent
		cfg.Timeout = 60 * time.Second
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return nil, fmt.Errorf("context %s: %w", name, err)
		}
		out = append(out, &Cluster{Name: name, Client: cs, Counter: c})
	}
	return out, nil
}

func restConfig(raw *clientcmdapi.Config, context string) (*rest.Config, error) {
	if _, ok := raw.Contexts[context]; !ok {
		return nil, fmt.Errorf("context %q is not in the kubeconfig", context)
	}
	return clientcmd.NewNonInteractiveClientConfig(*raw, context, &clientcmd.ConfigOverrides{}, nil).ClientConfig()
}

// pool runs f over items, at most p at a time, and returns the first error.
func pool[T any](items []T, p int, f func(T) error) error {
	if p < 1 {
		p = 1
	}
	sem := make(chan struct{}, p)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var first error
	for _, it := range items {
		wg.Add(1)
		sem <- struct{}{}
		go func(it T) {
			defer wg.Done()
			defer func() { <-sem }()
			if err := f(it); err != nil {
				mu.Lock()
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		}(it)
	}
	wg.Wait()
	return first
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func runCeiling(args []string) error {
	fs := flag.NewFlagSet("ceiling", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig with every context")
	contextsFlag := fs.String("contexts", "", "comma-separated contexts, mgmt first")
	namespace := fs.String("namespace", "gloo-mesh", "relay namespace")
	parallelism := fs.Int("parallelism", 16, "workload clusters at once (relayctl's --parallelism)")
	op := fs.String("op", "create", "create | list | update | none (build the clients, send nothing)")
	observe := fs.Bool("observe", false, "create: one label-scoped LIST per cluster first")
	payloads := fs.String("payloads", "", "relayctl directory-backend state to copy the Secrets from (default: generate)")
	payloadNS := fs.String("payloads-namespace", "gloo-mesh", "namespace of the Secrets in --payloads")
	instance := fs.String("instance", "prod", "relayctl instance (label relayctl.dev/instance)")
	jsonOut := fs.String("json", "", "also write the result as JSON to this file")
	quiet := fs.Bool("q", false, "print only the summary line")
	lock := fs.Bool("lock", false, "hold a coordination.k8s.io Lease on mgmt around the op (POST first, DELETE last), as relayctl's apply does")
	_ = fs.Parse(args)
	contexts := splitList(*contextsFlag)
	if len(contexts) < 1 {
		return fmt.Errorf("--contexts is required (mgmt first)")
	}
	var p *Payloads
	var err error
	if *op == "create" {
		if *payloads != "" {
			p, err = loadPayloads(*payloads, *payloadNS, *instance)
		} else {
			p, err = generatePayloads(*instance, contexts[1:])
		}
		if err != nil {
			return fmt.Errorf("payloads: %w", err)
		}
	}

	start := time.Now()
	cls, err := clients(*kubeconfig, contexts, "kube-bench-ceiling")
	if err != nil {
		return err
	}
	ctx := context.Background()
	ns := *namespace
	selector := labelInstance + "=" + *instance
	mgmt, workloads := cls[0], cls[1:]
	listed := make(map[string]*corev1.SecretList)
	var lmu sync.Mutex
	list := func(c *Cluster) error {
		l, err := c.Client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return fmt.Errorf("%s: list: %w", c.Name, err)
		}
		lmu.Lock()
		listed[c.Name] = l
		lmu.Unlock()
		return nil
	}
	create := func(c *Cluster, s *corev1.Secret) error {
		obj := s.DeepCopy()
		obj.Namespace = ns
		if _, err := c.Client.CoreV1().Secrets(ns).Create(ctx, obj, metav1.CreateOptions{FieldManager: "kube-bench"}); err != nil {
			return fmt.Errorf("%s: create %s: %w", c.Name, s.Name, err)
		}
		return nil
	}
	namespaceOf := func(c *Cluster) error {
		_, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{FieldManager: "kube-bench"})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("%s: namespace: %w", c.Name, err)
		}
		return nil
	}

	release := func() error { return nil }
	if *lock {
		lease := &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: "kube-bench-" + *instance},
			Spec: coordinationv1.LeaseSpec{
				HolderIdentity:       ptr("kube-bench"),
				LeaseDurationSeconds: ptr(int32(60)),
				AcquireTime:          &metav1.MicroTime{Time: time.Now()},
				RenewTime:            &metav1.MicroTime{Time: time.Now()},
			},
		}
		if *op == "create" {
			// The Lease lives in the relay namespace, which a first apply creates.
			if err := namespaceOf(mgmt); err != nil {
				return err
			}
		}
		if _, err := mgmt.Client.CoordinationV1().Leases(ns).Create(ctx, lease, metav1.CreateOptions{FieldManager: "kube-bench"}); err != nil {
			return fmt.Errorf("mgmt: lock: %w", err)
		}
		release = func() error {
			release = func() error { return nil }
			return mgmt.Client.CoordinationV1().Leases(ns).Delete(ctx, lease.Name, metav1.DeleteOptions{})
		}
		defer func() { _ = release() }() // on an error return
	}
	repaired := 0
	switch *op {
	case "create":
		if *observe {
			if err := pool(cls, *parallelism, list); err != nil {
				return err
			}
		}
		if !*lock { // with --lock, the namespace was created for the Lease
			if err := namespaceOf(mgmt); err != nil {
				return err
			}
		}
		for _, s := range p.Mgmt {
			if err := create(mgmt, s); err != nil {
				return err
			}
		}
		err = pool(workloads, *parallelism, func(c *Cluster) error {
			if err := namespaceOf(c); err != nil {
				return err
			}
			for _, s := range p.Workload {
				if err := create(c, s); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		if err := create(mgmt, p.Inventory); err != nil {
			return err
		}
	case "list":
		if err := pool(cls, *parallelism, list); err != nil {
			return err
		}
	case "update":
		if err := pool(cls, *parallelism, list); err != nil {
			return err
		}
		find := func(l *corev1.SecretList, name string) *corev1.Secret {
			for i := range l.Items {
				if l.Items[i].Name == name {
					return &l.Items[i]
				}
			}
			return nil
		}
		want := find(listed[mgmt.Name], tokenSecret)
		if want == nil {
			return fmt.Errorf("mgmt has no %s in %s: run create first", tokenSecret, ns)
		}
		var drifted []*Cluster
		for _, c := range workloads {
			if s := find(listed[c.Name], tokenSecret); s == nil || string(s.Data["token"]) != string(want.Data["token"]) {
				drifted = append(drifted, c)
			}
		}
		repaired = len(drifted)
		err = pool(drifted, *parallelism, func(c *Cluster) error {
			body := map[string]any{
				"apiVersion": "v1", "kind": "Secret",
				"metadata": map[string]any{"name": tokenSecret, "namespace": ns, "labels": want.Labels},
				"data":     map[string][]byte{"token": want.Data["token"]},
			}
			if s := find(listed[c.Name], tokenSecret); s != nil {
				body["metadata"].(map[string]any)["resourceVersion"] = s.ResourceVersion
				body["metadata"].(map[string]any)["uid"] = s.UID
			}
			raw, _ := json.Marshal(body)
			force := true
			_, err := c.Client.CoreV1().Secrets(ns).Patch(ctx, tokenSecret, types.ApplyPatchType, raw,
				metav1.PatchOptions{FieldManager: "kube-bench", Force: &force})
			if err != nil {
				return fmt.Errorf("%s: apply %s: %w", c.Name, tokenSecret, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	case "none":
		// Only the process start, client-go's initialisation and the
		// clients' construction: what the whole-process figure of the
		// other ops carries besides their requests.
	default:
		return fmt.Errorf("--op must be create, list, update or none, not %q", *op)
	}
	if err := release(); err != nil {
		return fmt.Errorf("mgmt: unlock: %w", err)
	}
	wall := time.Since(start)

	total, wsum := 0, 0
	for i, c := range cls {
		total += c.Counter.Total
		if i > 0 {
			wsum += c.Counter.Total
		}
	}
	avg := 0.0
	if len(workloads) > 0 {
		avg = float64(wsum) / float64(len(workloads))
	}
	if !*quiet {
		for _, c := range cls {
			keys := make([]string, 0, len(c.Counter.By))
			for k := range c.Counter.By {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			var parts []string
			for _, k := range keys {
				parts = append(parts, fmt.Sprintf("%s×%d", k, c.Counter.By[k]))
			}
			fmt.Printf("  %-12s %3d requests, %d connection(s): %s\n", c.Name, c.Counter.Total, c.Counter.Conns, strings.Join(parts, ", "))
		}
	}
	fmt.Printf("ceiling op=%s clusters=%d parallelism=%d observe=%v lock=%v repaired=%d wall_ms=%.1f requests=%d mgmt=%d workload_avg=%.2f\n",
		*op, len(cls), *parallelism, *observe || *op != "create", *lock, repaired, float64(wall.Microseconds())/1000, total, mgmt.Counter.Total, avg)
	if *jsonOut != "" {
		per := map[string]*Counter{}
		for _, c := range cls {
			per[c.Name] = c.Counter
		}
		raw, _ := json.MarshalIndent(map[string]any{
			"op": *op, "parallelism": *parallelism, "wall_ms": float64(wall.Microseconds()) / 1000,
			"requests": total, "clusters": per, "repaired": repaired,
		}, "", "  ")
		if err := os.WriteFile(*jsonOut, raw, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func runMutate(args []string) error {
	fs := flag.NewFlagSet("mutate", flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig")
	contextsFlag := fs.String("contexts", "", "comma-separated contexts to drift")
	namespace := fs.String("namespace", "gloo-mesh", "namespace")
	secret := fs.String("secret", tokenSecret, "Secret to change")
	key := fs.String("key", "token", "data key to overwrite with random bytes")
	_ = fs.Parse(args)
	cls, err := clients(*kubeconfig, splitList(*contextsFlag), "kube-bench-mutate")
	if err != nil {
		return err
	}
	return pool(cls, 16, func(c *Cluster) error {
		value := fmt.Sprintf("drift-%d-%s", time.Now().UnixNano(), c.Name)
		patch, _ := json.Marshal(map[string]any{"data": map[string][]byte{*key: []byte(value)}})
		_, err := c.Client.CoreV1().Secrets(*namespace).Patch(context.Background(), *secret, types.MergePatchType, patch,
			metav1.PatchOptions{FieldManager: "kube-bench-drift"})
		if err != nil {
			return fmt.Errorf("%s: %w", c.Name, err)
		}
		return nil
	})
}

func ptr[T any](v T) *T { return &v }
