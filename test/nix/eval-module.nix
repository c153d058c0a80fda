# test/nix/run.sh's module check, run only where NIX_PATH has nixpkgs (CI
# here has none): nix/module.nix in a NixOS configuration with the blog's
# win10 (test/nix/fixtures/win10.nix), and the wiring the issue names read
# back; then a configuration with mistakes, whose assertion messages must be
# exactly these. Evaluates, builds nothing (checkConfig = false: the daemon's
# check is test/nix/run.sh's own).
{
  nixpkgs ? <nixpkgs>,
  system ? "x86_64-linux",
}:
let
  evalWith =
    extra:
    (import (nixpkgs + "/nixos/lib/eval-config.nix") {
      inherit system;
      modules = [
        ../../nix/module.nix
        {
          boot.loader.grub.enable = false;
          fileSystems."/".device = "/dev/null";
          system.stateVersion = "24.11";
          virtualisation.libvirtd.enable = true;
          virtualisation.libvirtd.qemu.runAsRoot = false;
          services.vfio-hookd.enable = true;
          services.vfio-hookd.checkConfig = false;
        }
        extra
      ];
    }).config;

  good = evalWith {
    users.users.alex.isNormalUser = true;
    services.vfio-hookd.settings = import ./fixtures/win10.nix;
  };
  failing = c: map (a: a.message) (builtins.filter (a: !a.assertion) c.assertions);
  expect =
    what: got: want:
    if got == want then true else throw "${what}: got ${builtins.toJSON got}, expected ${builtins.toJSON want}";

  bad = evalWith {
    services.vfio-hookd.settings.vm.win10 = {
      user = "bob";
      looking-glass.size = "32M";
    };
  };
  pkg = good.services.vfio-hookd.package;
in
assert expect "assertions of the blog's configuration" (failing good) [ ];
assert expect "the hook" good.virtualisation.libvirtd.hooks.qemu.vfio-hookd "${pkg}/libexec/vfio-hookd/vfio-hookd";
assert expect "aliases" good.systemd.services.vfio-hookd.aliases [ "dbus-org.vfiohookd1.service" ];
assert expect "wantedBy" good.systemd.services.vfio-hookd.wantedBy [ "multi-user.target" ];
assert expect "systemd.packages" (builtins.elem pkg good.systemd.packages) true;
assert expect "services.dbus.packages" (builtins.elem pkg good.services.dbus.packages) true;
assert expect "the agent" good.systemd.user.services.vfio-hookd-agent.wantedBy [ "default.target" ];
assert expect "vfio-pci in the initrd" (builtins.elem "vfio-pci" good.boot.initrd.kernelModules) true;
assert expect "the initrd loop" (builtins.match ".*for dev in 0000:0b:00.0 0000:0b:00.1; do.*" good.boot.initrd.preDeviceCommands != null) true;
assert expect "the rendered file" (builtins.length good.systemd.services.vfio-hookd.reloadTriggers) 1;
assert expect "assertions of a configuration with mistakes" (failing bad) [
  "services.vfio-hookd.settings.vm.win10.user is 'bob', which this configuration does not declare; add users.users.bob or give a numeric uid"
  "services.vfio-hookd.settings.vm.win10.looking-glass.group is unset, but QEMU runs as qemu-libvirtd (virtualisation.libvirtd.qemu.runAsRoot = false) and could not open the Looking Glass file; set it to a group qemu-libvirtd is in, such as \"qemu-libvirtd\""
];
"ok"
