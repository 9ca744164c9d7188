#!/usr/bin/env bash
# Builds the seed corpora of the fuzz targets under fuzz/corpus/<target>/ from
# the project's fixtures and examples, plus material made on the fly:
#
#   fuzz/seed.sh            (from anywhere; run `just fuzz-seed`)
#
# manifests        tests/fixtures/invalid/*.yaml, examples/clusters/*/*.yaml, each
#                  example folder as one input (files joined by 0x00), and inputs
#                  with megabyte-long lines (the rendered-line-bound check).
# material         examples/clusters/make-material.sh output (certificates, keys,
#                  certificate 0x00 key pairs), RSA / P-384 / Ed25519 / PKCS#1 /
#                  SEC1 keys made with openssl, and a few tokens.
# secret_manifest  the Secret manifests that `relayctl apply` writes for
#                  examples/clusters/managed into a temporary state dir.
# saved_plan       `relayctl plan --out` of examples/clusters/managed, before and
#                  after that apply.
#
# The generated corpora hold private keys made here for the occasion: they are
# ignored by Git (fuzz/.gitignore) and must not be committed. So are the PEM
# framing edge cases with private-key labels and junk bodies (no key in them):
# made here, so that the repository holds no private-key PEM block that a
# secret scanner would flag. Committed seeds
# live in fuzz/seeds/<target>/ (small, hand-made, no private key) and
# fuzz/regressions/<target>/ (minimised findings); the fuzz recipes read them
# too. The relayctl binary is built with `cargo run` in the root target dir;
# if that fails (or openssl is missing) the seeds it would give are skipped
# with a warning and the rest is still written.
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$fuzz")
corpus="$fuzz/corpus"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
warn() { echo "seed.sh: warning: $*" >&2; }

# Each seed is stored under the first 16 hex digits of its SHA-256, so running
# the script again adds nothing twice.
put() { # target file
  local sum
  sum=$(sha256sum "$2" | cut -c1-16)
  cp "$2" "$corpus/$1/seed-$sum"
}

mkdir -p "$corpus"/{manifests,material,secret_manifest,saved_plan}

