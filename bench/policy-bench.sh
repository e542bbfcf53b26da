#!/usr/bin/env bash
# What a GatewayPolicy costs the whole proxy, measured in one run. One release
# weir (one worker thread) serves two hosts from the same origin: plain.test,
# and policy.test under a GatewayPolicy:
#   jwt        RS256 JWT checked against a PEM key in a Secret, `sub` copied
#              into X-User-Id (every request sends the same token, as a real
#              client does, so this measures the verified-token cache path)
#   ratelimit  one Global limit per client IP kept in Redis, never reached
#              (Redis pinned to the other CPU, as it would be on another host)
#   local      the same limit with scope Local (no Redis): the control that
#              separates the cost of Redis from that of limiting itself
# wrk alternates between the hosts in rounds, with wrk, weir and the origin
# pinned to CPU 0, so the same-round ratio policy/plain is the policy's share
# of the proxy's CPU per request (proxy-bench cannot send request headers).
# Usage: bench/policy-bench.sh jwt|ratelimit|local [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
mode=${1:?usage: bench/policy-bench.sh jwt|ratelimit|local [rounds] [seconds]}
rounds=${2:-6}
seconds=${3:-8}
case $mode in
  jwt) tools="wrk taskset openssl" goal=0.9 ;;
  ratelimit) tools="wrk taskset redis-server redis-cli" goal=0.85 ;;
  local) tools="wrk taskset" goal=0.85 ;;
  *) echo "unknown mode $mode (jwt, ratelimit or local)" >&2; exit 2 ;;
esac
# shellcheck disable=SC2086 # a word list
require_tools $tools
cargo build --locked --release -p weir -p weir-tests --bins
base=${BASE_PORT:-19180}
redis_port=$base origin=127.0.0.1:$((base + 1)) http=127.0.0.1:$((base + 2))
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$dir"' EXIT
origin_service "$origin" > "$dir/bench.yaml"
for host in plain policy; do
  { echo ---; origin_ingress "$host" "$host.test" /; } >> "$dir/bench.yaml"
done
headers=()
weir_flags=()
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
if [ "$mode" = jwt ]; then
  openssl genrsa -out "$dir/key.pem" 2048 2>/dev/null
  openssl rsa -in "$dir/key.pem" -pubout -out "$dir/pub.pem" 2>/dev/null
  claims=$(printf '{"iss":"https://idp.bench/","aud":"bench","sub":"user-42","exp":%d}' $(($(date +%s) + 86400)))
  signing_input="$(printf '{"alg":"RS256","typ":"JWT"}' | b64url).$(printf '%s' "$claims" | b64url)"
  token="$signing_input.$(printf '%s' "$signing_input" | openssl dgst -sha256 -sign "$dir/key.pem" -binary | b64url)"
  headers=(-H "Authorization: Bearer $token")
  cat >> "$dir/bench.yaml" <<YAML
---
apiVersion: v1
kind: Secret
metadata: {name: idp-key}
stringData:
  key.pem: |
$(sed 's/^/    /' "$dir/pub.pem")
---
apiVersion: weir.dev/v1alpha1
kind: GatewayPolicy
metadata: {name: policy}
spec:
  targetRefs: [{kind: Ingress, name: policy}]
  authentication:
    jwt:
      providers:
      - name: bench
        issuer: https://idp.bench/
        audiences: [bench]
        publicKey: {name: idp-key}
        claimToHeaders: [{claim: sub, header: X-User-Id}]
YAML
else
  scope=Global
  [ "$mode" = local ] && scope=Local
  cat >> "$dir/bench.yaml" <<YAML
---
apiVersion: weir.dev/v1alpha1
kind: GatewayPolicy
metadata: {name: policy}
spec:
  targetRefs: [{kind: Ingress, name: policy}]
  rateLimits:
  - {name: per-client, key: {clientIP: true}, requests: 1000000000, per: 1s, scope: $scope}
YAML
fi
if [ "$mode" = ratelimit ]; then
  taskset -c 1 redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null & pids+=($!)
  weir_flags=(--redis-url "redis://127.0.0.1:$redis_port")
fi
taskset -c 0 target/release/weir-example-upstream "$origin" >/dev/null & pids+=($!)
taskset -c 0 target/release/weir serve --manifests "$dir" --http-addr "$http" --admin-addr 127.0.0.1:0 \
  --worker-threads 1 --log-level warn --access-log off "${weir_flags[@]}" & pids+=($!)
for host in plain.test policy.test; do
  for _ in $(seq 100); do
    curl -fs -o /dev/null -H "Host: $host" "${headers[@]}" "http://$http/api/users/42" && break
    sleep 0.1
  done
done
# The policy must really be on: without the token the JWT host refuses, and
# the limited host answers with rate-limit headers.
if [ "$mode" = jwt ]; then
  code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: policy.test" "http://$http/api/users/42")
  [ "$code" = 401 ] || { echo "policy.test answered $code without a token, not 401" >&2; exit 1; }
  curl -fs -o /dev/null -H "Host: policy.test" "${headers[@]}" "http://$http/api/users/42" ||
    { echo "policy.test refuses the bench token" >&2; exit 1; }
else
  curl -fsi -H "Host: policy.test" "http://$http/api/users/42" | grep -qi '^ratelimit-policy:' ||
    { echo "policy.test answers without rate-limit headers" >&2; exit 1; }
fi
load() { # host seconds -> "rps requests non2xx"
  taskset -c 0 wrk -t1 -c50 -d"$2" -H "Host: $1" "${headers[@]}" "http://$http/api/users/42" | wrk_summary
}
scripts() {
  [ "$mode" = ratelimit ] || { echo 0; return; }
  redis-cli -p "$redis_port" info commandstats |
    awk -F'[:=,]' '/^cmdstat_eval(sha)?:/ {n += $3} END {print n + 0}'
}
load plain.test 3 >/dev/null; load policy.test 3 >/dev/null
ratios=() policy_requests=0 before=$(scripts)
for round in $(seq "$rounds"); do
  if ((round % 2)); then order="plain.test policy.test"; else order="policy.test plain.test"; fi
  declare -A rps=()
  for host in $order; do
    read -r r n bad < <(load "$host" "$seconds")
    [ "$bad" = 0 ] || { echo "$host: $bad non-2xx answers under load" >&2; exit 1; }
    rps[$host]=$r
    [ "$host" = policy.test ] && policy_requests=$((policy_requests + n))
  done
  ratio=$(ratio "${rps[policy.test]}" "${rps[plain.test]}")
  ratios+=("$ratio")
  echo "round $round: plain ${rps[plain.test]} req/s, $mode ${rps[policy.test]} req/s, ratio $ratio"
done
median=$(median "${ratios[@]}")
echo "median throughput ratio $mode/plain: $median (goal >= $goal)"
if [ "$mode" = ratelimit ]; then
  runs=$(( $(scripts) - before ))
  awk -v r="$runs" -v n="$policy_requests" 'BEGIN {printf "Redis script runs per limited request: %.4f (%d / %d; goal <= 1)\n", r / n, r, n}'
fi
