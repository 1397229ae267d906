#!/bin/bash
# Runs once, on an empty data volume (docker-entrypoint-initdb.d): one role and one database
# each for the MLflow backend store and the Feast SQL registry. Passwords come from the env.
set -euo pipefail
: "${MLFLOW_DB_PASSWORD:?set MLFLOW_DB_PASSWORD (see .env.example)}"
: "${FEAST_DB_PASSWORD:?set FEAST_DB_PASSWORD (see .env.example)}"

create() {  # $1 = role and database name, $2 = password
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
       -v name="$1" -v pw="$2" <<'SQL'
CREATE ROLE :"name" LOGIN PASSWORD :'pw';
CREATE DATABASE :"name" OWNER :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
}

create mlflow "$MLFLOW_DB_PASSWORD"
create feast "$FEAST_DB_PASSWORD"
