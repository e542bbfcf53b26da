#!/usr/bin/env bash
# No Docker engine runs here, so check the Dockerfile the way its build
# would: the toolchain it names is the pinned one, its build command (the
# RUN cargo line, run as written) succeeds, and every path it copies from
# the build stage exists afterwards. Run by `make test`.
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "dockerfile-check: $*" >&2; exit 1; }
toolchain=$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)
grep -q "^FROM rust:$toolchain-" Dockerfile ||
  fail "the build stage must use rust:$toolchain (rust-toolchain.toml)"
build=$(sed -n 's/^RUN \(cargo build .*\)$/\1/p' Dockerfile)
[ -n "$build" ] || fail "no 'RUN cargo build' line"
case " $build " in *" --locked "*) ;; *) fail "the build must be --locked: $build" ;; esac
workdir=$(sed -n 's/^WORKDIR \(.*\)$/\1/p' Dockerfile | head -1)
echo "dockerfile-check: $build"
$build
copied=0
while read -r src; do
  path=${src#"$workdir"/}
  [ -e "$path" ] || fail "COPY --from=build $src: $path does not exist after the build"
  copied=$((copied + 1))
done < <(sed -n 's/^COPY --from=build \([^ ]*\) .*$/\1/p' Dockerfile)
[ "$copied" -gt 0 ] || fail "nothing is copied from the build stage"
grep -q '^USER [1-9][0-9]*:[1-9][0-9]*$' Dockerfile || fail "the runtime user must be numeric and non-root"
grep -q '^ENTRYPOINT \["weir"\]$' Dockerfile || fail 'ENTRYPOINT must be ["weir"]'
"./target/release/weir" --version >/dev/null || fail "the built binary does not run"
echo "dockerfile-check: ok ($copied path(s) copied, binary runs)"
