# narpush, built from package-lock.json with nixpkgs' buildNpmPackage.
#
# Dependencies come from the lockfile's `integrity` fields through
# importNpmLock, so there is no npmDepsHash to keep up to date. One twist:
# this project's lockfile has no `resolved` URLs (it is written with npm's
# omit-lockfile-registry-resolved), and both importNpmLock and fetchNpmDeps
# silently skip entries without one. `npmLockWithResolved` (nix/lib.nix)
# puts the registry URL back: for a registry package it is a pure function
# of name and version, and the integrity hash still pins the exact bytes.
#
# The native addons are compiled here, never taken prebuilt: zstd-napi from
# its bundled zstd sources, lzma-native from its bundled xz sources (the
# glibc-linked prebuilds in its tarball are deleted). bin/narpush and
# bin/narpush-hook are wrapped with the Node they were built for.
{
  lib,
  stdenv,
  buildNpmPackage,
  importNpmLock,
  nodejs,
  python3,
}:

let
  root = ../.;
  packageJSON = lib.importJSON (root + "/package.json");
  lock = lib.importJSON (root + "/package-lock.json");

  # nix/lib.nix explains why the lockfile needs its `resolved` URLs back.
  withResolved = (import ./lib.nix).npmLockWithResolved lock;

  npmDeps = importNpmLock {
    package = packageJSON;
    packageLock = withResolved;
  };
in
buildNpmPackage {
  pname = packageJSON.name;
  inherit (packageJSON) version;

  src = lib.fileset.toSource {
    inherit root;
    # tsconfig.json compiles src/, test/ and bench/ together.
    fileset = lib.fileset.unions [
      (root + "/package.json")
      (root + "/package-lock.json")
      (root + "/tsconfig.json")
      (root + "/bin")
      (root + "/src")
      (root + "/test")
      (lib.fileset.maybeMissing (root + "/bench"))
      (root + "/scripts")
    ];
  };

  inherit nodejs npmDeps;
  npmConfigHook = importNpmLock.npmConfigHook;

  # node-gyp (zstd-napi, lzma-native) needs Python; make and a C/C++
  # compiler come with stdenv.
  nativeBuildInputs = [ python3 ];

  # On Linux, build both addons from source rather than let node-gyp-build
  # pick lzma-native's prebuilt glibc binary (zstd-napi's prebuild-install
  # cannot download in the sandbox and falls back to node-gyp anyway). On
  # macOS lzma-native's source build runs BSD-only sed, so its prebuild
  # (linked to system libraries only) is used there.
  # CFLAGS: lzma-native's build script replaces CFLAGS with "-fPIC", which
  # compiles its liblzma at -O0 (2-3x slower; scripts/build-lzma.mjs has the
  # figures). The flag is passed through to liblzma's configure.
  env = lib.optionalAttrs stdenv.hostPlatform.isLinux {
    npm_config_build_from_source = "true";
    CFLAGS = "-O2";
  };

  # `npm run build` is tsc and the esbuild bundle bin/narpush loads; `npm
  # pack` (which decides what is installed) would run the `prepare` script,
  # i.e. both, a second time.
  npmPackFlags = [ "--ignore-scripts" ];

  postInstall = lib.optionalString stdenv.hostPlatform.isLinux ''
    lzma=$out/lib/node_modules/narpush/node_modules/lzma-native
    rm -rf "$lzma/prebuilds" "$lzma/deps/bin_i686" "$lzma/deps/bin_x86-64"
  '';

  doInstallCheck = true;
  installCheckPhase = ''
    runHook preInstallCheck
    $out/bin/narpush --version
    $out/bin/narpush --help | grep -q upload-path
    # Both addons load, from the build above.
    (cd $out/lib/node_modules/narpush && ${lib.getExe nodejs} -e "require('zstd-napi'); require('lzma-native')")
    # The hook never fails a build, even with nothing to do.
    env -i $out/bin/narpush-hook
    runHook postInstallCheck
  '';

  passthru = {
    # For nix/tests/test-suite.nix, which needs the development dependencies too.
    inherit nodejs npmDeps;
    inherit (importNpmLock) npmConfigHook;
  };

  meta = {
    description = packageJSON.description;
    license = lib.licenses.mit;
    mainProgram = "narpush";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
