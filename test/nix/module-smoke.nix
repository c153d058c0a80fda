# test/nix/run.sh's module smoke test, builtins only: nix/module.nix called
# with test/nix/stub-nixpkgs.nix's lib and pkgs and a hand-made NixOS config.
# What it shows without nixpkgs:
#   - every option has a description, a default and an example;
#   - every fixture's settings pass the module's own option types (its
#     regular expressions refuse nothing the daemon accepts);
#   - the blog's configuration passes every assertion, and its config wires
#     the hook, the alias, wantedBy, reloadTriggers, the dbus and systemd
#     packages, the agent, store paths for the user units, the initrd loop,
#     and a configuration file that is settings.nix's text checked by
#     `vfio-hookd --check-config`;
#   - a configuration with mistakes fails exactly the expected assertions
#     and warns as expected.
# Defaults are applied by a few lines below, not by the module system:
# test/nix/eval-module.nix is the real evaluation, where nixpkgs is at hand.
# Evaluates to "ok", or throws naming the first difference.
let
  inherit (builtins)
    all
    attrNames
    concatLists
    elem
    filter
    isAttrs
    isBool
    isList
    isString
    length
    listToAttrs
    map
    match
    toJSON
    ;
  stub = import ./stub-nixpkgs.nix;
  module = import ../../nix/module.nix;
  fixture = name: import (./fixtures + "/${name}.nix");

  isOption = v: isAttrs v && v ? _option;
  # The option tree of one submodule's (or the module's) options.
  subOptions = type: if type.name == "submodule" then type.module.options else null;
  innerSubmodule =
    type:
    if type.name == "submodule" then
      type
    else if elem type.name [
      "nullOr"
      "listOf"
      "attrsOf"
    ] then
      innerSubmodule type.elem
    else
      null;

  # Paths of options missing description, default or example.
  undocumented =
    prefix: options:
    concatLists (
      map (
        name:
        let
          o = options.${name};
          path = "${prefix}.${name}";
          sub = if isOption o then innerSubmodule o.type else null;
        in
        if isOption o then
          filter (x: x != null) (
            map (k: if o ? ${k} then null else "${path} (${k})") [
              "description"
              "default"
              "example"
            ]
          )
          ++ (if sub == null then [ ] else undocumented path (subOptions sub))
        else
          undocumented path o
      ) (attrNames options)
    );

  # Does VALUE pass TYPE? (freeform keys pass as they are.)
  passes =
    type: v:
    if type.name == "str" then
      isString v
    else if type.name == "bool" then
      isBool v
    else if type.name == "package" then
      isAttrs v
    else if type.name == "strMatching" then
      isString v && match type.re v != null
    else if type.name == "nullOr" then
      v == null || passes type.elem v
    else if type.name == "listOf" then
      isList v && all (passes type.elem) v
    else if type.name == "attrsOf" then
      isAttrs v && all (n: passes type.elem v.${n}) (attrNames v)
    else if type.name == "enum" then
      elem v type.values
    else if type.name == "submodule" then
      isAttrs v && all (n: !(type.module.options ? ${n}) || passes type.module.options.${n}.type v.${n}) (attrNames v)
    else
      true;

  # VALUE with every option's default where it gives none, at every depth.
  withDefaults =
    options: v:
    let
      own = listToAttrs (
        map (name: {
          inherit name;
          value =
            let
              o = options.${name};
            in
            if isOption o then withDefaultsOf o.type (if v ? ${name} then v.${name} else o.default) else withDefaults o (v.${name} or { });
        }) (attrNames options)
      );
    in
    v // own;
  withDefaultsOf =
    type: v:
    if v == null then
      null
    else if type.name == "submodule" then
      withDefaults type.module.options v
    else if type.name == "nullOr" then
      withDefaultsOf type.elem v
    else if type.name == "attrsOf" then
      listToAttrs (
        map (n: {
          name = n;
          value = withDefaultsOf type.elem v.${n};
        }) (attrNames v)
      )
    else
      v;

  # mkIf and mkMerge resolved, lists of merged definitions joined.
  resolve =
    v:
    if isAttrs v && (v._type or null) == "if" then
      (if v.condition then resolve v.content else { })
    else if isAttrs v && (v._type or null) == "merge" then
      builtins.foldl' merge { } (map resolve v.contents)
    else if isAttrs v && !(v ? outPath) then
      builtins.mapAttrs (_: resolve) v
    else
      v;
  merge =
    a: b:
    a
    // builtins.mapAttrs (
      n: bv:
      if !(a ? ${n}) then
        bv
      else if isList bv then
        a.${n} ++ bv
      else if isAttrs bv && !(bv ? outPath) then
        merge a.${n} bv
      else
        throw "module-smoke: '${n}' is defined twice"
    ) b;

  options = (module {
    config = { };
    inherit (stub) lib pkgs;
  }).options.services.vfio-hookd;

  # A NixOS config as the module reads it: only the options it looks at.
  system =
    {
      settings,
      users ? [ ],
      groups ? [ "qemu-libvirtd" ],
      runAsRoot ? false,
      kernelModules ? [ ],
      kernelParams ? [ ],
      initrdModules ? [ ],
      onShutdown ? "shutdown",
    }:
    let
      cfg = withDefaults options {
        enable = true;
        inherit settings;
      };
      config = {
        services.vfio-hookd = cfg;
        virtualisation.libvirtd = {
          enable = true;
          qemu.runAsRoot = runAsRoot;
          inherit onShutdown;
        };
        users.users = listToAttrs (map (name: {
          inherit name;
          value = { };
        }) users);
        users.groups = listToAttrs (map (name: {
          inherit name;
          value = { };
        }) groups);
        boot = {
          inherit kernelModules kernelParams;
          initrd.kernelModules = initrdModules;
          initrd.systemd.enable = false;
        };
        hardware.cpu.intel.updateMicrocode = false;
      };
    in
    {
      inherit cfg;
      out = resolve (module {
        inherit config;
        inherit (stub) lib pkgs;
      }).config;
    };

  failing = out: map (a: a.message) (filter (a: !a.assertion) out.assertions);
  expect =
    what: got: want:
    if got == want then true else throw "${what}: got ${toJSON got}, expected ${toJSON want}";

  blog = system {
    settings = fixture "win10";
    users = [ "alex" ];
  };
  good = blog.out;
  pkg = "/nix/store/00000000000000000000000000000000-vfio-hookd-0.1.0";
  etcFile = good.environment.etc."vfio-hookd/vfio-hookd.toml".source;
  rendered = import ../../nix/settings.nix blog.cfg.settings;

  bad =
    (system {
      settings.vm.win10 = {
        user = "bob";
        devices = [ "0000:0b:00.0" ];
        looking-glass = {
          size = "32M";
        };
        scream.group = "audio";
      };
      kernelModules = [ "kvm-intel" ];
      onShutdown = "suspend";
    }).out;
