# Shared by the bench scripts (source it): summaries of wrk output.

# wrk_summary: wrk's report on stdin -> "req/s requests non-2xx"
wrk_summary() {
  awk '/requests in/ {n=$1} /Non-2xx/ {bad=$NF} /Requests\/sec/ {r=$2} END {print r, n, bad + 0}'
}

# require_tools TOOL...: exits with the Debian packages to install when one
# of the tools is missing
require_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || {
      echo "$tool is needed (apt-get install $(printf '%s\n' "$@" | sed 's/^taskset$/util-linux/; s/^redis-cli$/redis-tools/' | sort -u | tr '\n' ' '))" >&2
      exit 1
    }
  done
}

# median VALUE...: the median of the numbers given
median() {
  printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'
}

# ratio A B: A / B to three decimals (same-run throughput ratios)
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'
}

# origin_service ADDR: manifest of the Service "origin" whose one endpoint
# is ADDR (weir.dev/upstream), which every bench routes to.
origin_service() {
  printf 'apiVersion: v1\nkind: Service\nmetadata: {name: origin, annotations: {weir.dev/upstream: "%s"}}\nspec: {ports: [{port: 80}]}\n' "$1"
}

# origin_ingress NAME HOST PREFIX: manifest of an Ingress routing PREFIX of
# HOST (empty: any host) to the origin Service.
origin_ingress() {
  local host=${2:+"host: $2
    "}
  cat <<YAML
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: $1}
spec:
  ingressClassName: weir
  rules:
  - ${host}http: {paths: [{path: "$3", pathType: Prefix, backend: {service: {name: origin, port: {number: 80}}}}]}
YAML
}
