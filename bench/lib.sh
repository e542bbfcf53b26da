# Shared by the bench scripts (source it): summaries of wrk output.

# wrk_summary: wrk's report on stdin -> "req/s requests non-2xx"
wrk_summary() {
  awk '/requests in/ {n=$1} /Non-2xx/ {bad=$NF} /Requests\/sec/ {r=$2} END {print r, n, bad + 0}'
}

# median VALUE...: the median of the numbers given
median() {
  printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'
}

# ratio A B: A / B to three decimals (same-run throughput ratios)
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'
}
