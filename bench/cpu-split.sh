#!/usr/bin/env bash
# Where a proxied request's CPU goes, weir beside nginx in one run: user and
# system CPU microseconds per request (from /proc/<pid>/stat) and how often
# the proxy is preempted per request (nonvoluntary context switches). wrk
# (50 keep-alive connections), an nginx origin and the proxies share CPU 0,
# each proxy with one worker, as in proxy-bench's default pinning; the
# targets are measured in turn in each round, in an order that rotates.
# Compare within a run only: the summary gives each build's CPU per request
# as a multiple of weir's in the same round.
# Usage: bench/cpu-split.sh [rounds] [seconds] [other-weir-binary...]
#   other-weir-binary: more weir builds measured beside the first (A/B),
#   named weir-b, weir-c, ... in the table.
# CLOSE=1: every request on a new connection (wrk sends Connection: close),
#   to measure the per-connection costs.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
rounds=${1:-3}
seconds=${2:-5}
others=("${@:3}")
wrk_args=(-t1 -c50)
[ -n "${CLOSE:-}" ] && wrk_args+=(-H "Connection: close")
require_tools wrk taskset nginx curl
[ -x target/release/weir ] || cargo build --locked --release -p weir
base=${BASE_PORT:-19380}
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; for p in "$dir"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null; done; rm -rf "$dir"' EXIT
nginx_conf() { # name listen body
  cat > "$dir/$1.conf" <<NGINX
worker_processes 1;
daemon off;
pid $dir/$1.pid;
error_log stderr warn;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_timeout 300s;
  keepalive_requests 10000000;
  client_body_temp_path $dir/$1-body;
  proxy_temp_path $dir/$1-proxy;
  upstream origin { server 127.0.0.1:$base; keepalive 1024; }
  server {
    listen 127.0.0.1:$2 backlog=4096;
    $3
  }
}
NGINX
}
nginx_conf origin "$base" 'location / { return 200 "ok\n"; }'
nginx_conf nginx "$((base + 1))" 'location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }'
taskset -c 0 nginx -c "$dir/origin.conf" 2>/dev/null &
pids+=($!)
taskset -c 0 nginx -c "$dir/nginx.conf" 2>/dev/null &
pids+=($!)
mkdir -p "$dir/manifests"
{ origin_service "127.0.0.1:$base"; echo ---; origin_ingress bench "" /; } > "$dir/manifests/bench.yaml"
names=(nginx) ports=($((base + 1)))
bins=("$PWD/target/release/weir")
for other in "${others[@]}"; do bins+=("$(realpath "$other")"); done
for i in "${!bins[@]}"; do
  port=$((base + 2 + i))
  taskset -c 0 "${bins[$i]}" serve --manifests "$dir/manifests" --http-addr "127.0.0.1:$port" \
    --admin-addr 127.0.0.1:0 --worker-threads 1 --log-level warn --access-log off &
  pids+=($!)
  letters=(. b c d e f)
  names+=("weir$([ "$i" = 0 ] || echo "-${letters[$i]}")") ports+=("$port")
done
# The nginx worker (not its master) does the proxying.
proxy_pid() { # index
  if [ "$1" = 0 ]; then
    pgrep -P "$(cat "$dir/nginx.pid")"
  else
    echo "${pids[$((1 + $1))]}"
  fi
}
for _ in $(seq 50); do
  [ -f "$dir/nginx.pid" ] && [ -f "$dir/origin.pid" ] && ok=1
  for p in "${ports[@]}"; do curl -fs -o /dev/null "http://127.0.0.1:$p/" 2>/dev/null || ok=; done
  [ -n "${ok:-}" ] && break
  sleep 0.2
done
[ -n "${ok:-}" ] || { echo "targets did not come up" >&2; exit 1; }
tick=$(getconf CLK_TCK)
printf '%-7s %9s %11s %11s %11s %13s\n' target req/s "cpu us/req" "user us" "sys us" "preempt/req"
count=${#names[@]}
for round in $(seq "$rounds"); do
  # The order rotates each round, so no target always follows another.
  for k in $(seq 0 $((count - 1))); do
    i=$(((k + round) % count))
    pid=$(proxy_pid "$i") url="http://127.0.0.1:${ports[$i]}/api/users/42"
    taskset -c 0 wrk "${wrk_args[@]}" -d1 "$url" >/dev/null
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    c0=$(awk '/^nonvoluntary_ctxt/ {print $2}' "/proc/$pid/status")
    out=$(taskset -c 0 wrk "${wrk_args[@]}" -d"$seconds" "$url")
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$pid/stat")
    c1=$(awk '/^nonvoluntary_ctxt/ {print $2}' "/proc/$pid/status")
    n=$(awk '/requests in/ {print $1}' <<<"$out") rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    awk -v name="${names[$i]}" -v r="$round" -v rps="$rps" -v n="$n" -v hz="$tick" \
      -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v c=$((c1 - c0)) 'BEGIN {
        us = 1e6 / hz / n
        printf "%-7s %9.0f %11.2f %11.2f %11.2f %13.3f   (round %d)\n", name, rps, (u + s) * us, u * us, s * us, c / n, r }' |
      tee -a "$dir/rows"
  done
done
# Same-round ratios are what this machine can compare; absolute numbers
# drift between rounds.
echo
echo "CPU us/req as a multiple of weir's in the same round: median (min-max)"
awk '{ r = $NF + 0; cpu[$1, r] = $3; seen[$1] = 1; if (r > last) last = r }
  END {
    for (name in seen) {
      if (name == "weir") continue
      n = 0
      for (r = 1; r <= last; r++) if (((name, r) in cpu) && cpu["weir", r] > 0) v[++n] = cpu[name, r] / cpu["weir", r]
      for (a = 1; a <= n; a++) for (b = a + 1; b <= n; b++) if (v[b] < v[a]) { t = v[a]; v[a] = v[b]; v[b] = t }
      med = (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
      printf "%-7s %.3f (%.3f-%.3f) over %d rounds\n", name, med, v[1], v[n], n
    }
  }' "$dir/rows"
