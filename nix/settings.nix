# The daemon's configuration file (/etc/vfio-hookd/vfio-hookd.toml) from a
# settings attribute set shaped like it:
#
#   import ./settings.nix {
#     daemon.qemu-user = "qemu-libvirtd";
#     vm.win10 = { devices = [ "0000:0b:00.0" ]; scream = { }; };
#   }
#
# returns the TOML text. Builtins only, no nixpkgs: CI evaluates it with a bare
# `nix-instantiate --eval` on test/nix/fixtures and hands the result to
# `vfio-hookd --check-config`, so what the module writes is what the daemon
# was shown to accept. Attributes set to null are left out (the module's
# unset options, where the daemon's own default applies). An attribute set is
# a table ([vm.win10.scream]); an empty one is still written, since an empty
# [vm.NAME.scream] means "a Scream file with every default". Strings,
# booleans, integers, floats, paths, packages (their store path) and lists of
# those are values; anything else is refused with the key's path.
settings:
let
  inherit (builtins)
    attrNames
    concatLists
    concatStringsSep
    elem
    filter
    fromJSON
    genList
    isAttrs
    isBool
    isFloat
    isInt
    isList
    isPath
    isString
    listToAttrs
    map
    match
    replaceStrings
    substring
    throw
    toJSON
    toString
    typeOf
    ;

  hexDigit = n: substring n 1 "0123456789ABCDEF";
  # Nix has no escapes for most control characters, and TOML allows none of
  # them raw in a basic string: make each one from JSON and escape it as
  # \u00XX. (A Nix string cannot hold U+0000.)
  shortEscaped = [
    8
    9
    10
    12
    13
  ];
  controlCodes = filter (c: !(elem c shortEscaped)) (genList (i: i + 1) 31) ++ [ 127 ];
  uEscape = c: "\\u00${hexDigit (c / 16)}${hexDigit (c - c / 16 * 16)}";
  rawChar = c: fromJSON "\"${uEscape c}\"";
  escapeFrom = [
    "\\"
    "\""
    (rawChar 8)
    "\t"
    "\n"
    (rawChar 12)
    "\r"
  ] ++ map rawChar controlCodes;
  escapeTo = [
    "\\\\"
    "\\\""
    "\\b"
    "\\t"
    "\\n"
    "\\f"
    "\\r"
  ] ++ map uEscape controlCodes;
  quote = s: "\"${replaceStrings escapeFrom escapeTo s}\"";

  # A bare key where TOML allows one (A-Za-z0-9_-), else a quoted key: [vm."Windows 10"].
  key = k: if match "[A-Za-z0-9_-]+" k != null then k else quote k;
  dotted = path: concatStringsSep "." (map key path);

  isPackage = v: isAttrs v && v ? outPath;
  isTable = v: isAttrs v && !(isPackage v);

  refuse =
    path: v:
    throw "vfio-hookd settings: '${dotted path}' is ${
      if isAttrs v then "a table" else "a ${typeOf v}"
    } where a TOML value is expected (a string, boolean, integer, float, path, package or a list of those), refusing";

  # TOML has no bare "1" float: keep a float a float.
  float =
    f:
    let
      s = toJSON f;
    in
    if match ".*[.eEn].*" s != null then s else "${s}.0";

  value =
    path: v:
    if isString v then
      quote v
    else if isBool v then
      (if v then "true" else "false")
    else if isInt v then
      toString v
    else if isFloat v then
      float v
    else if isPath v then
      quote (toString v)
    else if isPackage v then
      quote (toString v.outPath)
    else if isList v then
      # An element that is a table (or null) is refused by value itself.
      "[${concatStringsSep ", " (map (value path) v)}]"
    else
      refuse path v;

  # Nulls out, at every depth: an unset option is a key not written.
  clean =
    attrs:
    listToAttrs (
      map (n: {
        name = n;
        value = if isTable attrs.${n} then clean attrs.${n} else attrs.${n};
      }) (filter (n: attrs.${n} != null) (attrNames attrs))
    );

  # The lines of one table: its header (left out when the table holds only
  # tables: TOML defines [vm] by [vm.win10]), its values, then its tables.
  table =
    path: attrs:
    let
      names = attrNames attrs;
      subtables = filter (n: isTable attrs.${n}) names;
      values = filter (n: !(isTable attrs.${n})) names;
      header =
        if path != [ ] && (values != [ ] || subtables == [ ]) then
          [
            ""
            "[${dotted path}]"
          ]
        else
          [ ];
    in
    header
    ++ map (n: "${key n} = ${value (path ++ [ n ]) attrs.${n}}") values
    ++ concatLists (map (n: table (path ++ [ n ]) attrs.${n}) subtables);

  checked = if isTable settings then clean settings else refuse [ "settings" ] settings;
in
concatStringsSep "\n" (
  [
    "# vfio-hookd.toml, generated from services.vfio-hookd.settings: change that option, not this file."
  ]
  ++ table [ ] checked
)
+ "\n"