# --- manifests ---------------------------------------------------------------
for f in "$root"/tests/fixtures/invalid/*.yaml "$root"/examples/clusters/*/*.yaml "$root"/examples/deploy/config/*.yaml; do
  [ -f "$f" ] && put manifests "$f"
done
# A whole example as one input: up to three files joined by 0x00; the third
# part holds the rest as one multi-document file.
for dir in "$root"/examples/clusters/*/; do
  files=("$dir"*.yaml)
  [ ${#files[@]} -gt 0 ] || continue
  out="$work/example-$(basename "$dir")"
  : > "$out"
  i=0
  for f in "${files[@]}"; do
    if [ $i -eq 1 ] || [ $i -eq 2 ]; then printf '\0' >> "$out"; elif [ $i -gt 2 ]; then printf -- '---\n' >> "$out"; fi
    cat "$f" >> "$out"
    i=$((i + 1))
  done
  put manifests "$out"
done
# Megabyte-long lines: a long unknown kind, a long name, a long line the
# diagnostics quote, and a long flow sequence.
long=$(head -c 1048576 /dev/zero | tr '\0' 'a')
printf 'apiVersion: relayctl.dev/v1alpha1\nkind: %s\nmetadata: { name: x }\n' "$long" > "$work/long-kind"
printf 'apiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata: { name: %s }\nspec: {}\n' "$long" > "$work/long-name"
printf 'apiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata: { name: x }\nspec: { unknownField: 1 } # %s\n' "$(head -c 1048576 /dev/zero | tr '\0' ' ' | sed 's/  /a /g')" > "$work/long-comment"
printf 'apiVersion: relayctl.dev/v1alpha1\nkind: RelayTrust\nmetadata: { name: x }\nspec: { server: { dnsNames: [%s] } }\n' "$(yes 'a.b' | head -n 200000 | paste -sd,)" > "$work/long-flow"
for f in "$work"/long-*; do put manifests "$f"; done
rm -f "$work"/long-*

# --- material ----------------------------------------------------------------
# The label is put together here so that this script holds no PEM header of a
# private key either.
pk="PRIVATE"" KEY"
frame() { printf -- '-----BEGIN %s-----\n%s\n-----END %s-----\n' "$1" "$2" "$1"; }
# PEM framing edge cases with junk DER bodies (an empty SEQUENCE, SEQUENCE {
# INTEGER 0 } and SEQUENCE { INTEGER 1 }): PKCS#8, encrypted, OpenSSH, PKCS#1
# and SEC 1 labels, two keys, and a certificate and a key split by 0x00.
frame "$pk" MAA= > "$work/pkcs8-empty-sequence"
frame "ENCRYPTED $pk" MAA= > "$work/encrypted-label"
frame "OPENSSH $pk" MAA= > "$work/other-label"
frame "RSA $pk" MAMCAQA= > "$work/pkcs1-junk"
frame "EC $pk" MAMCAQE= > "$work/sec1-junk"
{ frame "$pk" MAA=; frame "$pk" MAA=; } > "$work/two-keys"
{ frame CERTIFICATE MAA=; printf '\0'; frame "$pk" MAA=; } > "$work/cert-nul-key"
for f in pkcs8-empty-sequence encrypted-label other-label pkcs1-junk sec1-junk two-keys cert-nul-key; do
  put material "$work/$f"
done
if command -v openssl >/dev/null; then
  mat="$work/material"
  if bash "$root/examples/clusters/make-material.sh" "$mat" cluster-1 >/dev/null 2>&1; then
    for f in "$mat"/*.crt "$mat"/*.key; do put material "$f"; done
    for name in root intermediate server cluster-1; do
      { cat "$mat/$name.crt"; printf '\0'; cat "$mat/$name.key"; } > "$work/pair"
      put material "$work/pair"
    done
    # A leaf with the wrong key, and the root bundle as "roots" of the intermediate.
    { cat "$mat/server.crt"; printf '\0'; cat "$mat/cluster-1.key"; } > "$work/pair"; put material "$work/pair"
    { cat "$mat/intermediate.crt"; printf '\0'; cat "$mat/root.crt"; } > "$work/pair"; put material "$work/pair"
    # The DER of a certificate inside a PEM block of another label.
    sed -e "s/BEGIN CERTIFICATE/BEGIN $pk/" -e "s/END CERTIFICATE/END $pk/" "$mat/root.crt" > "$work/relabel"
    put material "$work/relabel"
  else
    warn "make-material.sh failed; no certificate seeds"
  fi
  keys="$work/keys"; mkdir -p "$keys"
  {
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$keys/rsa.pkcs8" &&
    openssl rsa -in "$keys/rsa.pkcs8" -traditional -out "$keys/rsa.pkcs1" &&
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384 -out "$keys/p384.pkcs8" &&
    openssl ec -in "$keys/p384.pkcs8" -out "$keys/p384.sec1" &&
    openssl genpkey -algorithm ED25519 -out "$keys/ed25519.pkcs8" &&
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -pass pass:x -aes-128-cbc -out "$keys/p256.encrypted" &&
    openssl req -x509 -new -key "$keys/rsa.pkcs8" -sha256 -days 30 -subj "/CN=gloo-mesh-mgmt-server.gloo-mesh" \
      -addext "subjectAltName=DNS:gloo-mesh-mgmt-server.gloo-mesh" -addext "extendedKeyUsage=serverAuth" -out "$keys/rsa-self.crt"
  } >/dev/null 2>&1 || warn "openssl could not make every key seed"
  for f in "$keys"/*; do [ -s "$f" ] && put material "$f"; done
else
  warn "openssl not found; no certificate or key seeds"
fi
printf '%s' "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$work/token-hex"; put material "$work/token-hex"
printf '%s\n' "$(head -c 48 /dev/urandom | base64 -w0)" > "$work/token-b64"; put material "$work/token-b64"

# --- secret_manifest and saved_plan ------------------------------------------
relayctl() { (cd "$root" && cargo run -q -- "$@"); }
state="$work/state"
if relayctl plan examples/clusters/managed --state-dir "$state" --out "$work/plan-empty.json" >/dev/null 2>"$work/err"; then
  put saved_plan "$work/plan-empty.json"
else
  warn "relayctl plan failed: $(tail -n 3 "$work/err")"
fi
if relayctl apply examples/clusters/managed --auto-approve --state-dir "$state" >/dev/null 2>"$work/err"; then
  while IFS= read -r -d '' f; do put secret_manifest "$f"; done < <(find "$state" -name '*.yaml' -type f -print0)
  if relayctl plan examples/clusters/managed --state-dir "$state" --out "$work/plan-applied.json" >/dev/null 2>"$work/err"; then
    put saved_plan "$work/plan-applied.json"
  else
    warn "relayctl plan (after apply) failed: $(tail -n 3 "$work/err")"
  fi
else
  warn "relayctl apply failed: $(tail -n 3 "$work/err")"
fi

for t in manifests material secret_manifest saved_plan; do
  echo "seed.sh: $t: $(find "$corpus/$t" -type f | wc -l) inputs in fuzz/corpus/$t" >&2
done
