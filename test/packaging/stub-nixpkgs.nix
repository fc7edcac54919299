# A tiny stand-in for the parts of nixpkgs that flake.nix, nix/package.nix and
# nix/module.nix use, written with builtins only, so that test/packaging can
# evaluate their logic (outputs, assertions, the unit they generate) on a
# machine without nixpkgs. It models values, not the module system: an
# option's value is its default unless the test gives one, and `mkIf` is
# kept as { _type = "if"; ... } for the test to read.
#
# This file must stay a model of nixpkgs' interfaces: when it and nixpkgs
# disagree, nixpkgs is right and this file is wrong.
{
  system ? "x86_64-linux",
}:
rec {
  isLinux = builtins.match ".*-linux" system != null;

  lib = rec {
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    optionalAttrs = c: a: if c then a else { };
    optionalString = c: s: if c then s else "";
    optional = c: x: if c then [ x ] else [ ];
    optionals = c: l: if c then l else [ ];
    concatMap = builtins.concatMap;
    escapeShellArg = a: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] (toString a) + "'";
    escapeShellArgs = l: builtins.concatStringsSep " " (map escapeShellArg l);
    hasPrefix = p: s: builtins.substring 0 (builtins.stringLength p) s == p;
    hasInfix = i: s: builtins.match ".*${escapeRegex i}.*" s != null;
    escapeRegex = builtins.replaceStrings [ "." "?" "*" "+" "(" ")" "[" "]" "{" "}" "|" "^" "$" "\\" ] [ "\\." "\\?" "\\*" "\\+" "\\(" "\\)" "\\[" "\\]" "\\{" "\\}" "\\|" "\\^" "\\$" "\\\\" ];
    splitString = sep: s: builtins.filter builtins.isString (builtins.split (escapeRegex sep) s);
    head = builtins.head;
    last = l: builtins.elemAt l (builtins.length l - 1);
    importJSON = p: builtins.fromJSON (builtins.readFile p);
    getExe = p: "${p}/bin/${p.meta.mainProgram or p.pname or "node"}";
    mkDefault = v: { _type = "override"; priority = 1000; content = v; };
    mkIf = condition: content: { _type = "if"; inherit condition content; };
    mkOption = o: o // { _type = "option"; };
    mkEnableOption = d: mkOption { default = false; description = d; };
    literalExpression = t: { _type = "literalExpression"; text = t; };
    licenses.mit = "mit";
    platforms = {
      linux = [ "x86_64-linux" "aarch64-linux" ];
      darwin = [ "x86_64-darwin" "aarch64-darwin" ];
    };
    types = rec {
      str = "str";
      int = "int";
      package = "package";
      nullOr = t: "nullOr ${t}";
      listOf = t: "listOf ${t}";
      enum = vs: { enum = vs; };
      ints.between = lo: hi: { between = [ lo hi ]; };
    };
    fileset = {
      toSource = { root, fileset }: { _type = "fileset-source"; inherit root fileset; };
      unions = l: l;
      maybeMissing = p: p;
    };
  };

  fakeDrv = name: extra: { type = "derivation"; inherit name; outPath = "/nix/store/00000000000000000000000000000000-${name}"; } // extra;

  pkgs = rec {
    inherit lib;
    stdenv.hostPlatform = { inherit system isLinux; isDarwin = !isLinux; };
    nodejs = fakeDrv "nodejs-22" { pname = "node"; };
    nodejs_22 = nodejs;
    python3 = fakeDrv "python3" { };
    nix = fakeDrv "nix" { };
    minio-client = fakeDrv "minio-client" { };
    nixfmt-rfc-style = fakeDrv "nixfmt" { };
    coreutils = fakeDrv "coreutils" { };
    util-linux = fakeDrv "util-linux" { };
    bzip2 = fakeDrv "bzip2" { };
    runtimeShell = "/nix/store/00000000000000000000000000000000-bash/bin/bash";
    narpush = fakeDrv "narpush-from-pkgs" { };
    mkShell = a: { _type = "mkShell"; } // a;
    writeText = name: text: fakeDrv name { inherit text; };
    writeScript = name: text: fakeDrv name { inherit text; };
    testers.runNixOSTest = t: { _type = "nixosTest"; } // t;
    importNpmLock = {
      __functor = _: a: { _type = "importNpmLock"; } // a;
      npmConfigHook = "npmConfigHook";
    };
    buildNpmPackage = a: fakeDrv "${a.pname}-${a.version}" { _args = a; };
    callPackage = f: over: import f ({ inherit lib stdenv buildNpmPackage importNpmLock nodejs python3; } // over);
  };

  nixpkgs = {
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" "x86_64-darwin" "aarch64-darwin" ] (
      s: (import ./stub-nixpkgs.nix { system = s; }).pkgs
    );
  };

  # Evaluate nix/module.nix for `settings` (what a user writes under
  # services.narpush): returns the resolved cfg and the module's config.
  evalModule =
    moduleFile: settings:
    let
      module = import moduleFile { inherit lib pkgs config; };
      options = module.options.services.narpush;
      # Options, and groups of options one level down (services.narpush.gc).
      isOption = o: (o._type or null) == "option";
      cfg = builtins.mapAttrs (
        n: o: if isOption o then settings.${n} or o.default else builtins.mapAttrs (n2: o2: (settings.${n} or { }).${n2} or o2.default) o
      ) options;
      config = {
        services.narpush = cfg;
        nix.settings = { };
      };
    in
    {
      inherit cfg options;
      config = module.config.content;
      enabled = module.config.condition;
    };
}
