#!/usr/bin/env bash
# Run commands beside a main one:  tools/beside.sh LOG SIDE-COMMAND... -- MAIN-COMMAND [ARG...]
# The side commands run one after another in the background, with their output in LOG; the main command runs
# in the foreground, its output on the terminal. Once both are done LOG is printed; the exit status is 1 when
# either failed (the main command's own status when only it did).
set -uo pipefail

if [ "$#" -lt 3 ]; then
    echo "usage: $0 LOG SIDE-COMMAND... -- MAIN-COMMAND [ARG...]" >&2
    exit 2
fi
log=$1
shift
side=()
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do
    side+=("$1")
    shift
done
if [ "$#" -lt 2 ] || [ "${#side[@]}" -eq 0 ]; then
    echo "usage: $0 LOG SIDE-COMMAND... -- MAIN-COMMAND [ARG...]" >&2
    exit 2
fi
shift

mkdir -p "$(dirname "$log")"
(
    status=0
    for command in "${side[@]}"; do
        echo "beside: $command"
        bash -c "$command" || status=1
    done
    exit "$status"
) >"$log" 2>&1 &
side_pid=$!

"$@"
main_status=$?
wait "$side_pid"
side_status=$?

echo "======== beside the tests (log: $log) ========"
cat "$log"
if [ "$side_status" -ne 0 ]; then
    echo "beside the tests: FAILED"
fi
if [ "$main_status" -ne 0 ]; then
    exit "$main_status"
fi
exit "$side_status"
