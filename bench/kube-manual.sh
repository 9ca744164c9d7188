#!/usr/bin/env bash
# The procedure a user scripts from the product's relay-certificate docs
# instead of relayctl, for the `managed` example in token mode: OpenSSL for
# the root, the intermediate (signing) CA, the management server's
# certificate and the identity token, then one `kubectl` per namespace and
# per Secret per cluster, one after the other, as a user's script would.
#
#   bench/kube-manual.sh create KUBECTL KUBECONFIG NAMESPACE CONTEXT...   first CONTEXT is mgmt
#   bench/kube-manual.sh get    KUBECTL KUBECONFIG NAMESPACE CONTEXT...   what a user runs to check
#
# create writes what relayctl writes (without the inventory and provenance
# labels, which the user's procedure does not have):
#   mgmt:      relay-root-tls-secret (ca.crt), relay-tls-signing-secret
#              (tls.crt, tls.key, ca.crt), relay-server-tls-secret (tls.crt =
#              leaf + intermediate, tls.key, ca.crt), relay-identity-token-secret (token)
#   workloads: relay-root-tls-secret (ca.crt), relay-identity-token-secret (token)
# Keys are P-256 like examples/clusters/managed. get lists the relay Secrets
# of every cluster with one `kubectl get secret` each.
set -euo pipefail
mode=${1:?usage: kube-manual.sh create|get KUBECTL KUBECONFIG NAMESPACE CONTEXT...}
kubectl=${2:?}
export KUBECONFIG=$(realpath "${3:?}")
ns=${4:?}
shift 4
contexts=("$@")
[[ ${#contexts[@]} -ge 1 ]] || { echo "kube-manual.sh: no contexts" >&2; exit 2; }
mgmt=${contexts[0]}
authority=gloo-mesh-mgmt-server.gloo-mesh

if [[ $mode == get ]]; then
    for c in "${contexts[@]}"; do
        "$kubectl" --context "$c" -n "$ns" get secret relay-root-tls-secret relay-identity-token-secret >/dev/null
    done
    exit 0
fi
[[ $mode == create ]] || { echo "kube-manual.sh: mode must be create or get" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
umask 077
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# Root CA (10 years).
key root.key
openssl req -x509 -new -key root.key -sha256 -days 3650 -subj "/CN=relay-root-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" -out root.crt
# Intermediate (signing) CA (5 years), signed by the root.
key int.key
openssl req -new -key int.key -subj "/CN=relay-intermediate-ca" -out int.csr
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' >int.ext
openssl x509 -req -in int.csr -CA root.crt -CAkey root.key -CAcreateserial -days 1825 -sha256 \
    -extfile int.ext -out int.crt 2>/dev/null
# Management server certificate (1 year), signed by the intermediate; chain = leaf + intermediate.
key server.key
openssl req -new -key server.key -subj "/CN=$authority" -out server.csr
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=DNS:%s,DNS:*.gloo-mesh\n' "$authority" >server.ext
openssl x509 -req -in server.csr -CA int.crt -CAkey int.key -CAcreateserial -days 365 -sha256 \
    -extfile server.ext -out server.leaf 2>/dev/null
cat server.leaf int.crt >server.crt
# Identity token.
token=$(openssl rand -hex 32)

k() { "$kubectl" --context "$1" -n "$ns" "${@:2}" >/dev/null; }

"$kubectl" --context "$mgmt" create namespace "$ns" >/dev/null
k "$mgmt" create secret generic relay-root-tls-secret --from-file=ca.crt=root.crt
k "$mgmt" create secret generic relay-tls-signing-secret --from-file=tls.crt=int.crt --from-file=tls.key=int.key --from-file=ca.crt=root.crt
k "$mgmt" create secret generic relay-server-tls-secret --from-file=tls.crt=server.crt --from-file=tls.key=server.key --from-file=ca.crt=root.crt
k "$mgmt" create secret generic relay-identity-token-secret --from-literal=token="$token"
for c in "${contexts[@]:1}"; do
    "$kubectl" --context "$c" create namespace "$ns" >/dev/null
    k "$c" create secret generic relay-root-tls-secret --from-file=ca.crt=root.crt
    k "$c" create secret generic relay-identity-token-secret --from-literal=token="$token"
done
