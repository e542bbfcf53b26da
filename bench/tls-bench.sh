#!/usr/bin/env bash
# HTTPS throughput of weir beside nginx, one run: both terminate TLS with the
# same ECDSA P-256 certificate (TLS 1.3, keep-alive clients) and proxy to the
# same origin over a keep-alive pool; wrk, the proxy and the origin share
# CPU 0 and each proxy has one worker, so the same-round ratio weir/nginx
# compares CPU per request. The hosts alternate order in rounds. wrk sends
# the IP address as SNI, which TLS does not allow, so both serve the
# certificate as their default.
# Usage: bench/tls-bench.sh [rounds] [seconds] [close]
#   close: every request on a new connection (measures full handshakes).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh
rounds=${1:-5}
seconds=${2:-8}
close=${3:-}
require_tools wrk taskset openssl nginx curl
cargo build --locked --release -p weir -p weir-tests --bins
base=${BASE_PORT:-19280}
origin=127.0.0.1:$((base + 1)) weir=127.0.0.1:$((base + 2)) nginx=127.0.0.1:$((base + 3))
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; [ -f "$dir/nginx.pid" ] && kill "$(cat "$dir/nginx.pid")" 2>/dev/null; rm -rf "$dir"' EXIT
openssl ecparam -name prime256v1 -genkey -noout -out "$dir/tls.key" 2>/dev/null
openssl req -x509 -key "$dir/tls.key" -out "$dir/tls.crt" -days 2 -subj "/CN=bench.test" \
  -addext "subjectAltName=DNS:bench.test" 2>/dev/null
mkdir -p "$dir/manifests"
origin_service "$origin" > "$dir/manifests/bench.yaml"
cat >> "$dir/manifests/bench.yaml" <<YAML
---
apiVersion: v1
kind: Secret
metadata: {name: bench-tls}
type: kubernetes.io/tls
stringData:
  tls.crt: |
$(sed 's/^/    /' "$dir/tls.crt")
  tls.key: |
$(sed 's/^/    /' "$dir/tls.key")
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bench}
spec:
  ingressClassName: weir
  tls: [{hosts: [bench.test], secretName: bench-tls}]
  rules:
  - host: bench.test
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: origin, port: {number: 80}}}}]}
YAML
cat > "$dir/nginx.conf" <<NGINX
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream origin { server $origin; keepalive 64; }
  server {
    listen $nginx ssl http2;
    server_name bench.test;
    ssl_certificate $dir/tls.crt;
    ssl_certificate_key $dir/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    location / {
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto https;
    }
  }
}
NGINX
taskset -c 0 target/release/weir-example-upstream "$origin" >/dev/null & pids+=($!)
taskset -c 0 target/release/weir serve --manifests "$dir/manifests" --http-addr 127.0.0.1:0 \
  --https-addr "$weir" --default-ssl-certificate default/bench-tls --admin-addr 127.0.0.1:0 --worker-threads 1 --log-level warn --access-log off & pids+=($!)
taskset -c 0 nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/nginx-error.log"
for target in "$weir" "$nginx"; do
  for _ in $(seq 100); do
    curl -fsk -o /dev/null --resolve "bench.test:${target##*:}:127.0.0.1" "https://bench.test:${target##*:}/api/users/42" && break
    sleep 0.1
  done
  curl -fsk -o /dev/null --resolve "bench.test:${target##*:}:127.0.0.1" "https://bench.test:${target##*:}/api/users/42" ||
    { echo "https://$target does not answer" >&2; exit 1; }
done
extra=()
[ "$close" = close ] && extra=(-H "Connection: close")
load() { # addr seconds -> "rps requests non2xx"
  taskset -c 0 wrk -t1 -c50 -d"$2" "${extra[@]}" -H "Host: bench.test" "https://$1/api/users/42" | wrk_summary
}
load "$weir" 3 >/dev/null; load "$nginx" 3 >/dev/null
ratios=()
for round in $(seq "$rounds"); do
  if ((round % 2)); then order="weir nginx"; else order="nginx weir"; fi
  declare -A rps=()
  for name in $order; do
    if [ "$name" = weir ]; then addr=$weir; else addr=$nginx; fi
    read -r r _ bad < <(load "$addr" "$seconds")
    [ "$bad" = 0 ] || { echo "$name: $bad non-2xx answers under load" >&2; exit 1; }
    rps[$name]=$r
  done
  ratio=$(ratio "${rps[weir]}" "${rps[nginx]}")
  ratios+=("$ratio")
  echo "round $round: nginx ${rps[nginx]} req/s, weir ${rps[weir]} req/s, ratio $ratio"
done
median=$(median "${ratios[@]}")
echo "median HTTPS throughput ratio weir/nginx${close:+ (new connection per request)}: $median (goal >= 1)"
