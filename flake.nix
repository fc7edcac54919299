# narpush as a flake: the package, the NixOS module, a development shell and
# the checks. Only nixpkgs is an input; systems are listed by hand.
#
#   nix build                          the package (bin/narpush, bin/narpush-hook)
#   nix run . -- upload-path --to …    the CLI
#   nix develop                        Node and Nix for `npm ci` and `npm test`
#   nix flake check                    the package, the test suite and the module's VM test
#   nix fmt                            nixfmt-rfc-style over the .nix files
{
  description = "narpush: push Nix build results into a binary cache, outside the build loop";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # Node 22 LTS (the project needs Node >= 20, which has reached its end of life).
      narpushFor = pkgs: pkgs.callPackage ./nix/package.nix { nodejs = pkgs.nodejs_22 or pkgs.nodejs; };
    in
    {
      packages = forAllSystems (pkgs: rec {
        narpush = narpushFor pkgs;
        default = narpush;
      });

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.default}/bin/narpush";
          meta.description = "the narpush command line";
        };
        narpush-hook = {
          type = "app";
          program = "${self.packages.${pkgs.stdenv.hostPlatform.system}.default}/bin/narpush-hook";
          meta.description = "the post-build-hook program";
        };
      });

      overlays.default = final: _prev: { narpush = narpushFor final; };

      nixosModules.default =
        { pkgs, lib, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.narpush.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
      nixosModules.narpush = self.nixosModules.default;

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            (pkgs.nodejs_22 or pkgs.nodejs)
            pkgs.nix
            # node-gyp, for the native addons `npm ci` compiles
            pkgs.python3
            pkgs.minio-client
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);

      checks = forAllSystems (
        pkgs:
        let
          narpush = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        in
        {
          package = narpush;
        }
        // lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
          test-suite = import ./nix/tests/test-suite.nix { inherit pkgs narpush; };
          vm-test = import ./nix/tests/vm-test.nix {
            inherit pkgs narpush;
            narpushModule = ./nix/module.nix;
          };
        }
      );
    };
}
