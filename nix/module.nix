# NixOS module: services.narpush.
#
# Runs `narpush daemon` as a hardened systemd service behind a socket unit,
# and points nix.settings.post-build-hook at a tiny wrapper around
# bin/narpush-hook. Every build nix-daemon performs is handed to the narpush
# daemon in milliseconds; uploading happens outside the build loop.
#
# How the pieces fit (and why):
# - narpush.socket owns the hook socket, so hooks are answered (systemd starts
#   the service on the first connection) even before narpush.service runs.
# - nix-daemon runs the hook as root. The wrapper drops to the service user
#   with setpriv before exec'ing narpush-hook: then a request the hook must
#   spool (daemon down or slow) is a file the service can read and delete.
# - Secrets never reach the Nix store: the signing key is passed by path and
#   read through LoadCredential= (so it may stay root:root 0600), and S3
#   credentials come from `environmentFile`, read by systemd as root.
# - The daemon reads the store through nix-daemon's socket (NIX_REMOTE=daemon)
#   as an ordinary user, so the whole filesystem can be read-only to it.
# - GC roots for queued work: every path the daemon queues (and every path the
#   hook spools) is a symlink <stateDir>/gcroots/<name> -> /nix/store/<name>,
#   registered with nix-daemon's AddIndirectRoot, as `nix-build -o` does. Any
#   user nix-daemon lets in (allowed-users, below) may register one; nix-daemon,
#   as root, creates the /nix/var/nix/gcroots/auto/ entry and the collector, as
#   root, follows it into the state directory, whatever its mode. So the
#   service needs only what it has already: the nix-daemon socket and a
#   writable state directory (StateDirectory= or ReadWritePaths=), the
#   gcroots/ subdirectory included; the hook, run as the service user, writes
#   there too. Never make the state directory a tmpfs or PrivateTmp path: a
#   root lasts only while its symlink exists.
#
# This module must never put a secret in the store, nor change who may use
# Nix (it only adds its own user to allowed-users).
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.narpush;
  narpushLib = import ./lib.nix;
  inherit (lib) mkOption types;

  cacheDir = narpushLib.fileCacheDir cfg.uploadTo;
  stateDirectoryName = narpushLib.stateDirectoryName cfg.stateDir;
  isStorePath = p: lib.hasPrefix "${builtins.storeDir}/" (toString p);

  hookWrapper = pkgs.writeScript "narpush-post-build-hook" (
    narpushLib.hookScript {
      shell = "${pkgs.runtimeShell}";
      hook = "${cfg.package}/bin/narpush-hook";
      setpriv = "${pkgs.util-linux}/bin/setpriv";
      inherit (cfg)
        socketPath
        stateDir
        user
        group
        ;
    }
  );
