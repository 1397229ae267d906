#!/bin/sh
# Render the ACL file from the passwords in the environment (hashes only, into tmpfs),
# then hand over to the image's own entrypoint, which drops to the redis user.
set -eu
: "${REDIS_SERVING_PASSWORD:?set REDIS_SERVING_PASSWORD (see .env.example)}"
: "${REDIS_MATERIALIZE_PASSWORD:?set REDIS_MATERIALIZE_PASSWORD (see .env.example)}"
: "${REDIS_ADMIN_PASSWORD:?set REDIS_ADMIN_PASSWORD (see .env.example)}"

sha() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

out=/run/redis/users.acl
mkdir -p /run/redis
sed -e "s/@SERVING_SHA256@/$(sha "$REDIS_SERVING_PASSWORD")/" \
    -e "s/@MATERIALIZE_SHA256@/$(sha "$REDIS_MATERIALIZE_PASSWORD")/" \
    -e "s/@ADMIN_SHA256@/$(sha "$REDIS_ADMIN_PASSWORD")/" \
    /etc/redis/users.acl.template | grep -v '^#' > "$out"
chown -R redis:redis /run/redis
chmod 0600 "$out"

exec docker-entrypoint.sh redis-server /etc/redis/redis.conf --aclfile "$out"
