{
  description = "vfio-hookd: VFIO GPU passthrough around libvirt VMs, with Looking Glass and Scream files";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forEachSystem = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forEachSystem (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { };
      });

      # The module's package defaults to nix/package.nix built with the
      # system's own nixpkgs; this flake's build is the same derivation.
      nixosModules.default = ./nix/module.nix;

      checks = forEachSystem (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        # The NixOS VM test: needs KVM (nix flake check on a Linux machine).
        vm = pkgs.testers.runNixOSTest ./nix/tests/vm.nix;
        # What test/nix/run.sh checks without nixpkgs, in the sandbox too:
        # each fixture rendered and accepted by the daemon's --check-config.
        settings =
          pkgs.runCommand "vfio-hookd-settings-check"
            { nativeBuildInputs = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ]; }
            ''
              ${nixpkgs.lib.concatMapStrings (
                name:
                let
                  file = pkgs.writeText "${name}.toml" (
                    import ./nix/settings.nix (import (./test/nix/fixtures + "/${name}.nix"))
                  );
                in
                ''
                  vfio-hookd --check-config ${file}
                ''
              ) [ "win10" "readme" "every-option" "names" ]}
              touch $out
            '';
      });

      formatter = forEachSystem (pkgs: pkgs.nixfmt-rfc-style);
    };
}
