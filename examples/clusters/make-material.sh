#!/usr/bin/env bash
# Creates the certificates and keys that the `custom` and `external` examples
# read, with the OpenSSL CLI, as a user's own PKI would. Nothing it writes is
# committed: material/ folders are ignored by Git.
#
#   examples/clusters/make-material.sh OUT_DIR [CLUSTER...]
#
# OUT_DIR gets root.{crt,key}, intermediate.{crt,key}, server.{crt,key} (the
# server leaf for gloo-mesh-mgmt-server.gloo-mesh, then the intermediate) and
# <cluster>.{crt,key} per cluster (default cluster-1 cluster-2; CN = SAN = the
# cluster name, then the intermediate). Keys are 0600.
set -euo pipefail
out=${1:?usage: make-material.sh OUT_DIR [CLUSTER...]}
shift
clusters=("$@")
[ ${#clusters[@]} -gt 0 ] || clusters=(cluster-1 cluster-2)
authority=gloo-mesh-mgmt-server.gloo-mesh

mkdir -p "$out"
cd "$out"
umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

key root.key
openssl req -x509 -new -key root.key -sha256 -days 3650 -subj "/O=example/CN=example-relay-root" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" -out root.crt

key intermediate.key
openssl req -new -key intermediate.key -subj "/O=example/CN=example-relay-intermediate" -out "$work/int.csr"
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign,digitalSignature\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' > "$work/int.ext"
openssl x509 -req -in "$work/int.csr" -CA root.crt -CAkey root.key -CAcreateserial -CAserial "$work/serial" \
  -days 1825 -sha256 -extfile "$work/int.ext" -out intermediate.crt 2>/dev/null

leaf() { # name cn san eku days
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$work/$1.csr"
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\nsubjectAltName=%s\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' "$4" "$3" > "$work/$1.ext"
  openssl x509 -req -in "$work/$1.csr" -CA intermediate.crt -CAkey intermediate.key -CAserial "$work/serial" -CAcreateserial \
    -days "$5" -sha256 -extfile "$work/$1.ext" -out "$work/$1.leaf" 2>/dev/null
  cat "$work/$1.leaf" intermediate.crt > "$1.crt"
}

leaf server "$authority" "DNS:$authority,DNS:*.gloo-mesh" "serverAuth,clientAuth" 365
for cluster in "${clusters[@]}"; do
  leaf "$cluster" "$cluster" "DNS:$cluster" "clientAuth" 365
done
chmod 600 ./*.key
chmod 644 ./*.crt
echo "wrote root, intermediate, server and ${clusters[*]} certificates to $out" >&2
