#!/bin/sh
# Render the Redis ACL file: render-acl.sh TEMPLATE OUT
# Replaces each @..._SHA256@ in TEMPLATE with the SHA-256 of a password from the environment,
# so OUT holds hashes only (no secret is written anywhere), and drops the comment lines that an
# ACL file may not contain. Run by entrypoint.sh at container start, and by
# tests/integration/test_deploy_redis_acl.py against a real redis-server.
set -eu
: "${REDIS_SERVING_PASSWORD:?set REDIS_SERVING_PASSWORD (see .env.example)}"
: "${REDIS_MATERIALIZE_PASSWORD:?set REDIS_MATERIALIZE_PASSWORD (see .env.example)}"
: "${REDIS_ADMIN_PASSWORD:?set REDIS_ADMIN_PASSWORD (see .env.example)}"
template=$1
out=$2

sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

umask 077
sed -e "s/@SERVING_SHA256@/$(sha "$REDIS_SERVING_PASSWORD")/" \
    -e "s/@MATERIALIZE_SHA256@/$(sha "$REDIS_MATERIALIZE_PASSWORD")/" \
    -e "s/@ADMIN_SHA256@/$(sha "$REDIS_ADMIN_PASSWORD")/" \
    "$template" | grep -v '^#' > "$out"
