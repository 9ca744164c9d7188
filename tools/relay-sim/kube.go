package main

// Kubernetes access: one kubeconfig context per process, typed Secrets and a
// dynamic read of KubernetesCluster objects (whose CRD we do not vendor).

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// Secret names and data keys the product expects (gloo-relay-facts.md §2).
const (
	rootSecret    = "relay-root-tls-secret"
	signingSecret = "relay-tls-signing-secret"
	serverSecret  = "relay-server-tls-secret"
	tokenSecret   = "relay-identity-token-secret"
	clientSecret  = "relay-client-tls-secret"

	keyCACrt  = "ca.crt"
	keyTLSCrt = "tls.crt"
	keyTLSKey = "tls.key"
	keyToken  = "token"
)

// kubernetesClusters is the 2.x registration resource (meshctl creates one per
// workload cluster in the mgmt namespace).
var kubernetesClusters = schema.GroupVersionResource{Group: "admin.gloo.solo.io", Version: "v2", Resource: "kubernetesclusters"}

// Kube is one cluster, one namespace.
type Kube struct {
	ns      string
	context string
	core    kubernetes.Interface
	dyn     dynamic.Interface
}

func newKube(kubeconfig, kubeContext, namespace string) (*Kube, error) {
	rules := &clientcmd.ClientConfigLoadingRules{ExplicitPath: kubeconfig}
	overrides := &clientcmd.ConfigOverrides{CurrentContext: kubeContext}
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s context %q: %w", kubeconfig, kubeContext, err)
	}
	// client-go's default of 5 QPS would throttle a 100 ms poll plus per-request
	// reads; the apiservers are local test instances.
	cfg.QPS, cfg.Burst = 500, 1000
	cfg.Timeout = 10 * time.Second
	cfg.UserAgent = "relay-sim"
	core, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Kube{ns: namespace, context: kubeContext, core: core, dyn: dyn}, nil
}

// secretRef names a Secret the way the product's error messages do.
func (k *Kube) secretRef(name string) string { return k.ns + "/" + name }

// getSecret returns the Secret's data, or found=false when it does not exist.
func (k *Kube) getSecret(ctx context.Context, name string) (data map[string][]byte, found bool, err error) {
	s, err := k.core.CoreV1().Secrets(k.ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read secret %s on %s: %w", k.secretRef(name), k.context, err)
	}
	if s.Data == nil {
		s.Data = map[string][]byte{}
	}
	return s.Data, true, nil
}

// createSecret is create-only: an existing Secret is left alone (created=false),
// as the product's generator and meshctl do.
func (k *Kube) createSecret(ctx context.Context, name string, data map[string][]byte) (created bool, err error) {
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: k.ns},
		Type:       corev1.SecretTypeOpaque,
		Data:       data,
	}
	_, err = k.core.CoreV1().Secrets(k.ns).Create(ctx, s, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("create secret %s on %s: %w", k.secretRef(name), k.context, err)
	}
	return true, nil
}

// updateSecret replaces the data of an existing Secret. mustExist=false
// creates it when missing. It returns existed=false when the Secret was gone,
// so the agent can tell that someone deleted the Secret it owns.
func (k *Kube) updateSecret(ctx context.Context, name string, data map[string][]byte, mustExist bool) (existed bool, err error) {
	for attempt := 0; ; attempt++ {
		cur, err := k.core.CoreV1().Secrets(k.ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			if mustExist {
				return false, nil
			}
			created, err := k.createSecret(ctx, name, data)
			if err != nil {
				return false, err
			}
			if created {
				return false, nil
			}
			continue // created concurrently: update it
		}
		if err != nil {
			return false, fmt.Errorf("read secret %s on %s: %w", k.secretRef(name), k.context, err)
		}
		cur.Data = data
		cur.StringData = nil
		_, err = k.core.CoreV1().Secrets(k.ns).Update(ctx, cur, metav1.UpdateOptions{})
		if (apierrors.IsConflict(err) || apierrors.IsNotFound(err)) && attempt < 5 {
			continue
		}
		if err != nil {
			return true, fmt.Errorf("update secret %s on %s: %w", k.secretRef(name), k.context, err)
		}
		return true, nil
	}
}

// ensureNamespace creates the namespace when it is missing (only --generate-ca
// needs it: the Helm chart would have created the release namespace).
func (k *Kube) ensureNamespace(ctx context.Context) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: k.ns}}
	_, err := k.core.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s on %s: %w", k.ns, k.context, err)
	}
	return nil
}

// errNoCRD names the missing CRD, so a test log says what to install.
var errNoCRD = fmt.Errorf("CRD kubernetesclusters.admin.gloo.solo.io (version v2) is not installed on the management cluster")

// clusterRegistered reports whether a KubernetesCluster of that name exists in
// the namespace. A 404 for the object carries the object's name in its
// details; a 404 for an unknown resource type does not, which is how a missing
// CRD is told apart from a missing object.
func (k *Kube) clusterRegistered(ctx context.Context, name string) (bool, error) {
	_, err := k.dyn.Resource(kubernetesClusters).Namespace(k.ns).Get(ctx, name, metav1.GetOptions{})
	if err == nil {
		return true, nil
	}
	if apierrors.IsNotFound(err) {
		var st apierrors.APIStatus
		if s, ok := err.(apierrors.APIStatus); ok {
			st = s
		}
		if st != nil && st.Status().Details != nil && st.Status().Details.Name == name {
			return false, nil
		}
		return false, errNoCRD
	}
	return false, fmt.Errorf("read KubernetesCluster %s/%s on %s: %w", k.ns, name, k.context, err)
}
