# Shared shell helpers for the guest test (busybox ash, INSIDE the QEMU guest).
R=/results
TAP=$R/tap
FACTS=$R/facts.txt
PCI=/sys/bus/pci/devices
HELPER=$(command -v vfio-helper 2>/dev/null)

say()   { echo "$*" >> "$TAP"; echo "$*"; }
ok()    { say "ok - $*"; }
notok() { say "not ok - $*"; }
note()  { say "# $*"; }
# check DESC CMD...: one TAP line from a command's status
check() { d=$1; shift; if "$@"; then ok "$d"; else notok "$d"; fi; }
# eq DESC GOT WANT
eq() { if [ "$2" = "$3" ]; then ok "$1"; else notok "$1 (got '$2', want '$3')"; fi; }
# fact KEY TEXT: one observed kernel fact, into facts.txt and the TAP stream
fact()  { echo "$1: $2" >> "$FACTS"; say "# fact $1: $2"; }

now_us() {
  if [ -n "$HELPER" ]; then echo $(( $(vfio-helper now) / 1000 )); return; fi
  read -r up _ < /proc/uptime; echo $(( ${up%.*} * 1000000 + ${up#*.} * 10000 ))
}
ms_since() { echo $(( ($(now_us) - $1) / 1000 )); }

drv() { l=$(readlink "$PCI/$1/driver" 2>/dev/null) && echo "${l##*/}" || echo none; }
grp() { l=$(readlink "$PCI/$1/iommu_group" 2>/dev/null) && echo "${l##*/}" || echo none; }
ovr() { cat "$PCI/$1/driver_override" 2>/dev/null || echo "<unreadable>"; }

# bw FILE VALUE [TIMEOUT]: one bounded write; BW_RC (0 ok), BW_MSG (errno name
# with the helper, the shell's message without it)
bw() {
  if [ -n "$HELPER" ]; then
    BW_MSG=$(timeout -s KILL "${3:-20}" vfio-helper write "$1" "$2" 2>&1); BW_RC=$?
  else
    BW_MSG=$(timeout -s KILL "${3:-20}" sh -c 'printf "%s" "$2" > "$1"' _ "$1" "$2" 2>&1); BW_RC=$?
    [ $BW_RC -eq 0 ] && BW_MSG="ok"
  fi
}

# The raw-shell way, as a person types it (also the benchmark baseline).
raw_detach() { # ADDR...
  for a in "$@"; do
    echo vfio-pci > "$PCI/$a/driver_override"
    [ -e "$PCI/$a/driver" ] && echo "$a" > "$PCI/$a/driver/unbind"
    echo "$a" > /sys/bus/pci/drivers_probe
  done
}
raw_reattach() { # ADDR...
  for a in "$@"; do
    echo > "$PCI/$a/driver_override"
    [ -e "$PCI/$a/driver" ] && echo "$a" > "$PCI/$a/driver/unbind"
    echo "$a" > /sys/bus/pci/drivers_probe
  done
}

# wait_for COND_CMD TENTHS: poll a condition every 0.1 s
wait_for() { i=0; while [ $i -lt "$2" ]; do eval "$1" && return 0; sleep 0.1; i=$((i + 1)); done; return 1; }
