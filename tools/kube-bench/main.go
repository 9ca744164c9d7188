// Command kube-bench is the Kubernetes half of relayctl's benchmarks
// (bench/kube.sh, BENCHMARKS.md "Kubernetes path"). It is a yardstick and a
// test fixture, never part of relayctl:
//
//	kube-bench ceiling --kubeconfig F --contexts mgmt,cluster-1,... --namespace NS
//	                   --parallelism P --op create|list|update [--observe] [--payloads STATE]
//	    The minimal raw client-go client writing (create), listing (list) or
//	    repairing (update) exactly the Secrets relayctl writes for the
//	    `managed` example in token mode. One client per cluster, requests
//	    counted per cluster in a RoundTripper wrapper. See ceiling.go.
//
//	kube-bench mutate --kubeconfig F --contexts c1,c2 --namespace NS [--secret S --key K]
//	    Drift: overwrite one data key of one Secret on each named cluster.
//
//	kube-bench proxy --listen 127.0.0.1:0 --upstream HOST:PORT --delay 25ms
//	    An L4 (TCP) proxy adding latency per direction; TLS passes through.
//	kube-bench proxy --kubeconfig F --out-kubeconfig OUT [--contexts a,b] [--delay D]
//	                 [--l7] [--status-429-every N --retry-after S] [--stats ADDR]
//	    One proxy per context of F in one process, and a kubeconfig OUT that
//	    reaches every context through it. --l7 terminates TLS (with a CA of
//	    its own that OUT trusts), counts requests and can answer every Nth
//	    request with 429. See proxy.go.
package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "ceiling":
		err = runCeiling(os.Args[2:])
	case "mutate":
		err = runMutate(os.Args[2:])
	case "proxy":
		err = runProxy(os.Args[2:])
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "kube-bench: unknown subcommand %q\n", os.Args[1])
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "kube-bench %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  kube-bench ceiling --kubeconfig F --contexts mgmt,cluster-1,... --namespace NS --parallelism P --op create|list|update [--observe] [--payloads STATE_DIR] [--json FILE]
  kube-bench mutate  --kubeconfig F --contexts c1,c2,... --namespace NS [--secret relay-identity-token-secret] [--key token]
  kube-bench proxy   --listen 127.0.0.1:0 --upstream HOST:PORT --delay 25ms
  kube-bench proxy   --kubeconfig F --out-kubeconfig OUT [--contexts a,b] [--delay 25ms] [--l7] [--status-429-every N] [--retry-after 1] [--stats 127.0.0.1:0]
Run a subcommand with -h for its flags.
`)
	os.Exit(2)
}
