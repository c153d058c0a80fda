# A stand-in for the few pieces of nixpkgs nix/module.nix uses, in builtins
# only, for test/nix/module-smoke.nix: lib functions with nixpkgs' meaning,
# option declarations kept as plain data (so that a test can read every
# option's description, default and example), types as data a small checker
# understands, and packages as fake store paths. It is not the module
# system: no priorities, no type merging; test/nix/eval-module.nix is the
# real evaluation, where nixpkgs is at hand.
let
  inherit (builtins)
    attrNames
    concatMap
    listToAttrs
    match
    stringLength
    substring
    toJSON
    ;
  fakePackage = name: {
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    type = "derivation";
  };
  types = {
    str = {
      name = "str";
    };
    bool = {
      name = "bool";
    };
    package = {
      name = "package";
    };
    strMatching = re: {
      name = "strMatching";
      inherit re;
    };
    nullOr = elem: {
      name = "nullOr";
      inherit elem;
    };
    listOf = elem: {
      name = "listOf";
      inherit elem;
    };
    attrsOf = elem: {
      name = "attrsOf";
      inherit elem;
    };
    enum = values: {
      name = "enum";
      inherit values;
    };
    submodule = module: {
      name = "submodule";
      inherit module;
    };
  };
in
{
  lib = {
    inherit types;
    inherit (builtins)
      any
      attrValues
      concatMap
      concatStringsSep
      elem
      filter
      ;
    filterAttrs =
      pred: set:
      listToAttrs (
        concatMap (
          name:
          if pred name set.${name} then
            [
              {
                inherit name;
                value = set.${name};
              }
            ]
          else
            [ ]
        ) (attrNames set)
      );
    getExe' = pkg: exe: "${pkg}/bin/${exe}";
    hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
    literalExpression = text: {
      _type = "literalExpression";
      inherit text;
    };
    mapAttrsToList = f: set: map (name: f name set.${name}) (attrNames set);
    mkEnableOption = name: {
      _option = true;
      type = types.bool;
      default = false;
      example = true;
      description = "Whether to enable ${name}.";
    };
    mkIf = condition: content: {
      _type = "if";
      inherit condition content;
    };
    mkMerge = contents: {
      _type = "merge";
      inherit contents;
    };
    mkOption = attrs: attrs // { _option = true; };
    mkPackageOption = pkgs: name: extra: {
      _option = true;
      type = types.package;
      default = pkgs.${name};
      description = "The ${name} package to use. ${extra.extraDescription or ""}";
      example = extra.example or null;
    };
    optional = cond: x: if cond then [ x ] else [ ];
    optionalString = cond: s: if cond then s else "";
    strings.escapeNixIdentifier = s: if match "[a-zA-Z_][a-zA-Z0-9_'-]*" s != null then s else toJSON s;
  };

  pkgs = {
    formats.toml = _: {
      type = {
        name = "freeform";
      };
    };
    callPackage = _path: _args: fakePackage "vfio-hookd-0.1.0";
    looking-glass-client = fakePackage "looking-glass-client-B7";
    scream = fakePackage "scream-4.0";
    # Paths that follow the content, as the store's do.
    writeText = name: text: {
      inherit name text;
      outPath = "/nix/store/${substring 0 32 (builtins.hashString "sha256" text)}-${name}";
    };
    runCommand = name: _env: script: {
      inherit name script;
      outPath = "/nix/store/${substring 0 32 (builtins.hashString "sha256" script)}-${name}";
    };
  };
}
