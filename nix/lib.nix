# Pure helpers shared by the NixOS module (nix/module.nix) and the tests
# (test/packaging): the daemon's command line, the post-build-hook wrapper
# and the defaults, in one place so the module, contrib/ and the CLI cannot
# drift apart unnoticed.
#
# Builtins only, never nixpkgs: the test suite evaluates this file with a bare
# `nix-instantiate --eval` on machines that have no nixpkgs at all.
rec {
  # The defaults the CLI and bin/narpush-hook use (src/daemon/hook.ts,
  # src/cli/upload-path.ts); test/packaging checks they still agree.
  defaults = {
    socketPath = "/run/narpush/narpush.sock";
    stateDir = "/var/lib/narpush";
    jobs = 4;
    compression = "xz";
    user = "narpush";
    group = "narpush";
    # src/cache/upstream.ts DEFAULT_UPSTREAM_KEYS.
    upstreamKeys = [ "cache.nixos.org-1" ];
  };

  # Compression levels the CLI accepts for each method (src/cache/compression.ts).
  compressionLevels = {
    xz = {
      min = 0;
      max = 9;
    };
    zstd = {
      min = 1;
      max = 22;
    };
  };

  # The name systemd's LoadCredential= gives the secret key; the daemon reads
  # it from $CREDENTIALS_DIRECTORY, which ExecStart spells %d.
  secretKeyCredential = "secret-key";

  # The arguments of `narpush daemon` (without the program), as a list of
  # words. `secretKeyFiles` are the paths the daemon will read.
  daemonArgs =
    {
      uploadTo,
      secretKeyFiles ? [ ],
      socketPath ? defaults.socketPath,
      stateDir ? defaults.stateDir,
      jobs ? defaults.jobs,
      compression ? defaults.compression,
      compressionLevel ? null,
      metricsListen ? null,
      upstreamKeys ? defaults.upstreamKeys,
      upstreamCaches ? [ ],
      buildLogs ? false,
      extraArgs ? [ ],
    }:
    [
      "daemon"
      "--to"
      uploadTo
    ]
    ++ builtins.concatMap (f: [
      "--secret-key-file"
      f
    ]) secretKeyFiles
    ++ [
      "--socket"
      socketPath
      "--state-dir"
      stateDir
      "--jobs"
      (toString jobs)
      "--compression"
      compression
    ]
    ++ (
      if compressionLevel == null then
        [ ]
      else
        [
          "--compression-level"
          (toString compressionLevel)
        ]
    )
    ++ (
      if metricsListen == null then
        [ ]
      else
        [
          "--metrics-listen"
          metricsListen
        ]
    )
    # No keys and no caches: no filtering at all; no keys but caches: the
    # caches alone (--no-upstream-keys, or the CLI would apply its default
    # key list). Keys are otherwise always given: the CLI's default list is
    # replaced by what the module says.
    ++ (
      if upstreamKeys == [ ] && upstreamCaches == [ ] then
        [ "--no-upstream" ]
      else
        (
          if upstreamKeys == [ ] then
            [ "--no-upstream-keys" ]
          else
            builtins.concatMap (k: [
              "--upstream-key"
              k
            ]) upstreamKeys
        )
        ++ builtins.concatMap (u: [
          "--upstream"
          u
        ]) upstreamCaches
    )
    ++ (if buildLogs then [ "--build-logs" ] else [ ])
    ++ extraArgs;

  # One word for a systemd Exec*= line: double-quoted, with `\`, `"`, `%` and
  # `$` escaped, so systemd passes it through unchanged (no specifier or
  # variable expansion). Words that must expand (such as %d) are written raw.
  systemdArg =
    s:
    "\""
    + builtins.replaceStrings
      [
        "\\"
        "\""
        "%"
        "$"
        "\n"
      ]
      [
        "\\\\"
        "\\\""
        "%%"
        "$$"
        "\\n"
      ]
      s
    + "\"";

  # The ExecStart= line of narpush.service. With `loadsSecretKey` the key is
  # read from the credential systemd's LoadCredential= provides (%d is
  # $CREDENTIALS_DIRECTORY), so the key file itself may stay root-only.
  execStart =
    {
      program,
      loadsSecretKey ? false,
      ...
    }@args:
    builtins.concatStringsSep " " (
      map systemdArg (
        [ program ]
        ++ daemonArgs (
          removeAttrs args [
            "program"
            "loadsSecretKey"
          ]
        )
      )
      ++ (if loadsSecretKey then [ "--secret-key-file %d/${secretKeyCredential}" ] else [ ])
    );

  # A package-lock.json (v2/v3, as an attrset) with a `resolved` URL for
  # every registry package that lacks one. npm leaves them out under
  # omit-lockfile-registry-resolved, and nixpkgs' importNpmLock and
  # fetchNpmDeps skip entries without one. For a registry package the URL is
  # a function of name and version
  # (https://registry.npmjs.org/@scope/b/-/b-1.2.3.tgz); `integrity` still
  # pins the bytes. An aliased dependency (npm:real@1.0.0) records its real
  # name in `name`.
  npmRegistry = "https://registry.npmjs.org";
  npmTarballUrl = name: version: "${npmRegistry}/${name}/-/${baseNameOf name}-${version}.tgz";
  npmLockWithResolved =
    lock:
    lock
    // {
      packages = builtins.mapAttrs (
        key: entry:
        let
          # "node_modules/a/node_modules/@scope/b" -> "@scope/b"
          m = builtins.match ".*node_modules/(.+)" key;
        in
        if m == null || entry ? resolved || (entry.link or false) || !(entry ? integrity) || !(entry ? version) then
          entry
        else
          entry // { resolved = npmTarballUrl (entry.name or (builtins.head m)) entry.version; }
      ) lock.packages;
    };

  # One word for a POSIX shell.
  shellArg = s: "'" + builtins.replaceStrings [ "'" ] [ "'\\''" ] s + "'";

  # The directory of a file:// cache URL (without its ?parameters), or null
  # for any other URL. The daemon must be allowed to write there.
  fileCacheDir =
    url:
    let
      m = builtins.match "file://([^?#]*)([?#].*)?" url;
    in
    if m == null then null else builtins.head m;

  # Whether `s` has the form `narpush daemon --metrics-listen` takes: HOST:PORT,
  # an IPv6 address in brackets. The CLI checks the address itself; this
  # catches a wrong form when the system is evaluated, not when it starts.
  isListenAddress =
    s:
    builtins.match "(\\[[0-9A-Fa-f:.]+]|[A-Za-z0-9][A-Za-z0-9.-]*):[0-9]{1,5}" s != null;

  # StateDirectory= wants a path relative to /var/lib; null when `dir` is elsewhere.
  stateDirectoryName =
    dir:
    let
      m = builtins.match "/var/lib/([^/].*[^/]|[^/])/?" dir;
    in
    if m == null then null else builtins.head m;

  # The program nix.conf's post-build-hook names. nix-daemon runs it as root
  # with OUT_PATHS and DRV_PATH set; it tells bin/narpush-hook where the
  # daemon is, and (unless `user` is root) drops to the daemon's user first,
  # so that a request it has to spool is a file the daemon can read and
  # delete. `setpriv` is util-linux's; narpush-hook itself always exits 0.
  hookScript =
    {
      shell,
      hook,
      setpriv,
      socketPath ? defaults.socketPath,
      stateDir ? defaults.stateDir,
      user ? defaults.user,
      group ? defaults.group,
    }:
    ''
      #!${shell}
      # post-build-hook for narpush: hands the build's outputs to the narpush daemon.
      export NARPUSH_SOCKET=${shellArg socketPath}
      export NARPUSH_STATE_DIR=${shellArg stateDir}
    ''
    + (
      if user == "root" then
        ''
          exec ${shellArg hook}
        ''
      else
        ''
          exec ${shellArg setpriv} --reuid=${shellArg user} --regid=${shellArg group} --clear-groups -- ${shellArg hook}
        ''
    );
}
