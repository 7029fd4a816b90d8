#!/usr/bin/env bash
# Install what is missing, build (normal and AddressSanitizer+UBSan), run every test with
# ctest in both builds, print one summary line, exit non-zero on any failure.
#   tests/run.sh            both builds
#   LUNA_RUN_BUILDS=normal tests/run.sh    just the normal build (faster while developing)
set -uo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

deploy/install-deps.sh all || { echo "run.sh: installing dependencies failed" >&2; exit 1; }

jobs=$(nproc)
builds=${LUNA_RUN_BUILDS:-"normal sanitize"}
total_passed=0
total_failed=0
failed_builds=()

run_build() {
  local name=$1 dir=$2; shift 2
  echo "=== $name build ($dir) ==="
  if ! cmake -S . -B "$dir" "$@" >"$dir.configure.log" 2>&1; then
    cat "$dir.configure.log"; echo "run.sh: configure failed ($name)"; return 1
  fi
  if ! cmake --build "$dir" -j"$jobs" >"$dir.build.log" 2>&1; then
    tail -n 60 "$dir.build.log"; echo "run.sh: build failed ($name)"; return 1
  fi
  local log="$dir/ctest.log"
  (cd "$dir" && ctest --output-on-failure -j"$jobs" --timeout 600) 2>&1 | tee "$log"
  local passed failed
  passed=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed' "$log" || true)
  failed=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*(\*\*\*|Failed|Timeout|Not Run)' "$log" || true)
  total_passed=$((total_passed + passed))
  total_failed=$((total_failed + failed))
  grep -q '100% tests passed' "$log" || return 1
}

mkdir -p build build-asan
for build in $builds; do
  case $build in
    normal) run_build normal build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLUNA_SANITIZE=OFF || failed_builds+=(normal) ;;
    sanitize) ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
                run_build sanitize build-asan -DCMAKE_BUILD_TYPE=Debug -DLUNA_SANITIZE=ON || failed_builds+=(sanitize) ;;
    *) echo "run.sh: unknown build '$build'"; exit 2 ;;
  esac
done

echo
if [ ${#failed_builds[@]} -gt 0 ] && [ "$total_failed" -eq 0 ]; then
  total_failed=1 # a configure or build failure counts as one failure
fi
echo "tests: $total_passed passed, $total_failed failed"
[ ${#failed_builds[@]} -eq 0 ] && [ "$total_failed" -eq 0 ]
