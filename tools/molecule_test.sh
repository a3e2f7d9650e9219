#!/usr/bin/env bash
# molecule test for each scenario named (all under molecule/ when none is), one log file each.
# Prints one line per scenario; for a failure, the failed step and the task errors from its log.
# Runs every scenario, then exits 1 if any failed.
set -uo pipefail

LOGS=${MOLECULE_LOGS:-.build/molecule}
mkdir -p "$LOGS"
# Which ansible-core runs the scenarios (make compat puts an older one first on the PATH).
echo "molecule on $(ansible-playbook --version | sed -n 1p)"
if [ "$#" -eq 0 ]; then
    mapfile -t scenarios < <(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -n1 basename | sort)
    set -- "${scenarios[@]}"
fi

failed=()
for scenario in "$@"; do
    log="$LOGS/$scenario.log"
    started=$SECONDS
    if NO_COLOR=1 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 molecule test -s "$scenario" >"$log" 2>&1; then
        echo "molecule $scenario: passed in $((SECONDS - started)) s"
        continue
    fi
    failed+=("$scenario")
    echo "molecule $scenario: FAILED after $((SECONDS - started)) s (full log: $log)"
    # The step that failed, then the task errors of that step only (earlier steps may hold rescued ones).
    grep -E 'Executed: Failed' "$log" | tail -n 1 | sed 's/^/    /'
    errors=$(awk '/Executing$/ { step = "" } { step = step $0 "\n" } /Executed: Failed/ { printf "%s", step; exit }' "$log" \
        | grep -E -A 14 '(fatal|failed): \[|\[ERROR\]: |Idempotence test failed' | head -n 120)
    # No step failed (molecule itself did): its last words.
    [ -n "$errors" ] || errors=$(tail -n 20 "$log")
    printf '%s\n' "$errors" | sed 's/^/    /'
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "molecule: ${#failed[@]} scenario(s) failed: ${failed[*]}"
    exit 1
fi
