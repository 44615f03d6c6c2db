#!/bin/sh
# Runs the C test programs (see Makefile) and prints "N passed, M failed"
# as its last line. Inputs come from the environment set by the Makefile.
passed=0; failed=0

count() { # $1: output file, $2: exit status, $3: label
  p=$(grep -c '^PASS ' "$1"); f=$(grep -c '^FAIL ' "$1")
  passed=$((passed + p)); failed=$((failed + f))
  if [ "$2" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "FAIL $3 (exit status $2)"; failed=$((failed + 1))
  fi
}

run() { # $1: label, $2: output prefix, rest: command
  label=$1; out=$2; shift 2
  echo "== $label"
  timeout 300 "$@" > "$out.out" 2> "$out.err"; rc=$?
  cat "$out.out"
  # valgrind 3.19 warns about pidfd_open (434), which kill_tree then
  # replaces with /proc polling: not shown.
  grep -v -e '^$' -e '^--[0-9]*-- ' "$out.err" | head -60
  count "$out.out" $rc "$label"
}

for p in $PROGRAMS; do run "$p" "$OUT/$p" "$OUT/$p"; done

echo "== cxx_double_include (devrig.h as C++17, included twice in two units)"
if "$OUT/cxx_double_include"; then echo "PASS cxx_double_include"; passed=$((passed + 1));
else echo "FAIL cxx_double_include"; failed=$((failed + 1)); fi

if [ -z "${DEVRIG_NO_ASAN:-}" ]; then
  for p in $ASAN_PROGRAMS; do
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      run "asan $p" "$ASAN_OUT/$p" "$ASAN_OUT/$p"
  done
fi

if [ -n "$VALGRIND_PROGRAMS" ] && [ -z "${DEVRIG_NO_VALGRIND:-}" ] &&
   command -v valgrind >/dev/null 2>&1; then
  for p in $VALGRIND_PROGRAMS; do
    DEVRIG_TEST_VALGRIND=1 DEVRIG_TEST_SKIP="$VALGRIND_SKIP" \
      run "valgrind $p (skipping: $VALGRIND_SKIP)" "$OUT/$p.vg" $VALGRIND "$OUT/$p"
  done
else
  echo "== valgrind not run"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
