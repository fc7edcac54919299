# NixOS VM test: the module end to end, the Nix manual's post-build-hook
# scenario with narpush.
#
#   minio    an S3 server with a bucket `cache` that anyone may read
#   builder  services.narpush uploading to it (credentials in an
#            environmentFile, a signing key read through LoadCredential)
#   client   Nix with http://minio:9000/cache as its only substituter and the
#            narpush key trusted (signatures are required, as by default)
#
# The builder builds a derivation; its post-build-hook hands the output to
# the daemon; the test waits for the .narinfo in the bucket, then the client
# substitutes the path. Then the same with the daemon stopped: the hook
# spools the request, and the daemon uploads it once it is started again.
#
# Run it with `nix build .#checks.x86_64-linux.vm-test -L` (it needs KVM and
# nixpkgs, so it was never run on the machine this was written on).
{
  pkgs,
  narpushModule,
  narpush,
}:

let
  # Test-only secrets, in the Nix store on purpose: never do this with real ones.
  # The key pair was made with `nix-store --generate-binary-cache-key narpush-vm-test-1 …`.
  secretKey = "narpush-vm-test-1:wnxPxHrWBtd9AyDB0wkmDBAvLYUj5E0bt7yWf8/3h6Yb5TDLh0RM9pUR8QbolysDv+NUfv6z/kyDQyAi0eQSow==";
  publicKey = "narpush-vm-test-1:G+Uwy4dETPaVEfEG6JcrA7/jVH7+s/5Mg0MgItHkEqM=";
  minioRoot = {
    user = "minio-admin";
    password = "minio-admin-secret";
  };
  # The uploader's own MinIO account, allowed to read and write buckets.
  uploader = {
    accessKey = "narpush-uploader";
    secretKey = "narpush-uploader-secret";
  };

  # A derivation with no inputs, so the builder needs no substituter; `tag`
  # makes each build a fresh store path.
  buildExpr =
    tag:
    pkgs.writeText "narpush-vm-test-${tag}.nix" ''
      derivation {
        name = "narpush-vm-test-${tag}";
        system = builtins.currentSystem;
        builder = "/bin/sh";
        args = [ "-c" "echo 'built by the builder (${tag})' > $out" ];
      }
    '';
in
pkgs.testers.runNixOSTest {
  name = "narpush-module";

  nodes = {
    minio =
      { pkgs, ... }:
      {
        services.minio = {
          enable = true;
          rootCredentialsFile = pkgs.writeText "minio-root-credentials" ''
            MINIO_ROOT_USER=${minioRoot.user}
            MINIO_ROOT_PASSWORD=${minioRoot.password}
          '';
        };
        networking.firewall.allowedTCPPorts = [ 9000 ];
        environment.systemPackages = [ pkgs.minio-client ];
      };

    builder =
      { lib, ... }:
      {
        imports = [ narpushModule ];

        services.narpush = {
          enable = true;
          package = narpush;
          # endpoint= makes narpush use path-style addressing, as MinIO wants.
          uploadTo = "s3://cache?endpoint=http://minio:9000&region=us-east-1";
          secretKeyFile = "/etc/narpush/secret.key";
          environmentFile = "/etc/narpush/s3.env";
          compression = "zstd";
          # Retry soon in the test, so a failure is seen again quickly.
          extraArgs = [
            "--retry-delay"
            "1"
            "--retry-max-delay"
            "5"
          ];
        };

        # Copies owned by root with mode 0400 (not store symlinks): the
        # service must read the key through LoadCredential and the
        # environment file through systemd, as it would in real life.
        environment.etc."narpush/secret.key" = {
          text = secretKey;
          mode = "0400";
        };
        environment.etc."narpush/s3.env" = {
          text = ''
            AWS_ACCESS_KEY_ID=${uploader.accessKey}
            AWS_SECRET_ACCESS_KEY=${uploader.secretKey}
          '';
          mode = "0400";
        };

        # No network in the test: never ask cache.nixos.org.
        nix.settings.substituters = lib.mkForce [ ];
      };

    client =
      { lib, ... }:
      {
        nix.settings = {
          substituters = lib.mkForce [ "http://minio:9000/cache" ];
          trusted-public-keys = lib.mkForce [ publicKey ];
          require-sigs = true;
        };
      };
  };

  testScript = ''
    import json

    def hash_part(path):
        return path.removeprefix("/nix/store/")[:32]

    # The bucket first, so the daemon's first upload finds it.
    minio.start()
    minio.wait_for_unit("minio.service")
    minio.wait_for_open_port(9000)
    minio.succeed(
        "mc alias set local http://localhost:9000 ${minioRoot.user} ${minioRoot.password}",
        "mc mb local/cache",
        # Public reads, as the Nix manual's bucket policy grants: clients need no credentials.
        "mc anonymous set download local/cache",
        "mc admin user add local ${uploader.accessKey} ${uploader.secretKey}",
        "mc admin policy attach local readwrite --user ${uploader.accessKey}",
    )

    builder.start()
    client.start()
    builder.wait_for_unit("narpush.socket")
    builder.wait_for_unit("narpush.service")

    with subtest("a build is uploaded by the daemon and substituted by the client"):
        out = builder.succeed("nix-build --no-out-link ${buildExpr "one"}").strip()
        client.wait_until_succeeds(f"curl -fs http://minio:9000/cache/{hash_part(out)}.narinfo", timeout=120)
        narinfo = client.succeed(f"curl -fs http://minio:9000/cache/{hash_part(out)}.narinfo")
        assert "Sig: narpush-vm-test-1:" in narinfo, narinfo
        assert "Compression: zstd" in narinfo, narinfo
        client.succeed("curl -fs http://minio:9000/cache/nix-cache-info | grep -q 'StoreDir: /nix/store'")
        client.fail(f"test -e {out}")
        client.succeed(f"nix-store --realise {out}")
        client.succeed(f"grep -q 'built by the builder (one)' {out}")

    with subtest("narpush status reports the upload"):
        status = json.loads(builder.succeed("narpush status --socket /run/narpush/narpush.sock --json"))
        print(status)
        assert status["uploaded"] >= 1, status

    with subtest("the daemon and the hook run with the privileges the module gives them"):
        builder.succeed("systemctl show -p User --value narpush.service | grep -qx narpush")
        builder.succeed("stat -c '%U:%G %a' /run/narpush/narpush.sock | grep -qx 'narpush:narpush 660'")
        builder.succeed("grep -q '^post-build-hook = ' /etc/nix/nix.conf")

    with subtest("with the daemon down, the hook spools and the build still succeeds"):
        builder.succeed("systemctl stop narpush.socket narpush.service")
        out2 = builder.succeed("nix-build --no-out-link ${buildExpr "two"}").strip()
        builder.succeed("ls /var/lib/narpush/spool/*.req")
        # Spooled by the hook after dropping to the service user: readable by the daemon.
        builder.succeed("stat -c %U /var/lib/narpush/spool/*.req | grep -qx narpush")
        builder.succeed("systemctl start narpush.socket narpush.service")
        client.wait_until_succeeds(f"curl -fs http://minio:9000/cache/{hash_part(out2)}.narinfo", timeout=120)
        builder.wait_until_succeeds("test -z \"$(ls /var/lib/narpush/spool/ | grep '[.]req$')\"")
        client.succeed(f"nix-store --realise {out2}")
        client.succeed(f"grep -q 'built by the builder (two)' {out2}")
  '';
}
