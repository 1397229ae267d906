#!/bin/sh
# Render the ACL file from the passwords in the environment (hashes only, into tmpfs),
# then hand over to the image's own entrypoint, which drops to the redis user.
set -eu
out=/run/redis/users.acl
mkdir -p /run/redis
sh /etc/redis/render-acl.sh /etc/redis/users.acl.template "$out"
chown -R redis:redis /run/redis

exec docker-entrypoint.sh redis-server /etc/redis/redis.conf --aclfile "$out"
