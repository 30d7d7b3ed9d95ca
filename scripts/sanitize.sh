#!/usr/bin/env bash
# Build a copy of the repository with AddressSanitizer + UndefinedBehaviorSanitizer
# (MATCHER_SANITIZE=1) in a temporary directory and run the native tests under it:
# tests/test_native.py and the native targets of tests/test_fuzz.py.
#
#   scripts/sanitize.sh [extra pytest args...]
#
# Fails (exit 1) on a test failure or on any ASan / UBSan report in the output, even one a
# test survived. KEEP=1 keeps the temporary copy. FUZZ_COUNT=N additionally runs N inputs of
# every native fuzz target through fuzz/fuzz_targets.py under the sanitizers.
set -euo pipefail

SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/matcher-sanitize.XXXXXX")"
LOG="$WORK/sanitize.log"
cleanup() { if [[ "${KEEP:-0}" != 1 ]]; then rm -rf "$WORK"; else echo "kept $WORK"; fi; }
trap cleanup EXIT

echo "== copying $SRC -> $WORK/repo"
mkdir -p "$WORK/repo"
(cd "$SRC" && git ls-files -co --exclude-standard -z \
   | grep -zv -E '\.(so|o)$' \
   | xargs -0 -I{} cp --parents {} "$WORK/repo/" 2>/dev/null || true)
# Generated C from Cython is rebuilt; prebuilt extension modules are never copied.
find "$WORK/repo" -name '*.so' -delete

echo "== building with MATCHER_SANITIZE=1"
(cd "$WORK/repo" && MATCHER_SANITIZE=1 python setup.py -q build_ext --inplace --force \
   > "$WORK/build.log" 2>&1) || { tail -40 "$WORK/build.log"; echo "BUILD FAILED"; exit 1; }

ASAN_LIB="$(gcc -print-file-name=libasan.so)"
STDCXX_LIB="$(gcc -print-file-name=libstdc++.so)"
export LD_PRELOAD="$ASAN_LIB $STDCXX_LIB"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export PYTHONPATH="$WORK/repo${PYTHONPATH:+:$PYTHONPATH}"
cd "$WORK/repo"

where="$(python -c 'import matcher, matcher._native as n; print(n.__file__)' 2>&1 | tail -1)"
case "$where" in
  "$WORK"/repo/*) echo "== native module under test: $where" ;;
  *) echo "the sanitized build is not the one imported: $where"; exit 1 ;;
esac
nm -D "$where" | grep -q __asan_init || nm "$where" 2>/dev/null | grep -q __asan || \
  ldd "$where" | grep -q libasan || { echo "module is not ASan-instrumented"; exit 1; }

status=0
echo "== pytest tests/test_native.py tests/test_fuzz.py -k native (sanitized)"
python -m pytest -q -p no:cacheprovider tests/test_native.py tests/test_fuzz.py -k "native" \
  "$@" 2>&1 | tee "$LOG" || status=$?

if [[ -n "${FUZZ_COUNT:-}" ]]; then
  for t in $(python fuzz/fuzz_targets.py --list | grep '^native_'); do
    # --max-memory-gb 0: ASan reserves terabytes of address space for its shadow memory, so
    # the harness's RLIMIT_AS cap would make every worker abort at start-up.
    python fuzz/fuzz_targets.py --target "$t" --count "$FUZZ_COUNT" --time-cap 60 \
      --max-memory-gb 0 2>&1 \
      | tee -a "$LOG" || status=1
  done
fi

if grep -E -q 'ERROR: AddressSanitizer|runtime error:|ERROR: LeakSanitizer|SUMMARY: (Address|UndefinedBehavior)Sanitizer' "$LOG"; then
  echo "== SANITIZER REPORT FOUND:"
  grep -E -n -A20 'ERROR: AddressSanitizer|runtime error:' "$LOG" | head -80
  status=1
fi
if [[ $status -eq 0 ]]; then echo "== sanitize: OK (no ASan/UBSan report, tests passed)"; else echo "== sanitize: FAILED"; fi
exit $status