in
assert expect "options without description, default or example" (undocumented "services.vfio-hookd" options) [ ];
assert expect "fixtures refused by the module's own types" (filter (
  name: !(passes options.settings.type (fixture name))
) [ "win10" "readme" "every-option" "names" ]) [ ];
# Forms the daemon's parsers accept that the fixtures do not use.
assert expect "daemon-valid values refused by the module's types" (passes options.settings.type {
  daemon.qemu-user = "Qemu.User";
  vm."looking glass".devices = [
    "0B:00.0"
    "0000:0b:1f.7"
  ];
  vm.a = {
    user = "Alex.Smith";
    looking-glass = {
      size = "32MiB";
      name = "looking glass";
      mode = "660";
    };
    scream.size = "2097152";
  };
  vm.b.looking-glass.resolution = "1920X1080";
}) true;
assert expect "assertions of the blog's configuration" (failing good) [ ];
assert expect "warnings of the blog's configuration" good.warnings [ ];
assert expect "the hook" good.virtualisation.libvirtd.hooks.qemu.vfio-hookd "${pkg}/libexec/vfio-hookd/vfio-hookd";
assert expect "aliases" good.systemd.services.vfio-hookd.aliases [ "dbus-org.vfiohookd1.service" ];
assert expect "wantedBy" good.systemd.services.vfio-hookd.wantedBy [ "multi-user.target" ];
assert expect "before the display manager (hold = boot)" good.systemd.services.vfio-hookd.before [ "display-manager.service" ];
assert expect "reloadTriggers" (map toString good.systemd.services.vfio-hookd.reloadTriggers) [ (toString etcFile) ];
assert expect "systemd.packages" (map toString good.systemd.packages) [ pkg ];
assert expect "services.dbus.packages" (map toString good.services.dbus.packages) [ pkg ];
assert expect "the agent" good.systemd.user.services.vfio-hookd-agent.wantedBy [ "default.target" ];
assert expect "looking-glass-client@" good.systemd.user.services."looking-glass-client@".serviceConfig.ExecStart [
  ""
  "/nix/store/00000000000000000000000000000000-looking-glass-client-B7/bin/looking-glass-client -f /dev/shm/%i"
];
assert expect "scream-receiver@" good.systemd.user.services."scream-receiver@".serviceConfig.ExecStart [
  ""
  "/nix/store/00000000000000000000000000000000-scream-4.0/bin/scream -m /dev/shm/%i -o pulse"
];
assert expect "boot.kernelModules" good.boot.kernelModules [ "vfio-pci" ];
assert expect "boot.initrd.kernelModules" good.boot.initrd.kernelModules [ "vfio-pci" ];
assert expect "the initrd loop" good.boot.initrd.preDeviceCommands (import ../../nix/initrd-hold.nix { settings = blog.cfg.settings; }).commands;
assert expect "the loop's devices" (match ".*for dev in 0000:0b:00.0 0000:0b:00.1; do.*" good.boot.initrd.preDeviceCommands != null) true;
# /etc's file is the rendered text, copied once the daemon has accepted it.
assert expect "the checked file" etcFile.script ''
  ${pkg}/bin/vfio-hookd --check-config ${stub.pkgs.writeText "vfio-hookd.toml" rendered}
  cp ${stub.pkgs.writeText "vfio-hookd.toml" rendered} $out
'';
assert expect "qemu-user default" blog.cfg.settings.daemon.qemu-user "qemu-libvirtd";
assert expect "hold default" (withDefaults options { settings.vm.x = { }; }).settings.vm.x.hold "vm";
assert expect "assertions of a configuration with mistakes" (failing bad) [
  "services.vfio-hookd.settings.vm.win10.user is 'bob', which this configuration does not declare; add users.users.bob or give a numeric uid"
  "services.vfio-hookd.settings.vm.win10.looking-glass.group is unset, but QEMU runs as qemu-libvirtd (virtualisation.libvirtd.qemu.runAsRoot = false) and could not open the Looking Glass file; set it to a group qemu-libvirtd is in, such as \"qemu-libvirtd\""
  "services.vfio-hookd.settings.vm.win10.scream.group is 'audio', which this configuration does not declare; add users.groups.audio or give a numeric gid"
];
assert expect "warnings of a configuration with mistakes" (length bad.warnings) 2;
assert expect "no initrd loop without hold = boot" (bad.boot.initrd.preDeviceCommands or null) null;
"ok"
