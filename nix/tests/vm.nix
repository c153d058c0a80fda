# The NixOS VM test (nixos/tests style; flake.nix runs it with
# pkgs.testers.runNixOSTest as checks.<system>.vm): the module enabled the
# blog's way (runAsRoot = false), then
#   - vfio-hookd.service is active and answers `busctl introspect` on the
#     system bus, under its bus name and its dbus-org alias;
#   - libvirtd-config.service linked the hook into /var/lib/libvirt/hooks/qemu.d;
#   - the file in /etc is the rendered settings, and a changed file is
#     reloaded (SIGHUP through reloadTriggers is what switch does; here the
#     reload itself);
#   - a lifecycle through the linked hook on a simulated host: the test VM
#     has no RX 590, so a second daemon runs with --simulate reference-host
#     on a private bus (the demo's setup, service/demo.sh), and the installed
#     hook, pointed at it, takes 0b:00.0 to vfio-pci and gives it back;
#   - alex's user manager runs vfio-hookd-agent.
# It needs KVM and nixpkgs, which the CI here does not have: test/nix/run.sh
# reports it as skipped. Run it with `nix flake check` or
# `nix build .#checks.x86_64-linux.vm`.
{ pkgs, ... }:
let
  win10Xml = ../../test/fixtures/domains/win10.xml;
  privateBus = ../../units/private-bus.conf.in;
in
{
  name = "vfio-hookd";

  nodes.machine = {
    imports = [ ../module.nix ];
    virtualisation.memorySize = 2048;
    virtualisation.libvirtd = {
      enable = true;
      qemu.runAsRoot = false;
      onShutdown = "shutdown";
    };
    users.users.alex = {
      isNormalUser = true;
      uid = 1000;
      linger = true;
    };
    services.vfio-hookd = {
      enable = true;
      settings.vm.win10 = {
        devices = [ "0000:0b:00.0" ];
        user = "alex";
        looking-glass = {
          size = "32M";
          group = "qemu-libvirtd";
        };
        scream.group = "qemu-libvirtd";
      };
    };
    environment.systemPackages = [ pkgs.dbus ];
  };

  testScript =
    { nodes, ... }:
    let
      pkg = nodes.machine.services.vfio-hookd.package;
    in
    ''
      start_all()

      with subtest("the daemon is up and answers on the system bus"):
          machine.wait_for_unit("vfio-hookd.service")
          machine.succeed("busctl introspect org.vfiohookd1 /org/vfiohookd1 org.vfiohookd1.Manager")
          machine.succeed("systemctl show -p Names vfio-hookd.service | grep -q dbus-org.vfiohookd1.service")
          machine.succeed("test -e /etc/systemd/system/dbus-org.vfiohookd1.service")
          machine.succeed("grep -qx 'devices = \\[\"0000:0b:00.0\"\\]' /etc/vfio-hookd/vfio-hookd.toml")

      with subtest("libvirtd linked the hook"):
          machine.wait_for_unit("libvirtd.service")
          machine.wait_for_unit("libvirtd-config.service")
          machine.succeed(
              "test \"$(readlink -f /var/lib/libvirt/hooks/qemu.d/vfio-hookd)\" = "
              "\"$(readlink -f ${pkg}/libexec/vfio-hookd/vfio-hookd)\""
          )
          machine.succeed("test -x /var/lib/libvirt/hooks/qemu.d/vfio-hookd")

      with subtest("a reload keeps the daemon running"):
          machine.succeed("systemctl reload vfio-hookd.service")
          machine.succeed("systemctl is-active vfio-hookd.service")

      with subtest("a lifecycle through the linked hook, on a simulated host"):
          machine.succeed(
              "mkdir -p /tmp/sim /tmp/sim/run && "
              "sed -e 's|@SOCKET@|/tmp/sim/bus|' "
              "-e 's|@POLICY@|${pkg}/share/dbus-1/system.d/org.vfiohookd1.conf|' "
              "${privateBus} > /tmp/sim/bus.conf"
          )
          machine.succeed("systemd-run --unit sim-bus dbus-daemon --config-file=/tmp/sim/bus.conf --nofork --nopidfile")
          machine.wait_for_file("/tmp/sim/bus")
          machine.succeed(
              "printf '[vm.win10]\\ndevices = [\"0000:0b:00.0\"]\\nuser = \"alex\"\\n\\n"
              "[vm.win10.looking-glass]\\nsize = \"32M\"\\ngroup = \"qemu-libvirtd\"\\n\\n"
              "[vm.win10.scream]\\nsize = \"2M\"\\n' > /tmp/sim/vfio-hookd.toml"
          )
          machine.succeed(
              "systemd-run --unit sim-daemon ${pkg}/bin/vfio-hookd --simulate reference-host "
              "--sim-dir /tmp/sim/host --run-root /tmp/sim/run --config /tmp/sim/vfio-hookd.toml "
              "--bus-address unix:path=/tmp/sim/bus"
          )
          machine.wait_until_succeeds("busctl --address=unix:path=/tmp/sim/bus status org.vfiohookd1")
          machine.succeed(
              "sed -e 's|^BUS_ADDRESS=.*|BUS_ADDRESS=unix:path=/tmp/sim/bus|' "
              "-e 's|^RUNTIME=.*|RUNTIME=/tmp/sim/run/vfio-hookd|' "
              "/var/lib/libvirt/hooks/qemu.d/vfio-hookd > /tmp/sim/hook"
          )
          sim_devices = "${pkg}/bin/vfio-hookctl --simulate reference-host --sim-dir /tmp/sim/host devices"
          for step in ["prepare begin", "start begin", "started begin"]:
              machine.succeed(f"sh /tmp/sim/hook win10 {step} - < ${win10Xml}")
          machine.succeed(f"{sim_devices} | grep -E '^  0000:0b:00.0 .* vfio-pci$'")
          machine.succeed(f"{sim_devices} | grep -E '^  0000:0a:00.0 .* amdgpu$'")
          for step in ["stopped end", "release end"]:
              machine.succeed(f"sh /tmp/sim/hook win10 {step} - < ${win10Xml}")
          machine.succeed(f"{sim_devices} | grep -E '^  0000:0b:00.0 .* amdgpu$'")
          machine.succeed("systemctl stop sim-daemon sim-bus")

      with subtest("alex's manager runs the agent"):
          machine.wait_for_unit("user@1000.service")
          machine.wait_until_succeeds("systemctl --user -M alex@ is-active vfio-hookd-agent.service")
    '';

  meta.maintainers = [ ];
}
