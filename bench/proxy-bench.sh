#!/usr/bin/env bash
# Runs ../shared/bench/proxy-bench with weir as the gateway under test. weir
# gets a manifest folder that routes $ROUTE_PREFIX to the benchmark origin and
# answers 404 elsewhere, per proxy-bench's gateway contract.
# Like the peers in proxy-bench, weir runs without an access log.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${PROXY_BENCH:-../shared/bench/proxy-bench}
[ -x "$bench" ] || { echo "proxy-bench not found at $bench (set PROXY_BENCH)" >&2; exit 1; }
[ -x target/release/weir ] || cargo build --locked --release -p weir
cat > /tmp/weir-bench-gateway.sh <<'GW'
#!/usr/bin/env bash
set -euo pipefail
dir=$(mktemp -d)
# shellcheck source=bench/lib.sh
source "$WEIR_BENCH_LIB"
{ origin_service "$BACKEND_ADDR"; echo ---; origin_ingress bench "" "$ROUTE_PREFIX"; } > "$dir/bench.yaml"
exec "$WEIR_BIN" serve --manifests "$dir" --http-addr "$GATEWAY_LISTEN" --admin-addr 127.0.0.1:0 \
  --worker-threads "$WORKERS" --log-level warn --access-log off
GW
chmod +x /tmp/weir-bench-gateway.sh
export WEIR_BIN=$PWD/target/release/weir WEIR_BENCH_LIB=$PWD/bench/lib.sh
exec "$bench" --gateway-cmd /tmp/weir-bench-gateway.sh --gateway-name weir "$@"
