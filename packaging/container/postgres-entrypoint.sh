#!/bin/sh
# Initializes the cluster on first start, then runs PostgreSQL in the
# foreground with TLS (the certificate and key from /tls).
set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
data=/var/lib/postgresql/data
if [ ! -f "$data/PG_VERSION" ]; then
  printf '%s\n' "$POSTGRES_PASSWORD" >/tmp/pw
  "$bin/initdb" -D "$data" -U writ --pwfile=/tmp/pw --auth-host=scram-sha-256 --auth-local=trust >/dev/null
  rm -f /tmp/pw
  echo "host all all 0.0.0.0/0 scram-sha-256" >>"$data/pg_hba.conf"
fi
cp /tls/server.crt /tls/server.key "$data/"
chmod 600 "$data/server.key"
exec "$bin/postgres" -D "$data" -c listen_addresses='*' -c ssl=on \
  -c ssl_cert_file=server.crt -c ssl_key_file=server.key -c ssl_min_protocol_version=TLSv1.2 \
  -k /tmp
