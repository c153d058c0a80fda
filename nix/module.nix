# services.vfio-hookd: the NixOS module. What it wires, and why each piece
# (facts read from nixpkgs; docs/architecture.md has the daemon's side):
#
# - systemd.packages ignores [Install]: wantedBy and the bus activation
#   alias (dbus-org.vfiohookd1.service) are set here, or activation points
#   at nothing.
# - NixOS's dbus reads policy and activation files only from
#   services.dbus.packages, never /etc/dbus-1/system.d.
# - libvirtd-config.service empties /var/lib/libvirt/hooks/qemu.d at every
#   libvirtd start and links virtualisation.libvirtd.hooks.qemu.<name>: the
#   hook goes there.
# - `nixos-rebuild switch` changes /etc/static, not the link
#   /etc/vfio-hookd/vfio-hookd.toml the daemon watches: reloadTriggers.
# - QEMU runs as root unless virtualisation.libvirtd.qemu.runAsRoot = false,
#   then as qemu-libvirtd: the shm files then need a group it is in.
# - The settings are rendered by ./settings.nix and checked at build time by
#   `vfio-hookd --check-config`: a mistake fails nixos-rebuild, with its
#   line and column, instead of a VM start.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    attrValues
    concatMap
    concatStringsSep
    elem
    filter
    filterAttrs
    getExe'
    hasPrefix
    literalExpression
    mapAttrsToList
    mkEnableOption
    mkIf
    mkMerge
    mkOption
    mkPackageOption
    optional
    types
    ;

  cfg = config.services.vfio-hookd;
  libvirtd = config.virtualisation.libvirtd;
  qemuAsRoot = libvirtd.qemu.runAsRoot;
  # Keys the module does not type (a later daemon's) still reach the file.
  freeform = (pkgs.formats.toml { }).type;

  # The types say what the daemon's parser accepts, never less (its
  # --check-config judges the rest when the system is built): lib/pci/address.ts,
  # lib/shm/accounts.ts, lib/config/file-mode.ts, lib/shm/size.ts.
  pciAddress = types.strMatching "([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[01][0-9a-fA-F]\\.[0-7]";
  accountName = types.strMatching "[^-:/[:space:]][^:/[:space:]]*";
  fileMode = types.strMatching "[0-7]{3,4}";
  shmSize = types.strMatching "[0-9]+([kKmMgG]([iI][bB])?)?";

  shmOptions = what: defaultName: {
    name = mkOption {
      type = types.strMatching "[^/]+";
      default = defaultName;
      example = "${defaultName}-win10";
      description = "The file `/dev/shm/<name>`; it must match the domain's `<shmem name=...>`.";
    };
    group = mkOption {
      type = types.nullOr accountName;
      default = null;
      example = "qemu-libvirtd";
      description = ''
        Group of the ${what} file (a name or a numeric gid). QEMU's user must be in it to
        open the file when QEMU does not run as root (`virtualisation.libvirtd.qemu.runAsRoot = false`).
        `null`: the owner's primary group${lib.optionalString (what == "Scream") ", or the Looking Glass file's group when the VM has one"}.
      '';
    };
    mode = mkOption {
      type = fileMode;
      default = "0660";
      example = "0640";
      description = ''
        Permission bits of the ${what} file, octal. Write for others and any execute bit are refused
        by the daemon; read for others is accepted with a warning.
      '';
    };
  };

  lookingGlassModule = {
    freeformType = freeform;
    options = shmOptions "Looking Glass" "looking-glass" // {
      size = mkOption {
        type = types.nullOr shmSize;
        default = null;
        example = "32M";
        description = "Size of the file, a power of two of at least 1M. Give this or `resolution`, not both.";
      };
      resolution = mkOption {
        type = types.nullOr (types.strMatching "[0-9]+[xX][0-9]+");
        default = null;
        example = "2560x1440";
        description = "The guest's largest resolution; the size follows (1080p 32M, 1440p 64M, 4K 128M). Give this or `size`.";
      };
      hdr = mkOption {
        type = types.bool;
        default = false;
        example = true;
        description = "With `resolution`: the guest uses HDR, which needs twice the memory.";
      };
    };
  };

  screamModule = {
    freeformType = freeform;
    options = shmOptions "Scream" "scream" // {
      size = mkOption {
        type = shmSize;
        default = "2M";
        example = "4M";
        description = "Size of the Scream file, a power of two of at least 1M.";
      };
    };
  };

  vmModule = {
    freeformType = freeform;
    options = {
      devices = mkOption {
        type = types.listOf pciAddress;
        default = [ ];
        example = [
          "0000:0b:00.0"
          "0000:0b:00.1"
        ];
        description = ''
          PCI addresses (`lspci -D`, or the short `0b:00.0`) the VM takes from the host: moved to
          vfio-pci while it runs, the rest of each device's IOMMU group with them. A device belongs
          to one VM. The domain's `<hostdev managed='no'>` devices are added when it starts.
        '';
      };
      hold = mkOption {
        type = types.enum [
          "vm"
          "boot"
        ];
        default = "vm";
        example = "boot";
        description = ''
          `"vm"`: the devices serve the host while the VM is off. `"boot"`: they never touch a host
          driver: the initrd sets their driver_override to vfio-pci (list every function, such as
          the card's HDMI audio), the daemon takes them at its start and never gives them back.
        '';
      };
      user = mkOption {
        type = types.nullOr accountName;
        default = null;
        example = "alex";
        description = ''
          Owner of the VM's shm files and whose agent starts `units` (a name declared in
          `users.users`, or a numeric uid). `null`: root owns the files.
        '';
      };
      units = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [
          "looking-glass-client@looking-glass.service"
          "scream-receiver@scream.service"
        ];
        description = "User units `user`'s agent starts with the VM and stops after it.";
      };
      looking-glass = mkOption {
        type = types.nullOr (types.submodule lookingGlassModule);
        default = null;
        example = {
          size = "32M";
          group = "qemu-libvirtd";
        };
        description = "The Looking Glass shm file; `null` for none.";
      };
      scream = mkOption {
        type = types.nullOr (types.submodule screamModule);
        default = null;
        example = {
          group = "qemu-libvirtd";
        };
        description = "The Scream shm file; `null` for none, `{ }` for one with every default.";
      };
    };
  };

  vms = cfg.settings.vm;
  settingsToToml = import ./settings.nix;
  hold = import ./initrd-hold.nix { inherit (cfg) settings; };

  # The rendered file, judged by the daemon itself when the system is built.
  renderedFile = pkgs.writeText "vfio-hookd.toml" (settingsToToml cfg.settings);
  configFile =
    if cfg.checkConfig then
      pkgs.runCommand "vfio-hookd.toml" { } ''
        ${getExe' cfg.package "vfio-hookd"} --check-config ${renderedFile}
        cp ${renderedFile} $out
      ''
    else
      renderedFile;

  usesUnit =
    prefix: kind:
    lib.any (vm: vm.${kind} != null || lib.any (hasPrefix prefix) vm.units) (attrValues vms);
  usesLookingGlass = usesUnit "looking-glass-client@" "looking-glass";
  usesScream = usesUnit "scream-receiver@" "scream";

  isUid = s: builtins.match "[0-9]+" s != null;
  opt = name: "services.vfio-hookd.settings.vm.${lib.strings.escapeNixIdentifier name}";

  userAssertions = mapAttrsToList (name: vm: {
    assertion = vm.user == null || isUid vm.user || config.users.users ? ${vm.user};
    message = "${opt name}.user is '${toString vm.user}', which this configuration does not declare; add users.users.${toString vm.user} or give a numeric uid";
  }) vms;

  groupDeclared = g: g == null || isUid g || config.users.groups ? ${g};
  groupAssertions = concatMap (
    name:
    let
      vm = vms.${name};
      lg = vm.looking-glass;
      sc = vm.scream;
      lgGroup = if lg == null then null else lg.group;
      scGroup = if sc == null then null else if sc.group != null then sc.group else lgGroup;
      need = what: path: group: {
        assertion = qemuAsRoot || group != null;
        message = "${opt name}.${path}.group is unset, but QEMU runs as qemu-libvirtd (virtualisation.libvirtd.qemu.runAsRoot = false) and could not open the ${what} file; set it to a group qemu-libvirtd is in, such as \"qemu-libvirtd\"";
      };
      declared = path: group: {
        assertion = groupDeclared group;
        message = "${opt name}.${path}.group is '${toString group}', which this configuration does not declare; add users.groups.${toString group} or give a numeric gid";
      };
    in
    optional (lg != null) (need "Looking Glass" "looking-glass" lgGroup)
    ++ optional (lg != null) (declared "looking-glass" lgGroup)
    ++ optional (sc != null) (need "Scream" "scream" scGroup)
    ++ optional (sc != null) (declared "scream" sc.group)
  ) (builtins.attrNames vms);

  kernelParams = config.boot.kernelParams;
  intelHost = elem "kvm-intel" config.boot.kernelModules || config.hardware.cpu.intel.updateMicrocode;
  intelIommuOn = lib.any (p: p == "intel_iommu=on" || hasPrefix "intel_iommu=on," p) kernelParams;
  earlyGpuDrivers = filter (m: elem m config.boot.initrd.kernelModules) [
    "amdgpu"
    "radeon"
    "nouveau"
    "nvidia"
    "i915"
    "xe"
  ];
  vmsWithDevices = filterAttrs (_: vm: vm.devices != [ ]) vms;
in
{
  options.services.vfio-hookd = {
    enable = mkEnableOption "vfio-hookd, which moves a VM's GPU between its host driver and vfio-pci around libvirt's lifecycle and makes its Looking Glass and Scream files";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ./package.nix { };
      defaultText = literalExpression "pkgs.callPackage ./nix/package.nix { } (this repository's package)";
      example = literalExpression "inputs.vfio-hookd.packages.\${pkgs.system}.default";
      description = "The vfio-hookd package: daemon, agent, vfio-hookctl, units, bus files and the libvirt hook.";
    };

    settings = mkOption {
      type = types.submodule {
        freeformType = freeform;
        options = {
          daemon = mkOption {
            type = types.submodule {
              freeformType = freeform;
              options = {
                qemu-user = mkOption {
                  type = types.nullOr accountName;
                  default = "qemu-libvirtd";
                  example = "root";
                  description = ''
                    The user QEMU runs as: an existing shm file it owns is adopted (QEMU creates a missing
                    file as itself). NixOS's is qemu-libvirtd (`virtualisation.libvirtd.qemu.runAsRoot = false`).
                    `null`: the daemon trusts each of libvirt-qemu, qemu and qemu-libvirtd that exists.
                  '';
                };
                write-timeout = mkOption {
                  type = types.nullOr (types.strMatching "[0-9]+(ms|s|m|h)");
                  default = null;
                  example = "30s";
                  description = "How long one sysfs write may take before it counts as hung (100ms to 10m). `null`: the daemon's 10s.";
                };
              };
            };
            default = { };
            example = {
              qemu-user = "qemu-libvirtd";
            };
            description = "The `[daemon]` table.";
          };
          vm = mkOption {
            type = types.attrsOf (types.submodule vmModule);
            default = { };
            example = literalExpression ''
              {
                win10 = {
                  devices = [ "0000:0b:00.0" "0000:0b:00.1" ];
                  hold = "boot";
                  user = "alex";
                  units = [ "looking-glass-client@looking-glass.service" "scream-receiver@scream.service" ];
                  looking-glass = { size = "32M"; group = "qemu-libvirtd"; };
                  scream = { group = "qemu-libvirtd"; };
                };
              }
            '';
            description = "One table per libvirt domain, by the name `virsh list --all` shows.";
          };
        };
      };
      default = { };
      example = literalExpression ''{ vm.win10 = { devices = [ "0000:0b:00.0" ]; user = "alex"; scream = { }; }; }'';
      description = ''
        /etc/vfio-hookd/vfio-hookd.toml as Nix (README.md's configuration section has every key).
        Unset (null) options are left out of the file; keys this module does not know are written
        as they are, and the daemon judges them when the system is built.
      '';
    };

    checkConfig = mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = "Check the rendered file with `vfio-hookd --check-config` when the system is built; a mistake fails the build with its line and column.";
    };

    agent.enable = mkOption {
      type = types.bool;
      default = true;
      example = false;
      description = "Start vfio-hookd-agent in every user's systemd manager: it starts and stops the units of that user's running VMs.";
    };

    lookingGlassClientPackage = mkPackageOption pkgs "looking-glass-client" {
      example = "looking-glass-client";
      extraDescription = "It runs in `looking-glass-client@.service`, used only when a VM has `looking-glass` or such a unit; it must match the guest's Looking Glass host version.";
    };
    screamPackage = mkPackageOption pkgs "scream" {
      example = "scream";
      extraDescription = "It runs in `scream-receiver@.service`, used only when a VM has `scream` or such a unit.";
    };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      assertions = [
        {
          assertion = libvirtd.enable;
          message = "services.vfio-hookd.enable needs virtualisation.libvirtd.enable = true: vfio-hookd is driven by libvirtd's qemu hook";
        }
        {
          assertion = hold.devices == [ ] || !config.boot.initrd.systemd.enable;
          message = "hold = \"boot\" (for ${concatStringsSep ", " hold.devices}) uses boot.initrd.preDeviceCommands, which the systemd initrd (boot.initrd.systemd.enable) does not run; use hold = \"vm\" or the scripted initrd";
        }
      ]
      ++ userAssertions
      ++ groupAssertions;

      warnings =
        optional (intelHost && !intelIommuOn) "services.vfio-hookd: this looks like an Intel host (kvm-intel or Intel microcode) and boot.kernelParams has no intel_iommu=on; unless your kernel turns the IOMMU on by default, there are no IOMMU groups and vfio-pci cannot take a device: add boot.kernelParams = [ \"intel_iommu=on\" ]"
        ++ optional (hold.devices != [ ] && earlyGpuDrivers != [ ]) "services.vfio-hookd: boot.initrd.kernelModules loads ${concatStringsSep ", " earlyGpuDrivers} before the hold = \"boot\" loop runs, so it may bind ${concatStringsSep ", " hold.devices} first; load it later (boot.kernelModules)"
        ++ optional (vmsWithDevices != { } && libvirtd.onShutdown == "suspend") "services.vfio-hookd: virtualisation.libvirtd.onShutdown is \"suspend\", and a VM with a passed-through device cannot be saved; set it to \"shutdown\"";

      environment.etc."vfio-hookd/vfio-hookd.toml".source = configFile;
      environment.systemPackages = [ cfg.package ];

      systemd.packages = [ cfg.package ];
      systemd.services.vfio-hookd = {
        wantedBy = [ "multi-user.target" ];
        aliases = [ "dbus-org.vfiohookd1.service" ];
        # A rebuild changes the file behind the link the daemon watches: reload it (ExecReload calls Reload()).
        reloadTriggers = [ configFile ];
        # hold = "boot": the daemon takes those devices at its start, before a display server could.
        before = optional (hold.devices != [ ]) "display-manager.service";
      };
      services.dbus.packages = [ cfg.package ];
      virtualisation.libvirtd.hooks.qemu.vfio-hookd = "${cfg.package}/libexec/vfio-hookd/vfio-hookd";
      systemd.user.services.vfio-hookd-agent.wantedBy = mkIf cfg.agent.enable [ "default.target" ];

      boot.kernelModules = [ "vfio-pci" ];
    }
    # The user units name their programs bare; here they get store paths.
    (mkIf usesLookingGlass {
      systemd.user.services."looking-glass-client@".serviceConfig.ExecStart = [
        ""
        "${getExe' cfg.lookingGlassClientPackage "looking-glass-client"} -f /dev/shm/%i"
      ];
    })
    (mkIf usesScream {
      systemd.user.services."scream-receiver@".serviceConfig.ExecStart = [
        ""
        "${getExe' cfg.screamPackage "scream"} -m /dev/shm/%i -o pulse"
      ];
    })
    (mkIf (hold.devices != [ ]) {
      boot.initrd.kernelModules = [ "vfio-pci" ];
      boot.initrd.preDeviceCommands = hold.commands;
    })
  ]);

  meta.maintainers = [ ];
}
