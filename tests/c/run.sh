#!/bin/sh
# Runs the C test programs and prints "N passed, M failed" last.
# usage: run.sh OUT "PROGRAMS" "VALGRIND_PROGRAMS" "VALGRIND COMMAND"
OUT=$1; PROGRAMS=$2; VG_PROGRAMS=$3; VALGRIND=$4
passed=0; failed=0
log=$OUT/last-run.log
: > "$log"

count() { # $1: program output file, $2: exit status, $3: label
  p=$(grep -c '^PASS ' "$1"); f=$(grep -c '^FAIL ' "$1")
  passed=$((passed + p)); failed=$((failed + f))
  if [ "$2" -ne 0 ] && [ "$f" -eq 0 ]; then
    echo "FAIL $3 (exit status $2)"; failed=$((failed + 1))
  fi
}

for p in $PROGRAMS; do
  echo "== $p"
  timeout 300 "$OUT/$p" > "$OUT/$p.out" 2> "$OUT/$p.err"; rc=$?
  cat "$OUT/$p.out"; grep -v '^$' "$OUT/$p.err" | head -50
  count "$OUT/$p.out" $rc "$p"
done

echo "== cxx_double_include (devrig.h as C++, included twice)"
if "$OUT/cxx_double_include"; then echo "PASS cxx_double_include"; passed=$((passed + 1));
else echo "FAIL cxx_double_include"; failed=$((failed + 1)); fi

if [ -n "$VG_PROGRAMS" ] && command -v valgrind >/dev/null 2>&1 && [ "${DEVRIG_NO_VALGRIND:-}" = "" ]; then
  for p in $VG_PROGRAMS; do
    echo "== valgrind $p"
    DEVRIG_TEST_VALGRIND=1 timeout 600 $VALGRIND "$OUT/$p" > "$OUT/$p.vg.out" 2> "$OUT/$p.vg.err"; rc=$?
    grep '^FAIL' "$OUT/$p.vg.out"; grep -v '^$' "$OUT/$p.vg.err" | head -80
    if [ $rc -eq 0 ]; then echo "PASS valgrind $p"; passed=$((passed + 1));
    else echo "FAIL valgrind $p (exit status $rc)"; failed=$((failed + 1)); fi
  done
else
  echo "== valgrind not run (not installed or DEVRIG_NO_VALGRIND set)"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
