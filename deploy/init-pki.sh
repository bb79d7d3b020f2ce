#!/bin/sh
# Create the cluster's development PKI in /meridian/pki once: the CA, one node certificate
# per region named on the command line, and the `admin` client certificate. Idempotent, so
# `docker compose up` can run it every time; it never replaces what exists.
set -eu
pki=/meridian/pki
[ -f "$pki/ca.pem" ] || meridian pki init --dir "$pki"
for region in "$@"; do
  # The certificate names <region>.node.meridian, the alias peers and clients dial.
  [ -f "$pki/nodes/$region.pem" ] || meridian pki issue --dir "$pki" --node "$region"
done
[ -f "$pki/clients/admin.pem" ] || meridian pki issue --dir "$pki" --principal admin
echo "PKI ready in $pki"
