# The project's own test suite (`npm test`), as a flake check.
#
# It cannot run in the build sandbox: the tests build derivations with the
# real Nix (a writable /nix/store and a Nix daemon) and their fixtures run
# /bin/sh with coreutils from /usr/bin, as on Debian. So it runs in a NixOS
# VM that provides both. `testTree` is the package's build tree: compiled
# dist/ plus all node_modules, development dependencies included.
{
  pkgs,
  narpush,
}:

let
  testTree = narpush.overrideAttrs (_: {
    pname = "narpush-test-tree";
    doInstallCheck = false;
    postInstall = "";
    installPhase = ''
      runHook preInstall
      mkdir -p $out
      cp -r bin dist node_modules scripts test tsconfig.json $out/
      if [ -d bench ]; then cp -r bench $out/; fi
      # The originals, not the copies importNpmLock rewrote with store paths.
      cp .package.json.orig $out/package.json
      cp .package-lock.json.orig $out/package-lock.json
      runHook postInstall
    '';
  });
in
pkgs.testers.runNixOSTest {
  name = "narpush-test-suite";

  nodes.machine =
    { lib, pkgs, ... }:
    {
      virtualisation = {
        memorySize = 4096;
        cores = 4;
        diskSize = 16384;
        # Fixtures write large files into the store: keep them on disk, not in RAM.
        writableStoreUseTmpfs = false;
      };
      environment.systemPackages = [
        narpush.nodejs
        pkgs.git
      ];
      nix.settings.substituters = lib.mkForce [ ];
      # The fixtures' builders use PATH=/usr/bin:/bin, as on Debian.
      system.activationScripts.usrBinCoreutils = ''
        mkdir -p /usr/bin
        for f in ${pkgs.coreutils}/bin/*; do
          [ "$(basename "$f")" = env ] || ln -sfn "$f" /usr/bin/
        done
      '';
    };

  testScript = ''
    machine.wait_for_unit("multi-user.target")
    machine.succeed("cp -r ${testTree} /root/narpush && chmod -R u+w /root/narpush")
    machine.succeed("cd /root/narpush && node scripts/run-tests.mjs >&2", timeout=3600)
  '';
}
