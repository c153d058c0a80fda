# vfio-hookd as a Nix package: the daemon, the agent and vfio-hookctl built
# with their npm dependencies, laid out by `install.sh --layout $out` (the
# same list of files the Debian-style install uses):
#
#   $out/bin/{vfio-hookd,vfio-hookctl}          sh wrappers running node 20 from the store
#   $out/lib/vfio-hookd/                        the built app and its production node_modules
#   $out/lib/systemd/system/vfio-hookd.service  for systemd.packages (store paths filled in)
#   $out/lib/systemd/user/*.service             the agent, looking-glass-client@, scream-receiver@
#   $out/share/dbus-1/{system.d,system-services}/  for services.dbus.packages
#   $out/libexec/vfio-hookd/vfio-hookd          the libvirt hook, busctl as a store path
#
# importNpmLock reads package-lock.json at evaluation and fetches each
# tarball by the lock's own integrity hash: there is no dependency hash to
# keep by hand. Every store path here is a reference of the output, so a
# garbage collection cannot take node or busctl from under the hook.
{
  lib,
  buildNpmPackage,
  importNpmLock,
  nodejs_20,
  python3,
  coreutils,
  systemd,
}:
let
  packageJson = lib.importJSON ../package.json;
  # tsc compiles test/**/*.ts as well (tsconfig.json); only the sources go in.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../package.json
      ../package-lock.json
      ../tsconfig.json
      ../README.md
      ../install.sh
      ../hooks
      ../lib
      ../service
      ../units
      (lib.fileset.fileFilter (file: file.hasExt "ts") ../test)
    ];
  };
  # The hook that runs npm: built with node 20's headers, so the native
  # modules (unix-dgram, usocket) match the node they run under.
  npmConfigHook = (importNpmLock.npmConfigHook.override or (_: importNpmLock.npmConfigHook)) {
    nodejs = nodejs_20;
  };
in
buildNpmPackage {
  pname = packageJson.name;
  inherit (packageJson) version;
  inherit src npmConfigHook;
  nodejs = nodejs_20;
  # The lock names registry tarballs only (no file: dependencies), so no npmRoot.
  npmDeps = importNpmLock {
    package = packageJson;
    packageLock = lib.importJSON ../package-lock.json;
  };
  # node-gyp builds unix-dgram and usocket.
  nativeBuildInputs = [ python3 ];
  npmBuildScript = "build";

  installPhase = ''
    runHook preInstall
    # Production dependencies only (the config hook installed dev ones for tsc).
    npm prune --omit=dev --no-save
    # The config hook swapped in a package.json naming store paths; the
    # installed app gets the original.
    if [ -f .package.json.orig ]; then
      cp --no-preserve=mode .package.json.orig package.json
      cp --no-preserve=mode .package-lock.json.orig package-lock.json
    fi
    bash ./install.sh --layout "$out" --prebuilt \
      --node ${lib.getExe nodejs_20} --busctl ${lib.getExe' systemd "busctl"}

    # Absolute paths NixOS does not have.
    substituteInPlace "$out/share/dbus-1/system-services/org.vfiohookd1.service" \
      --replace-fail "Exec=/bin/false" "Exec=${lib.getExe' coreutils "false"}"
    # libvirtd hands its hooks a short PATH; the hook's cat, mkdir, mktemp,
    # rm and tr come from the store first.
    sed -i '1a PATH=${lib.makeBinPath [ coreutils ]}''${PATH:+:$PATH}; export PATH' \
      "$out/libexec/vfio-hookd/vfio-hookd"
    runHook postInstall
  '';

  # The units and the hook must name this package's own store paths.
  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    node=$(readlink -f ${lib.getExe nodejs_20})
    grep -qx "ExecStart=$node --lite-mode --no-expose-wasm --max-semi-space-size=1 --max-old-space-size=48 --single-threaded $out/lib/vfio-hookd/dist/bin/vfio-hookd.js" \
      "$out/lib/systemd/system/vfio-hookd.service"
    busctl=$(readlink -f ${lib.getExe' systemd "busctl"})
    grep -qx "BUSCTL='$busctl'" "$out/libexec/vfio-hookd/vfio-hookd"
    grep -qx "ExecReload=$busctl --system --timeout=90 call org.vfiohookd1 /org/vfiohookd1 org.vfiohookd1.Manager Reload" \
      "$out/lib/systemd/system/vfio-hookd.service"
    if grep -rn '=/bin/kill\|=/bin/false' "$out/lib/systemd" "$out/share/dbus-1"; then
      echo "vfio-hookd: a unit still names a path NixOS does not have" >&2
      exit 1
    fi
    "$out/bin/vfio-hookctl" --help >/dev/null
    runHook postInstallCheck
  '';

  passthru.settingsToToml = import ./settings.nix;

  meta = {
    description = "VFIO GPU passthrough host service: rebinds devices around libvirt VMs, Looking Glass and Scream shm files";
    license = lib.licenses.mit;
    mainProgram = "vfio-hookctl";
    platforms = lib.platforms.linux;
  };
}