in
{
  options.services.narpush = {
    enable = lib.mkEnableOption "narpush, which uploads every path Nix builds to a binary cache, outside the build loop";

    package = mkOption {
      type = types.package;
      default = pkgs.narpush;
      defaultText = lib.literalExpression "pkgs.narpush (the flake's packages.\${system}.default)";
      description = "The narpush package. Both `narpush` and `narpush-hook` are taken from it.";
    };

    uploadTo = mkOption {
      type = types.str;
      example = "s3://example-nix-cache?region=eu-west-1";
      description = ''
        The cache to upload to: the `--to` URL of `narpush daemon`.
        `s3://bucket?region=…&endpoint=…&profile=…` for S3 and S3-compatible
        servers such as MinIO, or `file:///absolute/dir` for a directory
        (which the service is then allowed to write). See the README for
        every URL parameter.
      '';
    };

    secretKeyFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/secrets/narpush/cache.example.org-1.secret";
      description = ''
        Path to a Nix binary cache secret key (`narpush generate-key` or
        `nix-store --generate-binary-cache-key`); narinfos are signed with
        it. A string, not a Nix path, so the key is never copied into the
        world-readable store. It may be owned by root with mode 0600: the
        service reads it through systemd's `LoadCredential=`. Without a key
        the uploads are unsigned, and clients must not require signatures.
      '';
    };

    environmentFile = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/var/lib/secrets/narpush/s3.env";
      description = ''
        A file of `NAME=value` lines for the daemon's environment, read by
        systemd as root (so it may be mode 0600): S3 credentials
        (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`),
        or `AWS_SHARED_CREDENTIALS_FILE`/`AWS_CONFIG_FILE` for `profile=`.
        A path string, never copied into the store.
      '';
    };

    compression = mkOption {
      type = types.enum [
        "xz"
        "zstd"
        "none"
      ];
      default = narpushLib.defaults.compression;
      description = "How NARs are compressed. xz is Nix's default; zstd is much faster at a slightly larger size.";
    };

    compressionLevel = mkOption {
      type = types.nullOr types.int;
      default = null;
      example = 9;
      description = "The compression level (xz: 0-9, default 6; zstd: 1-22, default 3). Null keeps the method's default.";
    };

    jobs = mkOption {
      type = types.ints.between 1 256;
      default = narpushLib.defaults.jobs;
      description = "How many store paths are uploaded in parallel.";
    };

    socketPath = mkOption {
      type = types.str;
      default = narpushLib.defaults.socketPath;
      description = "The Unix socket the hook talks to (owned by narpush.socket).";
    };

    stateDir = mkOption {
      type = types.str;
      default = narpushLib.defaults.stateDir;
      description = ''
        The daemon's durable queue and the hook's spool. Under /var/lib it is
        managed with `StateDirectory=`; anywhere else it is created by
        tmpfiles and made writable to the service.
      '';
    };

    user = mkOption {
      type = types.str;
      default = narpushLib.defaults.user;
      description = ''
        The user the daemon (and, through setpriv, the hook) runs as. The
        default `narpush` is created as a system user. It needs no access
        beyond the Nix daemon's socket, the state directory and the network.
      '';
    };

    group = mkOption {
      type = types.str;
      default = narpushLib.defaults.group;
      description = "The group of the daemon; members may write to the hook socket (mode 0660).";
    };

    metricsListen = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "127.0.0.1:9101";
      description = ''
        Serve Prometheus metrics at `http://HOST:PORT/metrics` and a health
        check at `/healthz` (`narpush daemon --metrics-listen`); IPv6 as
        `[::1]:9101`. Null (the default) serves nothing. The endpoint has no
        authentication: bind it to loopback or a private address. The
        firewall is not opened for it.
      '';
    };

    upstreamKeys = mkOption {
      type = types.listOf types.str;
      default = narpushLib.defaults.upstreamKeys;
      example = [
        "cache.nixos.org-1"
        "nix-community.cachix.org-1"
      ];
      description = ''
        Paths the local store holds signed by one of these keys (a key name,
        the part before `:`, or a whole public key) are served by that
        upstream and not uploaded (`narpush daemon --upstream-key`); they
        stay in the References of what is uploaded. With `[ ]`, no key is
        trusted (`--no-upstream-keys`) and only `upstreamCaches` decide; with
        `[ ]` and no `upstreamCaches`, every path of each closure is
        uploaded, as `nix copy` does. Clients need the upstream among their
        substituters.
      '';
    };

    upstreamCaches = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "https://cache.nixos.org" ];
      description = ''
        Binary caches (`https://`, `http://`, `file://`, `s3://`) asked
        whether they serve a path with the same NarHash; such paths are not
        uploaded (`narpush daemon --upstream`). Answers are remembered for a
        while (a day when served, an hour when not). An upstream that fails
        never fails an upload: the path is then uploaded, and the log says
        so once.
      '';
    };

    buildLogs = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Also upload the build log of each derivation whose outputs are
        uploaded (`narpush daemon --build-logs`), to `log/<drv>` in the cache,
        where `nix log` finds it. Logs are read from /nix/var/log/nix
        (decompressed with bzip2); a build without a kept log is skipped.
      '';
    };

    narinfoRefreshAge = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "1d";
      description = ''
        `narpush daemon --narinfo-refresh-age`: renew a narinfo an upload
        relies on (skips because the cache has it) once it is this old, so
        that `narpush gc` keeps it. Null keeps narpush's default (1d).
        `gc.keepSince` (on every machine collecting this cache) must exceed
        it plus the longest upload.
      '';
    };

    gc = {
      enable = lib.mkEnableOption "a timer running `narpush gc` on the cache (uploadTo), safe beside running uploads";

      keepSince = mkOption {
        type = types.str;
        default = "30d";
        example = "14d";
        description = ''
          `--keep-since`: keep every path uploaded or relied on within this
          long, and its closure. Must exceed every uploader's
          narinfoRefreshAge (1d by default) plus its longest upload.
        '';
      };

      dates = mkOption {
        type = types.str;
        default = "daily";
        example = "Sun 03:00";
        description = "When to collect (systemd.time(7) calendar event, as `nix.gc.dates`).";
      };

      grace = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "6h";
        description = "`--grace`: never delete an object younger than this, nor abort an upload begun since. Null: 1h. Must exceed the longest upload.";
      };

      keep = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "/nix/store/…-my-release" ];
        description = "Store paths kept with their closure whatever their age (`--keep`).";
      };

      extraArgs = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "--jobs" "32" ];
        description = "More arguments for `narpush gc`.";
      };
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "--shutdown-grace"
        "30"
        "--retry-max-delay"
        "300"
      ];
      description = "More arguments for `narpush daemon` (see `narpush daemon --help`).";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = lib.hasPrefix "s3://" cfg.uploadTo || lib.hasPrefix "file:///" cfg.uploadTo;
        message = "services.narpush.uploadTo must be an s3://bucket or a file:///absolute/dir URL, not '${cfg.uploadTo}'.";
      }
      {
        assertion = cfg.secretKeyFile == null || (lib.hasPrefix "/" cfg.secretKeyFile && !isStorePath cfg.secretKeyFile);
        message = "services.narpush.secretKeyFile must be an absolute path outside the Nix store (the store is world-readable): write it as a string, not a Nix path.";
      }
      {
        assertion = cfg.environmentFile == null || (lib.hasPrefix "/" cfg.environmentFile && !isStorePath cfg.environmentFile);
        message = "services.narpush.environmentFile must be an absolute path outside the Nix store: it holds credentials.";
      }
      {
        assertion = !(lib.hasInfix "secret-key=" cfg.uploadTo || lib.hasInfix "secret-keys=" cfg.uploadTo);
        message = "services.narpush.uploadTo: give the signing key with services.narpush.secretKeyFile, not secret-key= in the URL (the service could not read it).";
      }
      {
        assertion = cfg.compression != "none" || cfg.compressionLevel == null;
        message = "services.narpush.compressionLevel makes no sense with compression = \"none\".";
      }
      {
        assertion =
          cfg.compressionLevel == null
          || cfg.compression == "none"
          || (
            let
              r = narpushLib.compressionLevels.${cfg.compression};
            in
            cfg.compressionLevel >= r.min && cfg.compressionLevel <= r.max
          );
        message = "services.narpush.compressionLevel is out of range for ${cfg.compression} (xz: 0-9, zstd: 1-22).";
      }
      {
        assertion = cfg.metricsListen == null || narpushLib.isListenAddress cfg.metricsListen;
        message = "services.narpush.metricsListen must be HOST:PORT such as 127.0.0.1:9101 or [::1]:9101, not '${toString cfg.metricsListen}'.";
      }
      {
        assertion = lib.hasPrefix "/" cfg.socketPath && lib.hasPrefix "/" cfg.stateDir;
        message = "services.narpush.socketPath and services.narpush.stateDir must be absolute paths.";
      }
      {
        assertion = cacheDir == null || (cacheDir != "/" && !isStorePath cacheDir && !lib.hasPrefix "/nix/" cacheDir);
        message = "services.narpush.uploadTo: a file:// cache needs a directory of its own, outside /nix.";
      }
    ];

    warnings = lib.optional (cfg.user == "root") "services.narpush.user is root: the daemon then runs with far more privilege than it needs.";

    users.users = lib.mkIf (cfg.user == narpushLib.defaults.user) {
      ${cfg.user} = {
        isSystemUser = true;
        inherit (cfg) group;
        home = cfg.stateDir;
        description = "narpush binary cache uploader";
      };
    };
    users.groups = lib.mkIf (cfg.group == narpushLib.defaults.group) { ${cfg.group} = { }; };

    # The daemon reads the store through nix-daemon as this user.
    nix.settings.extra-allowed-users = [ cfg.user ];
    # Only one post-build-hook can exist: a second definition is a conflict
    # the module system reports.
    nix.settings.post-build-hook = "${hookWrapper}";

    environment.systemPackages = [ cfg.package ];
    # `narpush status` as root or a member of the group finds the daemon without --socket.
    environment.variables.NARPUSH_SOCKET = cfg.socketPath;

    # The state directory, the spool and the GC roots exist from boot, before
    # the service first runs, so that a hook can spool (and root what it
    # spools) even then.
    systemd.tmpfiles.rules = [
      "d ${cfg.stateDir} 0750 ${cfg.user} ${cfg.group} - -"
      "d ${cfg.stateDir}/spool 0700 ${cfg.user} ${cfg.group} - -"
      "d ${cfg.stateDir}/gcroots 0700 ${cfg.user} ${cfg.group} - -"
    ];

    systemd.sockets.narpush = {
      description = "narpush post-build-hook socket";
      wantedBy = [ "sockets.target" ];
      socketConfig = {
        ListenStream = cfg.socketPath;
        SocketUser = cfg.user;
        SocketGroup = cfg.group;
        # Only root, the service user and the group may queue paths.
        SocketMode = "0660";
        DirectoryMode = "0755";
        Service = "narpush.service";
      };
    };

    systemd.services.narpush = {
      description = "narpush: upload built store paths to ${lib.head (lib.splitString "?" cfg.uploadTo)}";
      # Started at boot too, not only on the first hook: it resumes its queue
      # and ingests the spool when it starts.
      wantedBy = [ "multi-user.target" ];
      requires = [
        "narpush.socket"
        "nix-daemon.socket"
      ];
      wants = [ "network-online.target" ];
      after = [
        "narpush.socket"
        "nix-daemon.socket"
        "network-online.target"
      ];
      # NIX_REMOTE: always nix-daemon's socket (the service may not open the
      # store database itself). The NARPUSH_* variables only matter to
      # commands run by hand in the service's environment.
      # bzip2 reads Nix's compressed build logs (buildLogs).
      path = lib.optional cfg.buildLogs pkgs.bzip2;
      environment = {
        NIX_REMOTE = "daemon";
        NARPUSH_SOCKET = cfg.socketPath;
        NARPUSH_STATE_DIR = cfg.stateDir;
      };

      serviceConfig = {
        Type = "exec";
        ExecStart = narpushLib.execStart {
          program = "${cfg.package}/bin/narpush";
          loadsSecretKey = cfg.secretKeyFile != null;
          inherit (cfg)
            uploadTo
            socketPath
            stateDir
            jobs
            compression
            compressionLevel
            metricsListen
            upstreamKeys
            upstreamCaches
            buildLogs
            ;
          extraArgs =
            lib.optionals (cfg.narinfoRefreshAge != null) [
              "--narinfo-refresh-age"
              cfg.narinfoRefreshAge
            ]
            ++ cfg.extraArgs;
        };
        User = cfg.user;
        Group = cfg.group;
        EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
        LoadCredential = lib.optional (cfg.secretKeyFile != null) "${narpushLib.secretKeyCredential}:${cfg.secretKeyFile}";

        # SIGTERM: the daemon lets uploads in flight finish (10 s by default,
        # --shutdown-grace) and exits 0; whatever is left stays queued on disk.
        KillSignal = "SIGTERM";
        TimeoutStopSec = "60s";
        Restart = "on-failure";
        RestartSec = "10s";

        StateDirectory = lib.mkIf (stateDirectoryName != null) stateDirectoryName;
        StateDirectoryMode = "0750";
        ReadWritePaths =
          lib.optional (stateDirectoryName == null) cfg.stateDir ++ lib.optional (cacheDir != null) cacheDir;
        # Files of a file:// cache must be readable by whatever serves it; the
        # daemon creates its journal 0600 itself.
        UMask = "0022";

        # Hardening. The daemon needs: the network (S3, and the metrics
        # endpoint's TCP socket when metricsListen is set), nix-daemon's socket
        # (connecting to a socket works on a read-only mount), reading
        # /nix/store, and writing its state directory (and a file:// cache).
        # Its GC roots need nothing more: the links live in the state
        # directory, and nix-daemon (root) writes /nix/var/nix/gcroots/auto,
        # which the daemon only opens to fsync (that works on this read-only
        # view of the file system).
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ReadOnlyPaths = [ "/nix/store" ];
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        DevicePolicy = "closed";
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        ProtectProc = "invisible";
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
        ];
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        # Node's JIT writes machine code at run time.
        MemoryDenyWriteExecute = false;
        CapabilityBoundingSet = "";
        AmbientCapabilities = "";
        SystemCallArchitectures = "native";
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
        # A filtered call fails with EPERM instead of killing Node (libuv
        # probes io_uring and falls back).
        SystemCallErrorNumber = "EPERM";
        RemoveIPC = true;
      };
    };

    # narpush gc on a timer: the same cache and credentials as the daemon, none
    # of its state. Collections and uploads coordinate through the cache
    # itself (see the README, "Collecting garbage"), so this may run on any
    # one machine, beside any number of uploaders.
    systemd.services.narpush-gc = lib.mkIf cfg.gc.enable {
      description = "narpush gc: collect the garbage of ${lib.head (lib.splitString "?" cfg.uploadTo)}";
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      serviceConfig = {
        Type = "oneshot";
        ExecStart = builtins.concatStringsSep " " (
          map narpushLib.systemdArg ([
            "${cfg.package}/bin/narpush"
            "gc"
            "--cache"
            cfg.uploadTo
            "--keep-since"
            cfg.gc.keepSince
          ]
          ++ lib.optionals (cfg.gc.grace != null) [
            "--grace"
            cfg.gc.grace
          ]
          ++ lib.concatMap (p: [
            "--keep"
            p
          ]) cfg.gc.keep
          ++ cfg.gc.extraArgs)
        );
        User = cfg.user;
        Group = cfg.group;
        EnvironmentFile = lib.optional (cfg.environmentFile != null) cfg.environmentFile;
        ReadWritePaths = lib.optional (cacheDir != null) cacheDir;
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        PrivateDevices = true;
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
        ];
        CapabilityBoundingSet = "";
      };
    };

    systemd.timers.narpush-gc = lib.mkIf cfg.gc.enable {
      description = "narpush gc, ${cfg.gc.dates}";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnCalendar = cfg.gc.dates;
        Persistent = true;
        RandomizedDelaySec = "10min";
      };
    };
  };
}
