# The initrd's part of `hold = "boot"`: the PCI addresses of every VM whose
# devices never go to a host driver, and the stage-1 commands that set their
# driver_override to vfio-pci before udev loads any driver (the blog's
# preDeviceCommands loop, generated from the same settings the daemon reads).
# Builtins only, like settings.nix, so that CI can evaluate it and run the
# commands against a stand-in /sys (sysfs).
#
#   import ./initrd-hold.nix { settings = { vm.win10 = { hold = "boot"; devices = [ "0b:00.0" ]; }; }; }
#   => { devices = [ "0000:0b:00.0" ]; commands = "..."; }
{
  settings,
  sysfs ? "/sys",
}:
let
  inherit (builtins)
    attrValues
    concatLists
    concatStringsSep
    elem
    filter
    foldl'
    map
    match
    replaceStrings
    ;
  lower = replaceStrings [ "A" "B" "C" "D" "E" "F" ] [ "a" "b" "c" "d" "e" "f" ];
  # sysfs names a device DDDD:BB:DD.F in lower case; `lspci` prints the short BB:DD.F.
  normalise = address: lower (if match "[0-9a-fA-F]{4}:.*" address != null then address else "0000:${address}");
  vms = attrValues (settings.vm or { });
  held = filter (vm: (vm.hold or "vm") == "boot") vms;
  unique = foldl' (seen: x: if elem x seen then seen else seen ++ [ x ]) [ ];
  devices = unique (map normalise (concatLists (map (vm: vm.devices or [ ]) held)));
in
{
  inherit devices;
  commands =
    if devices == [ ] then
      ""
    else
      ''
        # vfio-hookd: hold = "boot" devices go to vfio-pci before any host driver can bind them.
        for dev in ${concatStringsSep " " devices}; do
          if [ -e "${sysfs}/bus/pci/devices/$dev/driver_override" ]; then
            echo vfio-pci > "${sysfs}/bus/pci/devices/$dev/driver_override"
          else
            echo "vfio-hookd: no PCI device $dev in ${sysfs}/bus/pci/devices, not holding it for a VM"
          fi
        done
        modprobe -i vfio-pci
      '';
}
