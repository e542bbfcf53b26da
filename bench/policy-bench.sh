#!/usr/bin/env bash
# What a global rate limit costs the whole proxy. One release weir (one
# worker thread) serves two hosts from the same origin: plain.test, and
# limited.test under a GatewayPolicy with one Global limit kept in Redis and
# never reached. wrk alternates between them in rounds, with wrk, weir and the
# origin pinned to one CPU (Redis on the other, as it would be on another
# machine), so the same-round ratio limited/plain is the limit's share of the
# proxy's CPU per request. Redis round trips per request come from INFO
# commandstats. Usage: bench/ratelimit-bench.sh [rounds] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-6}
seconds=${2:-8}
for tool in redis-server redis-cli wrk taskset; do
  command -v "$tool" >/dev/null || { echo "$tool is needed (apt-get install redis-server wrk util-linux)" >&2; exit 1; }
done
[ -x target/release/weir ] && [ -x target/release/weir-example-upstream ] ||
  cargo build --locked --release -p weir -p weir-tests --bins
base=${BASE_PORT:-19180}
redis_port=$base origin=127.0.0.1:$((base + 1)) http=127.0.0.1:$((base + 2))
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; rm -rf "$dir"' EXIT
cat > "$dir/bench.yaml" <<YAML
apiVersion: v1
kind: Service
metadata: {name: origin, annotations: {weir.dev/upstream: "$origin"}}
spec: {ports: [{port: 80}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: plain}
spec:
  ingressClassName: weir
  rules:
  - host: plain.test
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: origin, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: limited}
spec:
  ingressClassName: weir
  rules:
  - host: limited.test
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: origin, port: {number: 80}}}}]}
---
apiVersion: weir.dev/v1alpha1
kind: GatewayPolicy
metadata: {name: limited}
spec:
  targetRefs: [{kind: Ingress, name: limited}]
  rateLimits:
  - {name: per-client, key: {clientIP: true}, requests: 1000000000, per: 1s}
YAML
taskset -c 1 redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null & pids+=($!)
taskset -c 0 target/release/weir-example-upstream "$origin" >/dev/null & pids+=($!)
taskset -c 0 target/release/weir serve --manifests "$dir" --http-addr "$http" --admin-addr 127.0.0.1:0 \
  --worker-threads 1 --log-level warn --redis-url "redis://127.0.0.1:$redis_port" & pids+=($!)
for host in plain.test limited.test; do
  for _ in $(seq 100); do
    curl -fs -o /dev/null -H "Host: $host" "http://$http/api/users/42" && break
    sleep 0.1
  done
done
curl -fsi -H "Host: limited.test" "http://$http/api/users/42" | grep -qi '^ratelimit-policy:' ||
  { echo "limited.test answers without rate-limit headers" >&2; exit 1; }
load() { # host seconds -> "rps requests"
  taskset -c 0 wrk -t1 -c50 -d"$2" -H "Host: $1" "http://$http/api/users/42" |
    awk '/requests in/ {n=$1} /Requests\/sec/ {print $2, n}'
}
scripts() {
  redis-cli -p "$redis_port" info commandstats |
    awk -F'[:=,]' '/^cmdstat_eval(sha)?:/ {n += $3} END {print n + 0}'
}
load plain.test 3 >/dev/null; load limited.test 3 >/dev/null
ratios=() limited_requests=0 before=$(scripts)
for round in $(seq "$rounds"); do
  if ((round % 2)); then order="plain.test limited.test"; else order="limited.test plain.test"; fi
  declare -A rps=()
  for host in $order; do
    read -r r n < <(load "$host" "$seconds")
    rps[$host]=$r
    [ "$host" = limited.test ] && limited_requests=$((limited_requests + n))
  done
  ratio=$(awk -v a="${rps[limited.test]}" -v b="${rps[plain.test]}" 'BEGIN {printf "%.3f", a / b}')
  ratios+=("$ratio")
  echo "round $round: plain ${rps[plain.test]} req/s, limited ${rps[limited.test]} req/s, ratio $ratio"
done
runs=$(( $(scripts) - before ))
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}')
echo "median throughput ratio limited/plain: $median (goal >= 0.85)"
awk -v r="$runs" -v n="$limited_requests" 'BEGIN {printf "Redis script runs per limited request: %.4f (%d / %d; goal <= 1)\n", r / n, r, n}'
