#!/bin/bash
# The benchmark's anchor: the bash dispatcher hook that vfio-hookd replaces,
# as VFIO-Tools' libvirt_hooks/qemu (PassthroughPOST) does it: run the
# scripts under qemu.d/VM/OPERATION/SUB-OPERATION, here finding none. Timed
# with the same argv and the domain XML on stdin, as libvirtd runs a hook.
GUEST_NAME="$1"
HOOK_NAME="$2"
STATE_NAME="$3"

BASEDIR="$(dirname "$0")"
HOOKPATH="$BASEDIR/qemu.d/$GUEST_NAME/$HOOK_NAME/$STATE_NAME"

set -e
if [ -f "$HOOKPATH" ] && [ -s "$HOOKPATH" ] && [ -x "$HOOKPATH" ]; then
  eval \""$HOOKPATH"\" "$@"
elif [ -d "$HOOKPATH" ]; then
  while read -r file; do
    if [ -n "$file" ]; then
      eval \""$file"\" "$@"
    fi
  done <<<"$(find -L "$HOOKPATH" -maxdepth 1 -type f -executable -print)"
fi
