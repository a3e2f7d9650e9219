#!/usr/bin/env bash
# molecule test for each scenario named (all under molecule/ when none is), one log file each.
# Prints one line per scenario with the seconds each step took; for a failure, the failed step and the task errors
# from its log. Runs every scenario, then exits 1 if any failed.
# MOLECULE_JOBS (1): scenarios run at a time, the longest of the last run first (their seconds: $LOGS/durations, else
# molecule/durations).
set -uo pipefail

LOGS=${MOLECULE_LOGS:-.build/molecule}
JOBS=${MOLECULE_JOBS:-1}
mkdir -p "$LOGS"
# Each scenario's working directory (its fleet's node trees, the hub, the bundle) on tmpfs: no disk writes or syncs
# for test fleets. One place per checkout and log directory, so that runs beside each other do not meet.
WORK=${MOLECULE_WORK:-/dev/shm/modelseed-molecule-$(realpath "$LOGS" | cksum | cut -d' ' -f1)}
DURATIONS="$LOGS/durations"
# Which ansible-core runs the scenarios (make compat puts an older one first on the PATH).
echo "molecule on $(ansible-playbook --version | sed -n 1p)"
if [ "$#" -eq 0 ]; then
    mapfile -t scenarios < <(find molecule -mindepth 2 -maxdepth 2 -name molecule.yml -printf '%h\n' | xargs -n1 basename | sort)
    set -- "${scenarios[@]}"
fi
if [ "$JOBS" -gt 1 ]; then
    # Longest first, a scenario without a recorded time before all: the last to start are the short ones. The times
    # of this checkout's last run, else those of molecule/durations (a fresh clone has no run of its own).
    mapfile -t ordered < <(for scenario in "$@"; do
        echo "$(cat molecule/durations "$DURATIONS" 2>/dev/null | awk -v s="$scenario" '$1 == s { t = $2 } END { print (t == "" ? 999999 : t) }') $scenario"
    done | sort -k1,1nr | cut -d' ' -f2)
    set -- "${ordered[@]}"
fi

# Molecule's output, with the seconds each step took added to its "Executed" line.
step_times() {
    local line started=${EPOCHREALTIME/./}
    while IFS= read -r line; do
        case $line in
            *"] Executing") started=${EPOCHREALTIME/./} ;;
            *"] Executed: "*) line="$line in $(((${EPOCHREALTIME/./} - started) / 1000000)) s" ;;
        esac
        printf '%s\n' "$line"
    done
}

# One scenario: its log, one line (and on a failure the failed step's errors) on stdout, its seconds in DURATIONS.
run_scenario() {
    local scenario=$1 log="$LOGS/$1.log" started=$SECONDS status steps errors report
    export MOLECULE_EPHEMERAL_DIRECTORY="$WORK/$scenario"
    : >"$log"
    # The scenarios do not start with a destroy step: one that an interrupted run left created is destroyed here.
    if grep -qx 'created: true' "$MOLECULE_EPHEMERAL_DIRECTORY/state.yml" 2>/dev/null; then
        echo "molecule $scenario: destroying what an interrupted run left" >>"$log"
        NO_COLOR=1 ANSIBLE_NOCOLOR=1 molecule destroy -s "$scenario" >>"$log" 2>&1
    fi
    NO_COLOR=1 ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 molecule test -s "$scenario" 2>&1 | step_times >>"$log"
    status=${PIPESTATUS[0]}
    steps=$(sed -nE 's/^INFO +\[[^]]* > ([a-z_]+)\] Executed: [A-Za-z]+ in ([0-9]+) s$/\1 \2/p' "$log" | paste -sd, | sed 's/,/, /g')
    if [ "$status" -eq 0 ]; then
        rm -rf "$MOLECULE_EPHEMERAL_DIRECTORY"
        echo "$scenario $((SECONDS - started))" >>"$DURATIONS"
        echo "molecule $scenario: passed in $((SECONDS - started)) s ($steps)"
        return 0
    fi
    report="molecule $scenario: FAILED after $((SECONDS - started)) s ($steps; full log: $log)"
    # The step that failed, then the task errors of that step only (earlier steps may hold rescued ones).
    report+=$'\n'$(grep -E 'Executed: Failed' "$log" | tail -n 1 | sed 's/^/    /')
    errors=$(awk '/Executing$/ { step = "" } { step = step $0 "\n" } /Executed: Failed/ { printf "%s", step; exit }' "$log" \
        | grep -E -A 14 '(fatal|failed): \[|\[ERROR\]: |Idempotence test failed' | head -n 120)
    # No step failed (molecule itself did): its last words.
    [ -n "$errors" ] || errors=$(tail -n 20 "$log")
    report+=$'\n'$(printf '%s\n' "$errors" | sed 's/^/    /')
    # One write, so that scenarios running at the same time do not mix their reports.
    printf '%s\n' "$report"
    return 1
}

failed=()
declare -A running=()
collect() {  # waits for one running scenario, notes whether it failed
    local pid scenario
    wait -n -p pid "${!running[@]}"
    local status=$?
    scenario=${running[$pid]}
    unset "running[$pid]"
    [ "$status" -eq 0 ] || failed+=("$scenario")
}
for scenario in "$@"; do
    [ "${#running[@]}" -lt "$JOBS" ] || collect
    run_scenario "$scenario" &
    running[$!]=$scenario
done
while [ "${#running[@]}" -gt 0 ]; do
    collect
done
rmdir "$WORK" 2>/dev/null
# The last time of each scenario only.
if [ -f "$DURATIONS" ]; then
    awk '{ t[$1] = $2 } END { for (s in t) print s, t[s] }' "$DURATIONS" | sort >"$DURATIONS.new" && mv "$DURATIONS.new" "$DURATIONS"
fi

if [ "${#failed[@]}" -gt 0 ]; then
    echo "molecule: ${#failed[@]} scenario(s) failed: ${failed[*]}"
    exit 1
fi
