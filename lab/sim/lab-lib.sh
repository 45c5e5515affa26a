# Sourced by every lab simulator. Inside a lab host's mount namespace this directory is
# /usr/local/sbin and /var/lib/patchpilot-lab is that host's private simulator state.
# Inside a namespaced lab host these are the fixed paths; the asyncssh lab passes its own.
LAB=${PATCHPILOT_LAB_DIR:-/var/lib/patchpilot-lab}
LAB_RUN=${PATCHPILOT_LAB_RUN:-/run}

# Without the marker we may be on the real machine (a bind mount failed, or someone ran a
# simulator by hand): acting there would be wrong, so refuse outright.
if [ ! -f "$LAB/.lab-host" ]; then
    echo "${0##*/}: not inside a PatchPilot lab host ($LAB/.lab-host missing); refusing" >&2
    exit 126
fi
read -r LAB_HOST < "$LAB/.lab-host"
PATH=${PATCHPILOT_SIM_BIN:-/usr/local/sbin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

lab_has_fault() {
    [ -f "$LAB/faults" ] && grep -qxF -- "$1" "$LAB/faults"
}

# Become a process that never ends. The pid and its start time go to $LAB/hangs so the test
# process can tell whether this very process is still alive (the start time guards against
# pid reuse); exec keeps the recorded pid valid for the sleeping process.
lab_hang() {
    mkdir -p "$LAB/hangs"
    lab_stat=$(cat "/proc/$$/stat")
    lab_start=$(printf '%s\n' "${lab_stat##*") "}" | cut -d' ' -f20)
    printf '%s %s\n' "$$" "$lab_start" > "$LAB/hangs/$$"
    exec sleep infinity
}

lab_upgrade() {
    if lab_has_fault update-fail; then
        echo "E: simulated upgrade failure on $LAB_HOST" >&2
        exit 100
    fi
    if lab_has_fault update-hang; then
        echo "$$" > "$LAB/update.pid"
        lab_hang
    fi
    sleep 0.05
    # Two sessions may upgrade the same host at once; the count must not lose one.
    (
        flock 9
        lab_n=$(cat "$LAB/update-count" 2>/dev/null)
        echo $((${lab_n:-0} + 1)) > "$LAB/update-count"
    ) 9>>"$LAB/update-count.lock"
    # Debian leaves this flag behind when a new kernel is installed.
    if grep -q '^linux-image' "$LAB/pending" 2>/dev/null; then
        echo "*** System restart required ***" > "$LAB_RUN/reboot-required"
    fi
    : > "$LAB/pending"
    echo "Simulated upgrade on $LAB_HOST"
}
