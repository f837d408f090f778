#!/bin/sh
# Certificates for a dask-repsim cluster with mutual TLS (deploy/compose.tls.yaml, README).
#
#   sh deploy/tls/make-certs.sh [DIR] [NAMES]
#
# Writes to DIR (default deploy/tls/certs):
#   ca.pem, ca-key.pem          the cluster's own certificate authority (keep ca-key.pem offline)
#   node.pem, node-key.pem      for the scheduler and the workers
#   client.pem, client-key.pem  for the people and jobs allowed to submit work
# NAMES: the scheduler's DNS names and IP addresses as a subjectAltName list (default
# "DNS:scheduler,DNS:localhost,IP:127.0.0.1"). distributed verifies that the peer's certificate
# is signed by ca.pem, not its host name, but other TLS clients (browsers, curl) do check it.
# Both leaf certificates serve as server and as client: in Dask every node is both.
set -eu
dir=${1:-deploy/tls/certs}
names=${2:-DNS:scheduler,DNS:localhost,IP:127.0.0.1}
days=${DAYS:-365}
mkdir -p "$dir"
umask 077

openssl req -x509 -newkey rsa:3072 -nodes -sha256 -days "$days" \
    -subj "/CN=dask-repsim cluster CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" 2>/dev/null

for role in node client; do
    extensions="$dir/$role.ext"
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature,keyEncipherment" \
        "extendedKeyUsage=serverAuth,clientAuth" \
        "subjectAltName=$names" > "$extensions"
    openssl req -newkey rsa:3072 -nodes -sha256 -subj "/CN=dask-repsim-$role" \
        -keyout "$dir/$role-key.pem" -out "$dir/$role.csr" 2>/dev/null
    openssl x509 -req -sha256 -days "$days" -in "$dir/$role.csr" \
        -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial \
        -extfile "$extensions" -out "$dir/$role.pem" 2>/dev/null
    rm -f "$dir/$role.csr" "$extensions"
done
rm -f "$dir/ca.srl"
chmod 644 "$dir/ca.pem" "$dir/node.pem" "$dir/client.pem"
chmod 600 "$dir"/*-key.pem
# The image runs as uid 1000: give it the node key with `chown 1000 DIR/node-key.pem` on the
# Docker host (the containers mount DIR read-only).
echo "certificates written to $dir"
