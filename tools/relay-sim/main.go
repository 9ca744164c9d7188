// relay-sim stands in for the closed-source relay of a Gloo-Mesh-style mesh:
// a management server and an agent that use exactly the Kubernetes Secrets
// relayctl writes, so end-to-end tests can prove that agents bootstrap and
// connect with them. See README.md for the flags, protocol and events.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"
)

const usage = `usage:
  relay-sim server --kubeconfig FILE [--context mgmt] [--namespace gloo-mesh] --listen ADDR
                   [--require-registration] [--client-cert-lifetime 8760h] [--status ADDR]
                   [--generate-ca] [--authority NAME] [--poll 100ms]
  relay-sim agent  --kubeconfig FILE --context CTX --cluster NAME --server ADDR
                   [--namespace gloo-mesh] [--authority gloo-mesh-mgmt-server.gloo-mesh]
                   [--interval 200ms] [--grace-ratio 0.1] [--reload connect|restart]
                   [--status ADDR] [--key ecdsa-p256]
Events are JSON lines on stdout; diagnostics go to stderr.
`

const defaultAuthority = "gloo-mesh-mgmt-server.gloo-mesh"

func main() {
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	log.SetPrefix("relay-sim: ")
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch os.Args[1] {
	case "server":
		err = serverMain(ctx, os.Args[2:])
	case "agent":
		err = agentMain(ctx, os.Args[2:])
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "unknown role %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		log.Printf("%s: %v", os.Args[1], err)
		os.Exit(1)
	}
}

func serverMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	var o serverOpts
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (required)")
	fs.StringVar(&o.context, "context", "mgmt", "kubeconfig context of the management cluster")
	fs.StringVar(&o.namespace, "namespace", "gloo-mesh", "namespace of the relay Secrets and KubernetesClusters")
	fs.StringVar(&o.listen, "listen", "127.0.0.1:0", "relay listen address (port 0: any free port, see the listening event)")
	fs.StringVar(&o.status, "status", "", "address for plain-HTTP GET /status (empty: off)")
	fs.StringVar(&o.authority, "authority", defaultAuthority, "server name of the certificate --generate-ca makes")
	fs.BoolVar(&o.requireRegistration, "require-registration", false, "accept only clusters with a KubernetesCluster (admin.gloo.solo.io/v2) of that name")
	fs.BoolVar(&o.generateCA, "generate-ca", false, "when mgmt has no relay-root-tls-secret, generate the product's Option 2 CA, server cert and token Secrets first")
	fs.DurationVar(&o.clientLifetime, "client-cert-lifetime", 8760*time.Hour, "lifetime of issued client certificates (the product's is 1 year), clamped to the signer's")
	fs.DurationVar(&o.poll, "poll", 100*time.Millisecond, "how often relay-server-tls-secret is re-read for hot reload")
	_ = fs.Parse(args)
	if o.kubeconfig == "" {
		return fmt.Errorf("--kubeconfig is required")
	}
	if o.poll <= 0 || o.poll > 200*time.Millisecond {
		return fmt.Errorf("--poll: want >0 and ≤200ms, got %v", o.poll)
	}
	if o.clientLifetime <= 0 {
		return fmt.Errorf("--client-cert-lifetime: want > 0, got %v", o.clientLifetime)
	}
	return runServer(ctx, o)
}

func agentMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ExitOnError)
	var o agentOpts
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file (required)")
	fs.StringVar(&o.context, "context", "", "kubeconfig context of this workload cluster (default: --cluster)")
	fs.StringVar(&o.cluster, "cluster", "", "cluster name: KubernetesCluster name and client certificate SAN (required)")
	fs.StringVar(&o.server, "server", "", "relay server address host:port (required)")
	fs.StringVar(&o.namespace, "namespace", "gloo-mesh", "namespace of the relay Secrets")
	fs.StringVar(&o.authority, "authority", defaultAuthority, "SNI and the name the server certificate must cover")
	fs.DurationVar(&o.interval, "interval", 200*time.Millisecond, "time between relay connections")
	fs.Float64Var(&o.graceRatio, "grace-ratio", 0.1, "renew when less than this fraction of the client certificate's lifetime is left")
	fs.StringVar(&o.reload, "reload", "connect", "connect: re-read the Secrets before every connection; restart: read them once")
	fs.StringVar(&o.status, "status", "", "address for plain-HTTP GET /status (empty: off)")
	fs.StringVar(&o.key, "key", "ecdsa-p256", "client key type: ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096, ed25519")
	_ = fs.Parse(args)
	if o.context == "" {
		o.context = o.cluster
	}
	switch {
	case o.kubeconfig == "":
		return fmt.Errorf("--kubeconfig is required")
	case o.cluster == "":
		return fmt.Errorf("--cluster is required")
	case o.server == "":
		return fmt.Errorf("--server is required")
	case o.interval <= 0:
		return fmt.Errorf("--interval: want > 0")
	}
	return runAgent(ctx, o)
}
